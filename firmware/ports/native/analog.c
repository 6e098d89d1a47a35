#include "analog.h"

#include <math.h>

void analog_stage(void *ctx, unsigned channel, uint16_t code)
{
    analog *a = ctx;
    if (channel < ANALOG_CHANNELS)
        a->staged[channel] = code;
}

void analog_latch(void *ctx)
{
    analog *a = ctx;
    for (int c = 0; c < ANALOG_CHANNELS; c++) {
        double nominal = a->dac_v0 + (double)a->staged[c] * a->dac_lsb;
        a->volts[c] = nominal * a->gain[c] + a->offset[c];
    }
    a->fresh_row = true;
}

void analog_force_zero(void *ctx)
{
    analog *a = ctx;
    for (int c = 0; c < ANALOG_CHANNELS; c++)
        a->volts[c] = 0.0;
}

bool analog_adc_read(void *ctx, int32_t *code)
{
    analog *a = ctx;
    if (a->fresh_row) {                      /* a new row reached the device */
        a->fresh_row = false;
        a->rows++;
        if (a->fail_after_rows >= 0 && a->rows > a->fail_after_rows)
            return false;                    /* injected fault */
    }
    double na = 0.0;
    for (int c = 0; c < ANALOG_CHANNELS; c++)
        na += a->volts[c] * a->w[c];
    na += a->bias;
    na = na < a->clip_lo ? a->clip_lo : (na > a->clip_hi ? a->clip_hi : na);
    double q = rint(na / a->adc_lsb);
    double lo = -(double)a->adc_half, hi = (double)a->adc_half - 1.0;
    *code = (int32_t)(q < lo ? lo : (q > hi ? hi : q));
    return true;
}
