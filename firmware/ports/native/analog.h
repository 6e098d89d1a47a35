/* The native port's analog side: the DACs (with their seeded gain and offset errors), an affine
 * device (firmware_sim's null and linear devices: nA = clip(w . volts + b)) and the ADC. */
#ifndef DNPU_NATIVE_ANALOG_H
#define DNPU_NATIVE_ANALOG_H

#include <stdbool.h>
#include <stdint.h>

#include "board.h"

#define ANALOG_CHANNELS DNPU_CHANNELS

typedef struct analog {
    /* DAC */
    double dac_v0, dac_lsb;
    double gain[ANALOG_CHANNELS], offset[ANALOG_CHANNELS];
    uint16_t staged[ANALOG_CHANNELS];
    double volts[ANALOG_CHANNELS];           /* what the pins produce now */
    /* device */
    double w[ANALOG_CHANNELS], bias, clip_lo, clip_hi;
    long long fail_after_rows;               /* < 0: never */
    long long rows;
    bool fresh_row;
    /* ADC */
    double adc_lsb;
    int32_t adc_half;
} analog;

/* An ideal affine device (unit DAC gains, no offsets, w = 0, the TIA's clip range), never failing. */
void analog_defaults(analog *a);
/* The DAC and ADC scales for this board configuration (call after the configuration is final). */
void analog_configure(analog *a, const dnpu_config *cfg);

void analog_stage(void *ctx, unsigned channel, uint16_t code);
void analog_latch(void *ctx);
void analog_force_zero(void *ctx);
bool analog_adc_read(void *ctx, int32_t *code);

#endif
