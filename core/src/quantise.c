/* DAC quantisation: the host's volts -> codes conversion and limit check in one pass. */
#include <math.h>

#include "dnpu_core.h"

#define QUANTISE_MAX_WIDTH 64

long long dnpu_volts_to_codes(size_t n, int w, const double *v, const double *v0, const double *per_code,
                              const double *lo_v, const double *hi_v, const double *lo_code,
                              const double *hi_code, uint16_t *out)
{
    if (w < 1 || w > QUANTISE_MAX_WIDTH)
        return -2;                         /* nothing written */
    for (int c = 0; c < w; c++)
        if (!(lo_code[c] >= 0.0 && hi_code[c] <= 65535.0 && lo_code[c] <= hi_code[c]))
            return -2;
    for (size_t r = 0; r < n; r++) {
        const double *row = v + r * (size_t)w;
        uint16_t *dst = out + r * (size_t)w;
        for (int c = 0; c < w; c++) {
            double x = row[c];
            if (!(x >= lo_v[c] && x <= hi_v[c]))
                return (long long)(r * (size_t)w + (size_t)c);
            x = rint((x - v0[c]) / per_code[c]);
            x = x < lo_code[c] ? lo_code[c] : x;
            x = x > hi_code[c] ? hi_code[c] : x;
            dst[c] = (uint16_t)x;
        }
    }
    return -1;
}
