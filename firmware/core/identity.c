/* The same keys as firmware_sim's identity, in sorted order, compact (json.dumps(sort_keys=True)). */
#include "identity.h"

#include <math.h>

#include "board.h"
#include "text.h"

static void key(dnpu_text *t, const char *name, int first)
{
    dnpu_text_addf(t, "%s\"%s\":", first ? "" : ",", name);
}

static void pair(dnpu_text *t, double lo, double hi)
{
    dnpu_text_add(t, "[");
    dnpu_text_double(t, lo);
    dnpu_text_add(t, ",");
    dnpu_text_double(t, hi);
    dnpu_text_add(t, "]");
}

static void add_dac(dnpu_text *t, const dnpu_board *b)
{
    dnpu_text_add(t, "[");
    for (unsigned c = 0; c < b->channels; c++) {
        dnpu_text_add(t, c ? ",{\"volts_at_code0\":" : "{\"volts_at_code0\":");
        dnpu_text_double(t, b->cfg.dac_span_v[0]);
        dnpu_text_add(t, ",\"volts_per_code\":");
        dnpu_text_double(t, b->dac_lsb_v);
        dnpu_text_add(t, "}");
    }
    dnpu_text_add(t, "]");
}

static void add_commands(dnpu_text *t)
{
    dnpu_text_add(t, "[");
    int n = 0;
    for (int i = 0; i < DNPU_N_MESSAGES; i++)
        if (DNPU_MESSAGES[i].kind == DNPU_KIND_CMD)
            dnpu_text_addf(t, "%s\"%s\"", n++ ? "," : "", DNPU_MESSAGES[i].name);
    dnpu_text_add(t, "]");
}

static void add_counters(dnpu_text *t)
{
    dnpu_text_add(t, "[");
    for (int i = 0; i < DNPU_N_COUNTERS; i++)
        dnpu_text_addf(t, "%s\"%s\"", i ? "," : "", DNPU_COUNTER_NAMES[i]);
    dnpu_text_add(t, "]");
}

/* Channels [first, first + n) of the limits, as [[lo, hi], ...]. */
static void add_limits(dnpu_text *t, const dnpu_config *c, unsigned first, unsigned n)
{
    dnpu_text_add(t, "[");
    for (unsigned ch = first; ch < first + n; ch++) {
        dnpu_text_add(t, ch > first ? "," : "");
        pair(t, c->limits_v[ch][0], c->limits_v[ch][1]);
    }
    dnpu_text_add(t, "]");
}

/* A board of several devices names each: its channels, limits and description (keys sorted). */
static void add_devices(dnpu_text *t, const dnpu_board *b)
{
    dnpu_text_add(t, "[");
    for (unsigned d = 0; d < b->n_devices; d++) {
        unsigned first = d * DNPU_CHANNELS;
        dnpu_text_addf(t, "%s{\"channels\":[%u,%u],\"device\":", d ? "," : "", first, first + DNPU_CHANNELS);
        dnpu_text_add(t, b->cfg.device_json[d]);
        dnpu_text_addf(t, ",\"index\":%u,\"limits_v\":", d);
        add_limits(t, &b->cfg, first, DNPU_CHANNELS);
        dnpu_text_add(t, "}");
    }
    dnpu_text_add(t, "]");
}

/* The schema text, one string per line: a host with another table sees which messages differ. */
static void add_schema(dnpu_text *t)
{
    static const char text[] = DNPU_SCHEMA_TEXT;
    dnpu_text_add(t, "[\"");
    for (const char *p = text; *p; p++) {
        if (*p == '\n')
            dnpu_text_add(t, "\",\"");
        else if (*p == '"' || *p == '\\')
            dnpu_text_addf(t, "\\%c", *p);
        else
            dnpu_text_addf(t, "%c", *p);
    }
    dnpu_text_add(t, "\"]");
}

