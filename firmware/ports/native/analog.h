/* The native port's analog side: the DACs (with their seeded gain and offset errors), K affine
 * devices (firmware_sim's null and linear devices: nA = clip(w_k . volts_k + b_k)) side by side,
 * each behind its 7 channels, and the ADC reading all K readouts at once. */
#ifndef DNPU_NATIVE_ANALOG_H
#define DNPU_NATIVE_ANALOG_H

#include <stdbool.h>
#include <stdint.h>

#include "board.h"

#define ANALOG_CHANNELS DNPU_MAX_CHANNELS

typedef struct analog {
    unsigned n_devices;
    /* DAC */
    double dac_v0, dac_lsb;
    double gain[ANALOG_CHANNELS], offset[ANALOG_CHANNELS];
    uint16_t staged[ANALOG_CHANNELS];
    double volts[ANALOG_CHANNELS];           /* what the pins produce now */
    /* devices: device k's weights are w[7k .. 7k+6] */
    double w[ANALOG_CHANNELS], bias[DNPU_MAX_DEVICES], clip_lo, clip_hi;
    long long fail_after_rows;               /* < 0: never */
    long long rows;
    bool fresh_row;
    /* ADC */
    double adc_lsb;
    int32_t adc_half;
} analog;

/* An ideal affine device (unit DAC gains, no offsets, w = 0, the TIA's clip range), never failing. */
void analog_defaults(analog *a);
/* The DAC and ADC scales and the device count for this board configuration (call after the
 * configuration is final). */
void analog_configure(analog *a, const dnpu_config *cfg);
/* The volts DAC codes produce on channels [first, first + n) (gain and offset errors included). */
void analog_pin_volts(const analog *a, const uint16_t *codes, unsigned first, unsigned n, double *out);
/* The ADC code of a current (rounded, clipped to the ADC's range). */
int32_t analog_adc_code(const analog *a, double na);

void analog_stage(void *ctx, unsigned channel, uint16_t code);
void analog_latch(void *ctx);
void analog_force_zero(void *ctx);
bool analog_adc_read(void *ctx, int32_t *codes);

#endif
