#include "analog.h"

#include <string.h>

#include <math.h>

void analog_stage(void *ctx, unsigned channel, uint16_t code)
{
    analog *a = ctx;
    if (channel < ANALOG_CHANNELS)
        a->staged[channel] = code;
}

void analog_pin_volts(const analog *a, const uint16_t *codes, unsigned first, unsigned n, double *out)
{
    for (unsigned i = 0; i < n; i++) {
        unsigned c = first + i;
        double nominal = a->dac_v0 + (double)codes[i] * a->dac_lsb;
        out[i] = nominal * a->gain[c] + a->offset[c];
    }
}

void analog_latch(void *ctx)
{
    analog *a = ctx;
    analog_pin_volts(a, a->staged, 0, a->n_devices * DNPU_CHANNELS, a->volts);
    a->fresh_row = true;
}

void analog_force_zero(void *ctx)
{
    analog *a = ctx;
    for (unsigned c = 0; c < ANALOG_CHANNELS; c++)
        a->volts[c] = 0.0;
}

int32_t analog_adc_code(const analog *a, double na)
{
    double q = rint(na / a->adc_lsb);
    double lo = -(double)a->adc_half, hi = (double)a->adc_half - 1.0;
    return (int32_t)(q < lo ? lo : (q > hi ? hi : q));
}

bool analog_adc_read(void *ctx, int32_t *codes)
{
    analog *a = ctx;
    if (a->fresh_row) {                      /* a new row reached the devices */
        a->fresh_row = false;
        a->rows++;
        if (a->fail_after_rows >= 0 && a->rows > a->fail_after_rows)
            return false;                    /* injected fault */
    }
    for (unsigned d = 0; d < a->n_devices; d++) {
        const double *v = a->volts + d * DNPU_CHANNELS, *w = a->w + d * DNPU_CHANNELS;
        double na = 0.0;
        for (int c = 0; c < DNPU_CHANNELS; c++)
            na += v[c] * w[c];
        na += a->bias[d];
        na = na < a->clip_lo ? a->clip_lo : (na > a->clip_hi ? a->clip_hi : na);
        codes[d] = analog_adc_code(a, na);
    }
    return true;
}

void analog_defaults(analog *a)
{
    memset(a, 0, sizeof *a);
    a->n_devices = 1;
    for (unsigned i = 0; i < ANALOG_CHANNELS; i++)
        a->gain[i] = 1.0;
    a->clip_lo = -300.0;
    a->clip_hi = 100.0;
    a->fail_after_rows = -1;
}

void analog_configure(analog *a, const dnpu_config *cfg)
{
    a->n_devices = cfg->n_devices;
    a->dac_v0 = cfg->dac_span_v[0];
    a->dac_lsb = (cfg->dac_span_v[1] - cfg->dac_span_v[0]) / (double)(1u << cfg->dac_bits);
    a->adc_lsb = (cfg->adc_span_na[1] - cfg->adc_span_na[0]) / (double)(1u << cfg->adc_bits);
    a->adc_half = (int32_t)1 << (cfg->adc_bits - 1);
}