size_t dnpu_identity_build(const dnpu_board *b, char *buf, size_t cap)
{
    const dnpu_config *c = &b->cfg;
    dnpu_text t;
    dnpu_text_init(&t, buf, cap);
    dnpu_text_add(&t, "{");
    key(&t, "adc", 1);
    dnpu_text_add(&t, "{\"full_scale_na\":");
    pair(&t, c->adc_span_na[0], c->adc_span_na[1]);
    dnpu_text_add(&t, ",\"na_at_code0\":0.0,\"na_per_code\":");
    dnpu_text_double(&t, b->adc_lsb_na);
    dnpu_text_add(&t, "}");
    key(&t, "adc_bits", 0);
    dnpu_text_addf(&t, "%u", c->adc_bits);
    key(&t, "channels", 0);
    dnpu_text_addf(&t, "%u", b->channels);
    key(&t, "commands", 0);
    add_commands(&t);
    key(&t, "counters", 0);
    add_counters(&t);
    key(&t, "dac", 0);
    add_dac(&t, b);
    key(&t, "dac_bits", 0);
    dnpu_text_addf(&t, "%u", c->dac_bits);
    key(&t, "device", 0);
    dnpu_text_add(&t, c->device_json[0]);
    if (b->n_devices > 1) {               /* a one-device board declares no devices (as before 1.2) */
        key(&t, "devices", 0);
        add_devices(&t, b);
    }
    key(&t, "fifo_blocks", 0);
    dnpu_text_addf(&t, "%u", (unsigned)c->fifo_blocks);
    key(&t, "firmware", 0);
    dnpu_text_addf(&t, "\"%s\"", c->firmware);
    key(&t, "limit_codes", 0);
    dnpu_text_add(&t, "[");
    for (unsigned ch = 0; ch < b->channels; ch++)
        dnpu_text_addf(&t, "%s[%d,%d]", ch ? "," : "", (int)b->limit_codes[ch][0], (int)b->limit_codes[ch][1]);
    dnpu_text_add(&t, "]");
    key(&t, "limits_v", 0);
    add_limits(&t, c, 0, b->channels);
    key(&t, "link_bytes_per_s", 0);
    dnpu_text_addf(&t, "%lu", (unsigned long)DNPU_LINK_BYTES_PER_S);
    key(&t, "max_block_samples", 0);
    dnpu_text_addf(&t, "%u", (unsigned)b->max_block_samples);
    key(&t, "max_oversample", 0);
    dnpu_text_addf(&t, "%u", DNPU_MAX_OVERSAMPLE);
    key(&t, "max_payload", 0);
    dnpu_text_addf(&t, "%u", (unsigned)DNPU_BOARD_MAX_PAYLOAD);
    key(&t, "max_slew_v_per_s", 0);
    dnpu_text_double(&t, c->max_slew_v_per_s);
    key(&t, "max_sweep_samples", 0);
    dnpu_text_addf(&t, "%u", (unsigned)b->max_sweep_samples);
    key(&t, "model", 0);
    dnpu_text_addf(&t, "\"%s\"", c->model);
    if (b->n_devices > 1) {
        key(&t, "n_devices", 0);
        dnpu_text_addf(&t, "%u", b->n_devices);
    }
    key(&t, "protocol", 0);
    dnpu_text_addf(&t, "{\"major\":%d,\"minor\":%d,\"schema_hash\":%lu}", DNPU_PROTOCOL_MAJOR,
                   DNPU_PROTOCOL_MINOR, (unsigned long)DNPU_SCHEMA_HASH);
    key(&t, "realtime", 0);
    dnpu_text_add(&t, c->realtime ? "true" : "false");
    key(&t, "sample_period_ns", 0);
    dnpu_text_addf(&t, "{\"default\":%lld,\"max\":%u,\"min\":%u}", (long long)nearbyint(c->sample_period_s * 1e9),
                   DNPU_MAX_PERIOD_NS, DNPU_MIN_PERIOD_NS);
    key(&t, "schema", 0);
    add_schema(&t);
    key(&t, "serial", 0);
    dnpu_text_addf(&t, "\"%s\"", c->serial);
    key(&t, "watchdog_ms", 0);
    dnpu_text_addf(&t, "%lld", (long long)nearbyint(c->watchdog_s * 1000.0));
    key(&t, "zero_code", 0);
    dnpu_text_addf(&t, "%u", (unsigned)b->zero_code);
    dnpu_text_add(&t, "}");
    return t.overflow ? 0 : t.len;
}
