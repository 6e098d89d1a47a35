#include "port_config.h"

#include <stdio.h>

static void analog_cal_defaults(analog_cal *c)
{
    for (unsigned ch = 0; ch < ANALOG_CHANNELS; ch++) {
        c->dac_gain_q14[ch] = 1 << 14;
        c->dac_offset_q14[ch] = 0;
    }
    c->adc_offset = 0;
    c->settle_ns = PORT_SETTLE_NS;
}

void port_configure(dnpu_config *c, analog_cal *ac, const cal_block *cal, char *serial)
{
    dnpu_config_defaults(c);
    analog_cal_defaults(ac);
    double tia_ohm = CAL_TIA_OHM_NOMINAL, adc_offset_na = 0.0;
    if (cal != NULL) {
        double lsb = 2.0 * PORT_DAC_SPAN_V / 65536.0;
        for (unsigned ch = 0; ch < ANALOG_CHANNELS; ch++) {
            /* out = g (raw - mid) lsb + o  ->  raw - mid = ((code - mid) lsb - o) / (g lsb) */
            ac->dac_gain_q14[ch] = (int32_t)(16384.0 / cal->dac_gain[ch] + 0.5);
            ac->dac_offset_q14[ch] = (int32_t)(-cal->dac_offset_v[ch] / (cal->dac_gain[ch] * lsb) * 16384.0);
        }
        tia_ohm = cal->tia_ohm;
        adc_offset_na = cal->adc_offset_na;
        if (cal->settle_ns > 0)
            ac->settle_ns = cal->settle_ns;
        if (cal->serial[0] != 0)
            snprintf(serial, PORT_SERIAL_CAP, "%s", cal->serial);
    }
    double fs_na = CAL_ADC_FULL_SCALE_V / tia_ohm * 1e9;
    c->dac_span_v[0] = -PORT_DAC_SPAN_V;
    c->dac_span_v[1] = PORT_DAC_SPAN_V;
    c->adc_span_na[0] = -fs_na;
    c->adc_span_na[1] = fs_na;
    ac->adc_offset = (int32_t)(adc_offset_na / (2.0 * fs_na / 65536.0));
    c->fifo_blocks = DNPU_MAX_FIFO_BLOCKS;
    c->sample_period_s = (double)ac->settle_ns * 1e-9 + 10e-6;   /* settle + DAC writes + readout */
    c->firmware = PORT_FIRMWARE;
    c->model = PORT_MODEL;
    c->serial = serial;
}

void port_describe(char *json, const analog_cal *ac, const analog_info *info, const cal_block *cal,
                   bool hse, bool iwdg_reset)
{
    snprintf(json, PORT_DEVICE_JSON_CAP,
             "{\"model\":\"external\",\"front_end\":{\"dac\":\"DAC81408\",\"dac_deviceid\":%u,"
             "\"adc\":\"ADS8681\",\"adc_range_reg\":%u,\"tia_ohm\":%.6g,\"settle_ns\":%lu,"
             "\"calibrated\":%s,\"clock\":\"%s\",\"last_reset\":\"%s\"}}",
             (unsigned)info->dac_deviceid, (unsigned)info->adc_range_reg,
             cal != NULL ? (double)cal->tia_ohm : (double)CAL_TIA_OHM_NOMINAL, (unsigned long)ac->settle_ns,
             cal != NULL ? "true" : "false", hse ? "hse" : "hsi", iwdg_reset ? "watchdog" : "power-on");
}
