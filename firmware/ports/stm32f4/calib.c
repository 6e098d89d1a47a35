#include "calib.h"

#include <math.h>
#include <string.h>

#include "crc.h"

static bool sane(const cal_block *c)
{
    for (int ch = 0; ch < 7; ch++)
        if (!(c->dac_gain[ch] > 0.9f && c->dac_gain[ch] < 1.1f) || !(fabsf(c->dac_offset_v[ch]) < 0.05f))
            return false;                   /* more than 10 % or 50 mV off: a wiring fault, not drift */
    return c->tia_ohm > 1e5f && c->tia_ohm < 1e9f && fabsf(c->adc_offset_na) < 50.0f
           && c->settle_ns <= 700000u && memchr(c->serial, 0, sizeof c->serial) != NULL;
}

bool calib_valid(const cal_block *c)
{
    if (c->magic != CAL_MAGIC || c->version != CAL_VERSION || c->size != sizeof(cal_block))
        return false;
    if (dnpu_crc32(0, (const uint8_t *)c, offsetof(cal_block, crc32)) != c->crc32)
        return false;
    return sane(c);
}

const cal_block *calib_find(void)
{
    const cal_block *c = (const cal_block *)(uintptr_t)CAL_ADDR;
    return calib_valid(c) ? c : NULL;
}
