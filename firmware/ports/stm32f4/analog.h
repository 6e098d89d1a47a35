/* The analog front end: a DAC81408 (8 x 16-bit, +-2.5 V range, 7 channels used) on SPI1, an
 * ADS8681 (16-bit SAR, +-2.56 V range) behind the transimpedance amplifier on SPI2, and TIM3 in
 * one-pulse mode timing each sample in hardware:
 *
 *   t = 0             TIM3 starts (dac_latch; the 7 codes were written to the DAC's buffers)
 *   1 tick (12 ns)    CH1 (PC6) drives LDAC low: all 7 outputs update at once
 *   settle            CH2 (PC7) drives CONVST/CS high: the ADC samples and converts
 *   settle + 1 us     the update event ends the pulse: LDAC high, CONVST/CS low (frame open),
 *                     and the update interrupt (the sample interrupt) clocks out the 16-bit result
 *
 * Conversions for oversampling run the same cycle without the LDAC edge (CH2 at 1 tick). */
#ifndef DNPU_STM32F4_ANALOG_H
#define DNPU_STM32F4_ANALOG_H

#include <stdbool.h>
#include <stdint.h>

#define ANALOG_CHANNELS 7u
#define ANALOG_TIM_HZ 84000000u            /* TIM3: APB1 timer clock, prescaler 1 */
#define ANALOG_CONV_TICKS 84u              /* 1 us: ADS8681 conversion (665 ns max) + margin */
#define ANALOG_SPI2_HZ 21000000u           /* ADS8681 SCLK: PCLK1 / 2 */
#define ANALOG_SETTLE_MAX_NS 700000u       /* TIM3 is 16 bits: 65535 ticks = 780 us */

typedef struct analog_cal {
    int32_t dac_gain_q14[ANALOG_CHANNELS];    /* raw code step per ideal code step, 1.0 = 16384 */
    int32_t dac_offset_q14[ANALOG_CHANNELS];  /* added to the raw code, LSB x 16384 */
    int32_t adc_offset;                       /* ADC codes at 0 nA (subtracted) */
    uint32_t settle_ns;                       /* LDAC edge to the ADC's sampling instant */
} analog_cal;

typedef struct analog_info {               /* what the start-up read back (for the identity) */
    uint16_t dac_deviceid, adc_range_reg;
} analog_info;

/* Pins, SPI, the DAC's and ADC's registers, TIM3; leaves the DAC in hardware clear (0 V). */
void analog_init(const analog_cal *c, analog_info *info);
void analog_stage(unsigned channel, uint16_t code);
void analog_latch(void);
void analog_force_zero(void);
bool analog_adc_read(int32_t *code);

#endif
