/* The board's state machine. Every rule here mirrors firmware_sim/board.py (docs/protocol.md). */
#include "board.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "crc.h"
#include "identity.h"
#include "text.h"
#include "wire.h"

#define DNPU_COUNTER_NAME(name) #name,
const char *const DNPU_COUNTER_NAMES[DNPU_N_COUNTERS] = {DNPU_COUNTERS(DNPU_COUNTER_NAME)};

#define CNT(b, name) ((b)->counters[DNPU_CNT_##name]++)

/* ---- time ------------------------------------------------------------------------------- */

static uint64_t ticks_since_boot(const dnpu_board *b)
{
    return b->hal.clock_ticks(b->hal.ctx) - b->boot_ticks;
}

static double now(const dnpu_board *b)
{
    return (double)ticks_since_boot(b) / (double)b->hal.ticks_per_s;
}

/* Clock ticks in `ns` nanoseconds (exact for any counter rate, no overflow below 2^64 ns). */
static uint64_t ns_to_ticks(const dnpu_board *b, uint64_t ns)
{
    uint64_t tps = b->hal.ticks_per_s;
    return (ns / 1000000000u) * tps + (ns % 1000000000u) * tps / 1000000000u;
}

double dnpu_board_time(const dnpu_board *b)
{
    return now(b);
}

/* ---- DAC codes and the slew limiter ------------------------------------------------------ */

static double code_to_volts(const dnpu_board *b, int32_t code)
{
    return b->cfg.dac_span_v[0] + (double)code * b->dac_lsb_v;
}

static uint16_t volts_to_code(const dnpu_board *b, double v)
{
    return (uint16_t)(int64_t)rint((v - b->cfg.dac_span_v[0]) / b->dac_lsb_v);
}

static double clip(double x, double lo, double hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

/* The first n channels of the ramp at time t. */
static void ramp_at(const dnpu_ramp *r, unsigned n, double t, double out[DNPU_MAX_CHANNELS])
{
    double dt = t - r->t0;
    double step = r->rate * (dt > 0.0 ? dt : 0.0);
    for (unsigned c = 0; c < n; c++)
        out[c] = r->start[c] + clip(r->target[c] - r->start[c], -step, step);
}

static bool ramp_done(const dnpu_board *b, double t)
{
    double v[DNPU_MAX_CHANNELS];
    ramp_at(&b->ramp, b->channels, t, v);
    for (unsigned c = 0; c < b->channels; c++)
        if (v[c] != b->ramp.target[c])
            return false;
    return true;
}

void dnpu_board_outputs(const dnpu_board *b, double t, double out[DNPU_MAX_CHANNELS])
{
    ramp_at(&b->ramp, b->channels, t, out);
}

const uint16_t *dnpu_board_row(const dnpu_board *b, uint32_t r)
{
    return b->codes + (size_t)r * b->channels;
}

/* Start slewing from where the outputs are now to `target`; returns the ramp's duration (s). */
static double ramp_to(dnpu_board *b, const double target[DNPU_MAX_CHANNELS], double rate, double t)
{
    double start[DNPU_MAX_CHANNELS], worst = 0.0;
    ramp_at(&b->ramp, b->channels, t, start);
    for (unsigned c = 0; c < b->channels; c++) {
        double d = fabs(target[c] - start[c]);
        worst = d > worst ? d : worst;
        b->ramp.start[c] = start[c];
        b->ramp.target[c] = target[c];
    }
    b->ramp.t0 = t;
    b->ramp.rate = rate;
    return worst / rate;
}

static void ramp_hold(dnpu_board *b, const uint16_t *codes, double t)
{
    for (unsigned c = 0; c < b->channels; c++)
        b->ramp.start[c] = b->ramp.target[c] = code_to_volts(b, codes[c]);
    b->ramp.t0 = t;
    b->ramp.rate = b->cfg.max_slew_v_per_s;
}

static void dac_write_row(dnpu_board *b, const uint16_t *codes)
{
    for (unsigned c = 0; c < b->channels; c++)
        b->hal.dac_stage(b->hal.ctx, c, codes[c]);
    b->hal.dac_latch(b->hal.ctx);
}

/* The slew limiter's output stage: latch the ramp's present position when it changed. */
static void apply_outputs(dnpu_board *b, double t)
{
    if (b->sweep.running)
        return;                               /* the sweep owns the DACs */
    double v[DNPU_MAX_CHANNELS];
    uint16_t codes[DNPU_MAX_CHANNELS];
    bool changed = false;
    ramp_at(&b->ramp, b->channels, t, v);
    for (unsigned c = 0; c < b->channels; c++) {
        codes[c] = volts_to_code(b, v[c]);
        changed |= codes[c] != b->dac_now[c];
    }
    if (changed) {
        memcpy(b->dac_now, codes, b->channels * sizeof codes[0]);
        dac_write_row(b, codes);
    }
}

/* ---- error queue ------------------------------------------------------------------------- */

static void push_error(dnpu_board *b, uint16_t code, uint16_t seq, int32_t arg)
{
    if (b->err_count == DNPU_ERROR_QUEUE) {
        b->err_head = (b->err_head + 1) % DNPU_ERROR_QUEUE;
        b->err_count--;
        CNT(b, errors_dropped);
    }
    dnpu_error_entry *e = &b->errors[(b->err_head + b->err_count) % DNPU_ERROR_QUEUE];
    e->code = code;
    e->seq = seq;
    e->arg = arg;
    b->err_count++;
}

static dnpu_error_entry pop_error(dnpu_board *b)
{
    dnpu_error_entry e = b->errors[b->err_head];
    b->err_head = (b->err_head + 1) % DNPU_ERROR_QUEUE;
    b->err_count--;
    return e;
}

/* ---- transmit queue ---------------------------------------------------------------------- */

static size_t tx_queued(const dnpu_board *b)
{
    return b->tx_len - b->tx_head;
}

/* Room for one more frame of any size (checked before a frame is taken off the receiver). */
static bool tx_has_frame_room(const dnpu_board *b)
{
    return tx_queued(b) + DNPU_FRAME_MAX <= DNPU_TX_CAP;
}

/* The payload area of the next frame; the caller has checked tx_has_frame_room(). */
static uint8_t *frame_payload(dnpu_board *b)
{
    if (b->tx_len > DNPU_TX_CAP - DNPU_FRAME_MAX) {
        memmove(b->tx, b->tx + b->tx_head, tx_queued(b));
        b->tx_len -= b->tx_head;
        b->tx_head = 0;
    }
    if (b->tx_len > DNPU_TX_CAP - DNPU_FRAME_MAX)
        b->tx_len = b->tx_head = 0;       /* unreachable (callers check room); never write past */
    return b->tx + b->tx_len + DNPU_HEADER_SIZE;
}

static void frame_send(dnpu_board *b, uint8_t msg, uint16_t seq, size_t len, uint8_t flags)
{
    size_t n = dnpu_frame_seal(b->tx + b->tx_len, msg, flags, seq, len);
    b->reply_at = b->tx_len;
    b->reply_len = n;
    b->tx_len += n;
    CNT(b, tx_frames);
}

static void tx_flush(dnpu_board *b)
{
    while (tx_queued(b) > 0) {
        size_t n = b->hal.link_write(b->hal.ctx, b->tx + b->tx_head, tx_queued(b));
        if (n == 0)
            break;
        b->tx_head += n < tx_queued(b) ? n : tx_queued(b);
    }
    if (tx_queued(b) == 0)
        b->tx_head = b->tx_len = 0;
}

static void send_error(dnpu_board *b, uint16_t seq, uint16_t code, int32_t arg, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void send_error(dnpu_board *b, uint16_t seq, uint16_t code, int32_t arg, const char *fmt, ...)
{
    push_error(b, code, seq, arg);
    uint8_t *p = frame_payload(b);
    char text[DNPU_ERROR_TEXT_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : ((size_t)n < DNPU_ERROR_TEXT_MAX ? (size_t)n : DNPU_ERROR_TEXT_MAX);
    dnpu_put16(p + DNPU_ERROR_CODE_OFF, code);
    dnpu_put32(p + DNPU_ERROR_ARG_OFF, (uint32_t)arg);
    memcpy(p + DNPU_ERROR_HEAD_SIZE, text, len);
    frame_send(b, DNPU_MSG_ERROR, seq, DNPU_ERROR_HEAD_SIZE + len, 0);
}

static void send_ack(dnpu_board *b, uint16_t seq)
{
    (void)frame_payload(b);
    frame_send(b, DNPU_MSG_ACK, seq, 0, 0);
}

/* ---- reply cache ------------------------------------------------------------------------- */

static dnpu_cached_reply *cache_find(dnpu_board *b, uint16_t seq)
{
    for (unsigned i = 0; i < DNPU_REPLY_CACHE; i++)
        if (b->cache[i].used && b->cache[i].seq == seq)
            return &b->cache[i];
    return NULL;
}

static void cache_clear(dnpu_board *b)
{
    for (unsigned i = 0; i < DNPU_REPLY_CACHE; i++)
        b->cache[i].used = false;
}

/* Remember the reply just written for `seq`: replaces that seq's entry, else the oldest. */
static void cache_store(dnpu_board *b, uint16_t seq, uint32_t key)
{
    dnpu_cached_reply *slot = cache_find(b, seq);
    for (unsigned i = 0; slot == NULL && i < DNPU_REPLY_CACHE; i++)
        if (!b->cache[i].used)
            slot = &b->cache[i];
    if (slot == NULL) {
        slot = &b->cache[0];
        for (unsigned i = 1; i < DNPU_REPLY_CACHE; i++)
            if (b->cache[i].age < slot->age)
                slot = &b->cache[i];
    }
    if (b->reply_len > sizeof slot->frame)
        return;
    slot->used = true;
    slot->seq = seq;
    slot->key = key;
    slot->age = ++b->cache_age;
    slot->len = (uint16_t)b->reply_len;
    memcpy(slot->frame, b->tx + b->reply_at, b->reply_len);
}

static void cache_replay(dnpu_board *b, const dnpu_cached_reply *hit)
{
    (void)frame_payload(b);
    memcpy(b->tx + b->tx_len, hit->frame, hit->len);
    b->tx_len += hit->len;
}

/* ---- safety ------------------------------------------------------------------------------ */

static void sweep_hold_last_row(dnpu_board *b, double t)
{
    dnpu_sweep *s = &b->sweep;
    uint64_t done = (uint64_t)s->produced * s->block;
    if (done > s->n)
        done = s->n;
    if (done > 0)
        ramp_hold(b, dnpu_board_row(b, (uint32_t)done - 1), t);
}

static void sweep_end(dnpu_board *b, double t)
{
    b->sweep.running = false;
    b->sweep.finished = true;
    sweep_hold_last_row(b, t);
}

static void sweep_abort(dnpu_board *b, double t)
{
    if (b->sweep.exists && b->sweep.running)
        sweep_end(b, t);
}

/* Watchdog, port closed (reason 1, 2) or SAFE (0): ramp to 0 V at max slew, latch safe. */
static void trip(dnpu_board *b, double t, int32_t reason)
{
    static const double zero[DNPU_MAX_CHANNELS] = {0};
    sweep_abort(b, t);
    ramp_to(b, zero, b->cfg.max_slew_v_per_s, t);
    if (b->armed && reason != 0) {
        CNT(b, watchdog_trips);
        push_error(b, DNPU_ERR_WATCHDOG, 0, reason);
    }
    b->armed = false;
}

static void port_closed(dnpu_board *b, double t)
{
    CNT(b, port_closes);
    trip(b, t, 2);
    b->connected = false;
    cache_clear(b);
    dnpu_decoder_reset(&b->rx);
    b->tx_head = b->tx_len = 0;
}

static int state_now(const dnpu_board *b, double t)
{
    if (!b->armed)
        return DNPU_STATE_SAFE;
    if (b->sweep.exists && b->sweep.running)
        return DNPU_STATE_SWEEP;
    return ramp_done(b, t) ? DNPU_STATE_IDLE : DNPU_STATE_RAMPING;
}

/* Reject codes outside the hard limits: the first bad (row, channel) is reported, its arg
 * (sample << 3) | electrode, its text naming the device on a board of several. */
static bool limits_reject(dnpu_board *b, uint16_t seq, const uint8_t *codes, uint32_t rows,
                          uint32_t offset)
{
    for (uint32_t r = 0; r < rows; r++) {
        for (unsigned c = 0; c < b->channels; c++) {
            int32_t code = dnpu_get16(codes + 2u * (r * b->channels + c));
            if (code >= b->limit_codes[c][0] && code <= b->limit_codes[c][1])
                continue;
            char lo[32], hi[32];
            dnpu_text t;
            dnpu_text_init(&t, lo, sizeof lo);
            dnpu_text_double(&t, b->cfg.limits_v[c][0]);
            dnpu_text_init(&t, hi, sizeof hi);
            dnpu_text_double(&t, b->cfg.limits_v[c][1]);
            CNT(b, limit_rejects);
            uint32_t sample = offset + r;
            unsigned dev = c / DNPU_CHANNELS, e = c % DNPU_CHANNELS;
            char name[24];
            if (b->n_devices > 1)
                snprintf(name, sizeof name, "device %u e%u", dev, e);
            else
                snprintf(name, sizeof name, "e%u", e);
            send_error(b, seq, DNPU_ERR_LIMIT, (int32_t)((sample << 3) | e),
                       "%s sample %u: %.6f V outside [%s, %s] V", name, (unsigned)sample,
                       code_to_volts(b, code), lo, hi);
            return true;
        }
    }
    return false;
}

/* ---- commands ---------------------------------------------------------------------------- */

typedef struct cmd_ctx {
    const dnpu_frame *f;
    const uint8_t *p;          /* payload */
    const uint8_t *tail;
    size_t tail_len;           /* bytes */
    double t;
} cmd_ctx;

static void cmd_hello(dnpu_board *b, const cmd_ctx *c)
{
    uint8_t major = c->p[DNPU_HELLO_MAJOR_OFF];
    uint32_t schema = dnpu_get32(c->p + DNPU_HELLO_SCHEMA_OFF);
    bool ok = major == DNPU_PROTOCOL_MAJOR && schema == (uint32_t)DNPU_SCHEMA_HASH;
    b->connected = ok;
    if (!ok)
        push_error(b, DNPU_ERR_VERSION, c->f->seq, major);
    uint8_t *p = frame_payload(b);
    p[DNPU_HELLO_REPLY_STATUS_OFF] = ok ? DNPU_HELLO_OK : DNPU_HELLO_INCOMPATIBLE;
    p[DNPU_HELLO_REPLY_MAJOR_OFF] = DNPU_PROTOCOL_MAJOR;
    p[DNPU_HELLO_REPLY_MINOR_OFF] = DNPU_PROTOCOL_MINOR;
    dnpu_put32(p + DNPU_HELLO_REPLY_SCHEMA_OFF, (uint32_t)DNPU_SCHEMA_HASH);
    dnpu_put16(p + DNPU_HELLO_REPLY_MAX_PAYLOAD_OFF, DNPU_BOARD_MAX_PAYLOAD);
    frame_send(b, DNPU_MSG_HELLO_REPLY, c->f->seq, DNPU_HELLO_REPLY_HEAD_SIZE, 0);
}

static void cmd_identify(dnpu_board *b, const cmd_ctx *c)
{
    const size_t size = DNPU_BOARD_MAX_PAYLOAD - DNPU_IDENTITY_HEAD_SIZE;
    uint16_t page = dnpu_get16(c->p + DNPU_IDENTIFY_PAGE_OFF);
    size_t n_pages = (b->identity_len + size - 1) / size;
    n_pages = n_pages < 1 ? 1 : n_pages;
    if (page >= n_pages) {
        send_error(b, c->f->seq, DNPU_ERR_BAD_PAGE, page, "identity has %u pages", (unsigned)n_pages);
        return;
    }
    size_t first = (size_t)page * size;
    size_t len = b->identity_len - first < size ? b->identity_len - first : size;
    uint8_t *p = frame_payload(b);
    dnpu_put16(p + DNPU_IDENTITY_PAGE_OFF, page);
    dnpu_put16(p + DNPU_IDENTITY_N_PAGES_OFF, (uint16_t)n_pages);
    memcpy(p + DNPU_IDENTITY_HEAD_SIZE, b->identity + first, len);
    frame_send(b, DNPU_MSG_IDENTITY, c->f->seq, DNPU_IDENTITY_HEAD_SIZE + len, 0);
}

static void cmd_status(dnpu_board *b, const cmd_ctx *c)
{
    const dnpu_sweep *s = &b->sweep;
    uint8_t flags = (uint8_t)((b->armed ? DNPU_STATUS_ARMED : 0) | (b->connected ? DNPU_STATUS_CONNECTED : 0)
                              | (b->overflowed ? DNPU_STATUS_OVERFLOWED : 0));
    uint8_t *p = frame_payload(b);
    p[DNPU_STATUS_REPLY_STATE_OFF] = (uint8_t)state_now(b, c->t);
    p[DNPU_STATUS_REPLY_FLAGS_OFF] = flags;
    dnpu_put16(p + DNPU_STATUS_REPLY_ERRORS_QUEUED_OFF, (uint16_t)b->err_count);
    dnpu_put32(p + DNPU_STATUS_REPLY_UPTIME_MS_OFF, (uint32_t)(uint64_t)(c->t * 1000.0));
    dnpu_put16(p + DNPU_STATUS_REPLY_SWEEP_ID_OFF, s->exists ? s->id : 0);
    dnpu_put32(p + DNPU_STATUS_REPLY_BLOCKS_DONE_OFF, s->exists ? s->produced : 0);
    dnpu_put32(p + DNPU_STATUS_REPLY_BLOCKS_TOTAL_OFF, s->exists ? s->n_blocks : 0);
    frame_send(b, DNPU_MSG_STATUS_REPLY, c->f->seq, DNPU_STATUS_REPLY_HEAD_SIZE, 0);
}

static void cmd_get_outputs(dnpu_board *b, const cmd_ctx *c)
{
    double v[DNPU_MAX_CHANNELS];
    unsigned n = b->channels;
    ramp_at(&b->ramp, n, c->t, v);
    uint8_t *p = frame_payload(b) + DNPU_OUTPUTS_HEAD_SIZE;
    for (unsigned ch = 0; ch < n; ch++) {
        dnpu_put16(p + 2 * ch, volts_to_code(b, v[ch]));
        dnpu_put16(p + 2 * (n + ch), volts_to_code(b, b->ramp.target[ch]));
    }
    frame_send(b, DNPU_MSG_OUTPUTS, c->f->seq, DNPU_OUTPUTS_HEAD_SIZE + 4 * n, 0);
}

static void cmd_set(dnpu_board *b, const cmd_ctx *c)
{
    uint16_t seq = c->f->seq;
    size_t items = c->tail_len / 2;
    if (items != b->channels) {
        CNT(b, malformed);
        send_error(b, seq, DNPU_ERR_MALFORMED, (int32_t)items, "SET needs %u codes", b->channels);
        return;
    }
    if (b->sweep.exists && b->sweep.running) {
        send_error(b, seq, DNPU_ERR_BUSY, 0, "a sweep is running");
        return;
    }
    if (limits_reject(b, seq, c->tail, 1, 0))
        return;
    uint32_t rate_mv = dnpu_get32(c->p + DNPU_SET_RATE_MV_PER_S_OFF);
    double max = b->cfg.max_slew_v_per_s;
    double rate = rate_mv == 0 ? max : fmin(rate_mv / 1000.0, max);
    double target[DNPU_MAX_CHANNELS];
    for (unsigned ch = 0; ch < b->channels; ch++)
        target[ch] = code_to_volts(b, dnpu_get16(c->tail + 2 * ch));
    double ramp_s = ramp_to(b, target, rate, c->t);
    uint8_t *p = frame_payload(b);
    dnpu_put32(p + DNPU_SET_REPLY_RAMP_MS_OFF, (uint32_t)(uint64_t)ceil(ramp_s * 1000.0));
    frame_send(b, DNPU_MSG_SET_REPLY, seq, DNPU_SET_REPLY_HEAD_SIZE, 0);
}

static void cmd_arm(dnpu_board *b, const cmd_ctx *c)
{
    b->armed = true;
    b->last_rx = c->t;
    send_ack(b, c->f->seq);
}

static void cmd_safe(dnpu_board *b, const cmd_ctx *c)
{
    trip(b, c->t, 0);
    send_ack(b, c->f->seq);
}

static void cmd_get_errors(dnpu_board *b, const cmd_ctx *c)
{
    uint8_t max = c->p[DNPU_GET_ERRORS_MAX_OFF];
    uint32_t k = max < b->err_count ? max : b->err_count;
    uint8_t *p = frame_payload(b);
    uint8_t *rec = p + DNPU_ERRORS_HEAD_SIZE;
    for (uint32_t i = 0; i < k; i++, rec += DNPU_ERRORS_TAIL_SIZE) {
        dnpu_error_entry e = pop_error(b);
        dnpu_put16(rec + DNPU_ERRORS_TAIL_CODE_OFF, e.code);
        dnpu_put16(rec + DNPU_ERRORS_TAIL_SEQ_OFF, e.seq);
        dnpu_put32(rec + DNPU_ERRORS_TAIL_ARG_OFF, (uint32_t)e.arg);
    }
    dnpu_put16(p + DNPU_ERRORS_REMAINING_OFF, (uint16_t)b->err_count);
    frame_send(b, DNPU_MSG_ERRORS, c->f->seq, DNPU_ERRORS_HEAD_SIZE + k * DNPU_ERRORS_TAIL_SIZE, 0);
}

static void cmd_get_counters(dnpu_board *b, const cmd_ctx *c)
{
    uint8_t *p = frame_payload(b) + DNPU_COUNTERS_HEAD_SIZE;
    for (int i = 0; i < DNPU_N_COUNTERS; i++)
        dnpu_put32(p + 4 * i, b->counters[i]);
    frame_send(b, DNPU_MSG_COUNTERS, c->f->seq, DNPU_COUNTERS_HEAD_SIZE + 4 * DNPU_N_COUNTERS, 0);
}

static void cmd_sweep_begin(dnpu_board *b, const cmd_ctx *c)
{
    uint16_t seq = c->f->seq;
    dnpu_sweep *s = &b->sweep;
    if (s->exists && s->running) {
        send_error(b, seq, DNPU_ERR_BUSY, s->id, "a sweep is running; abort it first");
        return;
    }
    uint16_t sid = dnpu_get16(c->p + DNPU_SWEEP_BEGIN_SWEEP_ID_OFF);
    uint32_t n = dnpu_get32(c->p + DNPU_SWEEP_BEGIN_N_SAMPLES_OFF);
    uint16_t os = dnpu_get16(c->p + DNPU_SWEEP_BEGIN_OVERSAMPLE_OFF);
    uint32_t period = dnpu_get32(c->p + DNPU_SWEEP_BEGIN_PERIOD_NS_OFF);
    uint16_t block = dnpu_get16(c->p + DNPU_SWEEP_BEGIN_BLOCK_SAMPLES_OFF);
    char buf[DNPU_ERROR_TEXT_MAX + 1];
    dnpu_text why;
    dnpu_text_init(&why, buf, sizeof buf);
    const char *sep = "";
    if (n < 1 || n > b->max_sweep_samples) {
        dnpu_text_addf(&why, "%sn_samples %u not in 1..%u", sep, (unsigned)n, (unsigned)b->max_sweep_samples);
        sep = "; ";
    }
    if (os < 1 || os > DNPU_MAX_OVERSAMPLE) {
        dnpu_text_addf(&why, "%soversample %u not in 1..%u", sep, (unsigned)os, DNPU_MAX_OVERSAMPLE);
        sep = "; ";
    }
    if (period < DNPU_MIN_PERIOD_NS || period > DNPU_MAX_PERIOD_NS) {
        dnpu_text_addf(&why, "%speriod_ns %u not in %u..%u", sep, (unsigned)period, DNPU_MIN_PERIOD_NS,
                       DNPU_MAX_PERIOD_NS);
        sep = "; ";
    }
    if (block < 1 || block > b->max_block_samples)
        dnpu_text_addf(&why, "%sblock_samples %u not in 1..%u", sep, (unsigned)block,
                       (unsigned)b->max_block_samples);
    if (why.len > 0) {
        send_error(b, seq, DNPU_ERR_BAD_ARGUMENT, 0, "%s", buf);
        return;
    }
    b->overflowed = false;
    memset(s, 0, sizeof *s);
    s->exists = true;
    s->id = sid;
    s->n = n;
    s->oversample = os;
    s->period_ns = period;
    s->block = block;
    s->n_blocks = (n + block - 1) / block;
    memset(b->have, 0, n);
    send_ack(b, seq);
}

/* The sweep `sid` names, or NULL after answering BAD_SWEEP. */
static dnpu_sweep *sweep_named(dnpu_board *b, uint16_t seq, uint16_t sid)
{
    if (b->sweep.exists && b->sweep.id == sid)
        return &b->sweep;
    send_error(b, seq, DNPU_ERR_BAD_SWEEP, sid, "no sweep with id %u", (unsigned)sid);
    return NULL;
}

/* The sweep `sid` names if it has not started yet, or NULL after answering BAD_SWEEP or BUSY. */
static dnpu_sweep *sweep_not_started(dnpu_board *b, uint16_t seq, uint16_t sid)
{
    dnpu_sweep *s = sweep_named(b, seq, sid);
    if (s != NULL && (s->running || s->finished)) {
        send_error(b, seq, DNPU_ERR_BUSY, sid, "sweep already started");
        return NULL;
    }
    return s;
}

static void cmd_sweep_data(dnpu_board *b, const cmd_ctx *c)
{
    uint16_t seq = c->f->seq;
    uint16_t sid = dnpu_get16(c->p + DNPU_SWEEP_DATA_SWEEP_ID_OFF);
    uint32_t offset = dnpu_get32(c->p + DNPU_SWEEP_DATA_OFFSET_OFF);
    dnpu_sweep *s = sweep_not_started(b, seq, sid);
    if (s == NULL)
        return;
    size_t items = c->tail_len / 2;
    if (items % b->channels) {
        CNT(b, malformed);
        send_error(b, seq, DNPU_ERR_MALFORMED, (int32_t)items, "codes not a multiple of %u", b->channels);
        return;
    }
    uint32_t k = (uint32_t)(items / b->channels);
    if ((uint64_t)offset + k > s->n) {
        send_error(b, seq, DNPU_ERR_BAD_SWEEP, (int32_t)offset, "offset %u+%u beyond %u samples",
                   (unsigned)offset, (unsigned)k, (unsigned)s->n);
        return;
    }
    if (limits_reject(b, seq, c->tail, k, offset))
        return;
    for (uint32_t r = 0; r < k; r++) {
        uint16_t *row = b->codes + (size_t)(offset + r) * b->channels;
        for (unsigned ch = 0; ch < b->channels; ch++)
            row[ch] = dnpu_get16(c->tail + 2u * (r * b->channels + ch));
        b->have[offset + r] = 1;
    }
    send_ack(b, seq);
}

static void cmd_sweep_run(dnpu_board *b, const cmd_ctx *c)
{
    uint16_t seq = c->f->seq;
    uint16_t sid = dnpu_get16(c->p + DNPU_SWEEP_RUN_SWEEP_ID_OFF);
    uint16_t window = dnpu_get16(c->p + DNPU_SWEEP_RUN_WINDOW_OFF);
    dnpu_sweep *s = sweep_not_started(b, seq, sid);
    if (s == NULL)
        return;
    const uint8_t *gap = memchr(b->have, 0, s->n);
    if (gap != NULL) {
        uint32_t missing = (uint32_t)(gap - b->have);
        send_error(b, seq, DNPU_ERR_INCOMPLETE, (int32_t)missing, "sample %u not uploaded", (unsigned)missing);
        return;
    }
    s->window = window > 0 ? window : 1;
    s->running = true;
    s->start_ticks = ticks_since_boot(b);
    send_ack(b, seq);
}

static void credit(dnpu_board *b, const uint8_t *p)
{
    dnpu_sweep *s = &b->sweep;
    uint16_t sid = dnpu_get16(p + DNPU_CREDIT_SWEEP_ID_OFF);
    uint32_t nxt = dnpu_get32(p + DNPU_CREDIT_NEXT_BLOCK_OFF);
    uint16_t window = dnpu_get16(p + DNPU_CREDIT_WINDOW_OFF);
    uint8_t flags = p[DNPU_CREDIT_FLAGS_OFF];
    if (!s->exists || s->id != sid)
        return;
    uint32_t ack = nxt < s->n_blocks ? nxt : s->n_blocks;
    s->acked = ack > s->acked ? ack : s->acked;
    s->window = window > 0 ? window : 1;
    if ((flags & DNPU_CREDIT_REWIND) && nxt < s->next_send) {
        uint32_t from = nxt > s->acked ? nxt : s->acked;
        b->counters[DNPU_CNT_blocks_resent] += s->next_send - from;
        s->next_send = from;
        s->overflow_sent = false;
    }
}

static void cmd_credit(dnpu_board *b, const cmd_ctx *c)
{
    send_error(b, c->f->seq, DNPU_ERR_MALFORMED, 0, "CREDIT must carry FLAG_NOREPLY");
}

static void cmd_sweep_abort(dnpu_board *b, const cmd_ctx *c)
{
    uint16_t sid = dnpu_get16(c->p + DNPU_SWEEP_ABORT_SWEEP_ID_OFF);
    if (b->sweep.exists && b->sweep.id == sid)
        sweep_abort(b, c->t);
    send_ack(b, c->f->seq);
}

typedef struct dnpu_command {
    uint8_t id;
    bool before_hello;            /* answered before a successful HELLO (protocol 1.1) */
    bool safe_ok;                 /* accepted in the latched safe state */
    void (*run)(dnpu_board *b, const cmd_ctx *c);
} dnpu_command;

static const dnpu_command COMMANDS[] = {
    {DNPU_MSG_HELLO, true, true, cmd_hello},
    {DNPU_MSG_IDENTIFY, true, true, cmd_identify},
    {DNPU_MSG_STATUS, false, true, cmd_status},
    {DNPU_MSG_GET_OUTPUTS, false, true, cmd_get_outputs},
    {DNPU_MSG_SET, false, false, cmd_set},
    {DNPU_MSG_ARM, false, true, cmd_arm},
    {DNPU_MSG_SAFE, false, true, cmd_safe},
    {DNPU_MSG_GET_ERRORS, false, true, cmd_get_errors},
    {DNPU_MSG_GET_COUNTERS, false, true, cmd_get_counters},
    {DNPU_MSG_SWEEP_BEGIN, false, false, cmd_sweep_begin},
    {DNPU_MSG_SWEEP_DATA, false, false, cmd_sweep_data},
    {DNPU_MSG_SWEEP_RUN, false, false, cmd_sweep_run},
    {DNPU_MSG_CREDIT, false, true, cmd_credit},
    {DNPU_MSG_SWEEP_ABORT, false, true, cmd_sweep_abort},
};

static const dnpu_command *command_find(uint8_t id)
{
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (COMMANDS[i].id == id)
            return &COMMANDS[i];
    return NULL;
}

/* Whether the payload fits the message's declaration; answers MALFORMED if not. */
static bool payload_fits(dnpu_board *b, const dnpu_msg_info *m, const dnpu_frame *f, bool reply)
{
    const char *why = NULL;
    size_t rest = f->len >= m->head_size ? f->len - m->head_size : 0;
    char text[DNPU_ERROR_TEXT_MAX + 1];
    if (f->len < m->head_size) {
        snprintf(text, sizeof text, "%s: payload %u bytes, need %u", m->name, (unsigned)f->len,
                 (unsigned)m->head_size);
        why = text;
    } else if (m->tail_size == 0 && rest > 0) {
        snprintf(text, sizeof text, "%s: %u unexpected trailing bytes", m->name, (unsigned)rest);
        why = text;
    } else if (m->tail_size > 1 && rest % m->tail_size) {
        snprintf(text, sizeof text, "%s: tail of %u bytes is not a whole number of items", m->name,
                 (unsigned)rest);
        why = text;
    }
    if (why == NULL)
        return true;
    CNT(b, malformed);
    if (reply)
        send_error(b, f->seq, DNPU_ERR_MALFORMED, f->msg, "%s", why);
    return false;
}

/* Run a command and write its one reply frame. */
static void execute(dnpu_board *b, const dnpu_msg_info *m, const dnpu_frame *f, double t)
{
    if (!payload_fits(b, m, f, true))
        return;
    const dnpu_command *cmd = command_find(f->msg);
    if (!cmd->before_hello && !b->connected) {
        send_error(b, f->seq, DNPU_ERR_NOT_CONNECTED, f->msg, "send HELLO first");
        return;
    }
    if (!b->armed && !cmd->safe_ok) {
        send_error(b, f->seq, DNPU_ERR_SAFE_STATE, f->msg,
                   "safe state latched (watchdog, port closed or SAFE); send ARM");
        return;
    }
    cmd_ctx c = {f, f->payload, f->payload + m->head_size, f->len - m->head_size, t};
    cmd->run(b, &c);
}

static void handle_frame(dnpu_board *b, const dnpu_frame *f, double t)
{
    CNT(b, rx_frames);
    b->last_rx = t;                               /* any valid frame pets the watchdog */
    const dnpu_msg_info *m = dnpu_msg_find(f->msg);
    if (m == NULL || m->kind != DNPU_KIND_CMD || command_find(f->msg) == NULL) {
        CNT(b, unknown_commands);
        send_error(b, f->seq, DNPU_ERR_UNKNOWN_COMMAND, f->msg, "unknown command 0x%02x", f->msg);
        return;
    }
    if (f->flags & DNPU_FLAG_NOREPLY) {
        if (f->msg == DNPU_MSG_CREDIT && b->connected && payload_fits(b, m, f, false))
            credit(b, f->payload);
        return;
    }
    uint32_t key = dnpu_crc32_combine(dnpu_crc32(0, &f->msg, 1), f->payload_crc, f->len);  /* CRC of msg, payload */
    const dnpu_cached_reply *hit = cache_find(b, f->seq);
    if (hit != NULL && hit->key == key) {
        CNT(b, cached_replies);
        cache_replay(b, hit);
        return;
    }
    execute(b, m, f, t);
    if (f->msg == DNPU_MSG_HELLO)
        cache_clear(b);
    cache_store(b, f->seq, key);
}

static void send_nak(dnpu_board *b, uint16_t seq)
{
    CNT(b, naks_sent);
    uint8_t *p = frame_payload(b);
    p[DNPU_NAK_REASON_OFF] = DNPU_NAK_CRC;
    frame_send(b, DNPU_MSG_NAK, seq, DNPU_NAK_HEAD_SIZE, 0);
}

/* Handle decoded frames while a reply is sure to fit the transmit queue; true when the decoder
 * needs more bytes (false: stopped for transmit room). */
static bool decode(dnpu_board *b, double t)
{
    dnpu_decoder *d = &b->rx;
    uint32_t g = d->garbage_bytes, h = d->header_errors, e = d->crc_errors;
    dnpu_frame f;
    dnpu_dec_result r = DNPU_DEC_NONE;
    bool starved = false;
    while (tx_has_frame_room(b)) {
        r = dnpu_decoder_next(d, &f);
        if (r == DNPU_DEC_NONE) {
            starved = true;
            break;
        }
        if (r == DNPU_DEC_FRAME)
            handle_frame(b, &f, t);
        else
            send_nak(b, f.seq);
    }
    b->counters[DNPU_CNT_garbage_bytes] += d->garbage_bytes - g;
    b->counters[DNPU_CNT_header_errors] += d->header_errors - h;
    b->counters[DNPU_CNT_crc_errors] += d->crc_errors - e;
    return starved;
}

/* Read what the link has, and handle frames while a reply is sure to fit the transmit queue. A
 * frame that stopped arriving DNPU_FRAME_GAP_S ago is dropped (NAKed when its header was sound),
 * so that a byte lost on the wire does not make the board swallow the next frame. */
static void receive(dnpu_board *b, double t)
{
    dnpu_decoder *d = &b->rx;
    bool starved = false;
    for (int pass = 0; pass < 4; pass++) {
        size_t room, n = 0;
        uint8_t *space = dnpu_decoder_space(d, &room);
        if (room > 0) {
            n = b->hal.link_read(b->hal.ctx, space, room);
            dnpu_decoder_commit(d, n);
            b->counters[DNPU_CNT_rx_bytes] += (uint32_t)n;
            if (n > 0)
                b->last_rx_byte = t;
        }
        starved = decode(b, t);
        if (n == 0 || !starved)
            break;
    }
    bool seq_valid;
    uint16_t seq;
    while (starved && t - b->last_rx_byte >= DNPU_FRAME_GAP_S && tx_has_frame_room(b)
           && dnpu_decoder_expire(d, &seq_valid, &seq)) {
        CNT(b, frame_timeouts);
        if (seq_valid)
            send_nak(b, seq);
        starved = decode(b, t);
    }
}

/* ---- sweeps: acquisition and streaming ------------------------------------------------------ */

static void sweep_fail(dnpu_board *b, bool overflow, uint32_t block, double t)
{
    dnpu_sweep *s = &b->sweep;
    if (overflow) {
        s->overflow = true;
        b->overflowed = true;
        CNT(b, overflows);
        push_error(b, DNPU_ERR_OVERFLOW, 0, (int32_t)block);
    } else {
        s->fault = true;
        push_error(b, DNPU_ERR_DEVICE, 0, (int32_t)block);
    }
    s->n_blocks = s->produced;            /* nothing after the loss is valid */
    sweep_end(b, t);
}

/* Rows [first, last) of sweep block `block`. */
static void block_rows(const dnpu_sweep *s, uint32_t block, uint32_t *first, uint32_t *last)
{
    *first = block * s->block;
    *last = *first + s->block < s->n ? *first + s->block : s->n;
}

bool dnpu_board_next_block(const dnpu_board *b, uint32_t *first, uint32_t *last)
{
    const dnpu_sweep *s = &b->sweep;
    if (!s->exists || !s->running || s->produced >= s->n_blocks)
        return false;
    block_rows(s, s->produced, first, last);
    return true;
}

uint64_t dnpu_board_next_block_due(const dnpu_board *b)
{
    const dnpu_sweep *s = &b->sweep;
    uint64_t ns = (uint64_t)(s->produced + 1) * s->block * s->oversample * s->period_ns;
    return s->start_ticks + ns_to_ticks(b, ns);
}

uint64_t dnpu_board_ticks(const dnpu_board *b)
{
    return ticks_since_boot(b);
}

/* Convert one block: each row latched on the DACs, then `oversample` conversions of every
 * readout averaged per device. false if the analog side failed. */
static bool convert_block(dnpu_board *b, uint32_t block)
{
    dnpu_sweep *s = &b->sweep;
    uint32_t first, last;
    unsigned k = b->n_devices;
    block_rows(s, block, &first, &last);
    int32_t *out = b->fifo[block % b->cfg.fifo_blocks];
    for (uint32_t r = first; r < last; r++) {
        dac_write_row(b, dnpu_board_row(b, r));
        int64_t sum[DNPU_MAX_DEVICES] = {0};
        for (unsigned i = 0; i < s->oversample; i++) {
            int32_t codes[DNPU_MAX_DEVICES];
            if (!b->hal.adc_read(b->hal.ctx, codes))
                return false;
            for (unsigned d = 0; d < k; d++)
                sum[d] += codes[d];
        }
        int32_t *dst = out + (size_t)(r - first) * k;
        for (unsigned d = 0; d < k; d++)
            dst[d] = s->oversample == 1 ? (int32_t)sum[d] : (int32_t)llround((double)sum[d] / s->oversample);
    }
    memcpy(b->dac_now, dnpu_board_row(b, last - 1), b->channels * sizeof b->dac_now[0]);
    return true;
}

/* Acquire at most one block; true when another could follow at once. */
static bool acquire(dnpu_board *b, double t)
{
    dnpu_sweep *s = &b->sweep;
    uint32_t first, last;
    if (!dnpu_board_next_block(b, &first, &last))
        return false;
    bool fifo_full = s->produced - s->acked >= b->cfg.fifo_blocks;
    if (b->cfg.realtime) {
        if (ticks_since_boot(b) < dnpu_board_next_block_due(b))
            return false;             /* not yet: the port may sleep a little */
        if (fifo_full) {                  /* the sample clock does not wait: this block is lost */
            sweep_fail(b, true, s->produced, t);
            return false;
        }
    } else if (fifo_full) {
        return false;                     /* paced by the host: wait for FIFO room */
    }
    if (!convert_block(b, s->produced)) {
        sweep_fail(b, false, s->produced, t);
        return false;
    }
    s->produced++;
    return true;
}

static void send_result(dnpu_board *b, uint32_t block)
{
    const dnpu_sweep *s = &b->sweep;
    uint32_t first, last;
    block_rows(s, block, &first, &last);
    uint8_t *p = frame_payload(b);
    dnpu_put16(p + DNPU_RESULT_SWEEP_ID_OFF, s->id);
    dnpu_put32(p + DNPU_RESULT_BLOCK_OFF, block);
    dnpu_put32(p + DNPU_RESULT_FIRST_OFF, first);
    p[DNPU_RESULT_FLAGS_OFF] = block + 1 == s->n_blocks ? DNPU_RESULT_LAST : 0;
    const int32_t *codes = b->fifo[block % b->cfg.fifo_blocks];
    uint8_t *tail = p + DNPU_RESULT_HEAD_SIZE;
    uint32_t n = (last - first) * b->n_devices;
    for (uint32_t i = 0; i < n; i++)
        dnpu_put32(tail + 4 * i, (uint32_t)codes[i]);
    CNT(b, blocks_sent);
    frame_send(b, DNPU_MSG_RESULT, (uint16_t)block, DNPU_RESULT_HEAD_SIZE + 4 * n, DNPU_FLAG_STREAM);
}

/* The zero-sample block that ends an overflowed or failed sweep. */
static void send_result_end(dnpu_board *b)
{
    dnpu_sweep *s = &b->sweep;
    uint64_t first = (uint64_t)s->produced * s->block;
    uint8_t *p = frame_payload(b);
    dnpu_put16(p + DNPU_RESULT_SWEEP_ID_OFF, s->id);
    dnpu_put32(p + DNPU_RESULT_BLOCK_OFF, s->produced);
    dnpu_put32(p + DNPU_RESULT_FIRST_OFF, (uint32_t)(first < s->n ? first : s->n));
    p[DNPU_RESULT_FLAGS_OFF] = (uint8_t)((s->overflow ? DNPU_RESULT_OVERFLOW : DNPU_RESULT_ABORTED) | DNPU_RESULT_LAST);
    CNT(b, blocks_sent);
    frame_send(b, DNPU_MSG_RESULT, (uint16_t)s->produced, DNPU_RESULT_HEAD_SIZE, DNPU_FLAG_STREAM);
    s->overflow_sent = true;
}

static void stream(dnpu_board *b, double t)
{
    dnpu_sweep *s = &b->sweep;
    if (!s->exists || tx_queued(b) >= DNPU_TX_HIGH)
        return;
    if (s->next_send < s->acked)
        s->next_send = s->acked;          /* acknowledged blocks may already be overwritten */
    uint64_t limit = (uint64_t)s->acked + s->window;
    limit = limit < s->produced ? limit : s->produced;
    for (int k = 0; k < 8 && s->next_send < limit; k++)
        send_result(b, s->next_send++);
    if ((s->overflow || s->fault) && !s->overflow_sent && s->next_send >= s->produced)
        send_result_end(b);
    if (s->running && s->produced >= s->n_blocks)
        sweep_end(b, t);
}

/* ---- the main loop ------------------------------------------------------------------------ */

int dnpu_board_step(dnpu_board *b)
{
    double t = now(b);
    bool open = b->hal.link_is_open(b->hal.ctx);
    if (b->link_was_open && !open)
        port_closed(b, t);
    b->link_was_open = open;
    if (open)
        receive(b, t);
    if (b->armed && t - b->last_rx > b->cfg.watchdog_s)
        trip(b, t, 1);
    bool more = acquire(b, t);
    if (open)
        stream(b, t);
    apply_outputs(b, t);
    if (open)
        tx_flush(b);
    else
        b->tx_head = b->tx_len = 0;
    b->hal.watchdog_kick(b->hal.ctx);
    return (more ? DNPU_BUSY_CONVERT : 0) | (tx_queued(b) > 0 ? DNPU_BUSY_TX : 0);
}

void dnpu_config_defaults(dnpu_config *c)
{
    static const double limits[DNPU_CHANNELS][2] = {
        {-1.2, 0.6}, {-1.2, 0.6}, {-1.2, 0.6}, {-1.2, 0.6}, {-1.2, 0.6}, {-0.7, 0.3}, {-0.7, 0.3}};
    memset(c, 0, sizeof *c);
    c->n_devices = 1;
    c->dac_bits = 16;
    c->adc_bits = 16;
    c->dac_span_v[0] = -2.0;
    c->dac_span_v[1] = 2.0;
    c->adc_span_na[0] = -327.68;
    c->adc_span_na[1] = 327.68;
    for (unsigned d = 0; d < DNPU_MAX_DEVICES; d++) {
        memcpy(c->limits_v[d * DNPU_CHANNELS], limits, sizeof limits);
        c->device_json[d] = "{\"model\":\"null-linear\"}";
    }
    c->max_slew_v_per_s = 10.0;
    c->watchdog_s = 0.5;
    c->sample_period_s = 10e-6;
    c->fifo_blocks = DNPU_MAX_FIFO_BLOCKS < 64u ? DNPU_MAX_FIFO_BLOCKS : 64u;
}

int dnpu_board_init(dnpu_board *b, const dnpu_config *cfg, const dnpu_hal *hal)
{
    if (cfg->fifo_blocks < 1 || cfg->fifo_blocks > DNPU_MAX_FIFO_BLOCKS || cfg->dac_bits < 1
        || cfg->dac_bits > 16 || cfg->adc_bits < 1 || cfg->adc_bits > 31 || cfg->n_devices < 1
        || cfg->n_devices > DNPU_MAX_DEVICES || DNPU_MAX_BLOCK_SAMPLES / cfg->n_devices < 1)
        return -1;
    for (unsigned d = 0; d < cfg->n_devices; d++)
        if (cfg->device_json[d] == NULL)
            return -1;
    memset(b, 0, offsetof(dnpu_board, sweep));
    b->sweep.exists = false;
    b->cfg = *cfg;
    b->hal = *hal;
    b->dac_lsb_v = (cfg->dac_span_v[1] - cfg->dac_span_v[0]) / (double)(1u << cfg->dac_bits);
    b->adc_lsb_na = (cfg->adc_span_na[1] - cfg->adc_span_na[0]) / (double)(1u << cfg->adc_bits);
    b->n_devices = cfg->n_devices;
    b->channels = DNPU_CHANNELS * cfg->n_devices;
    /* the sweep buffer holds as many codes as for one device; a RESULT frame carries K codes per
     * sample (firmware_sim/board.py sizes both the same way) */
    b->max_sweep_samples = DNPU_MAX_SWEEP_SAMPLES / cfg->n_devices;
    b->max_block_samples = DNPU_MAX_BLOCK_SAMPLES / cfg->n_devices;
    for (unsigned c = 0; c < b->channels; c++) {
        b->limit_codes[c][0] = (int32_t)ceil((cfg->limits_v[c][0] - cfg->dac_span_v[0]) / b->dac_lsb_v - 1e-9);
        b->limit_codes[c][1] = (int32_t)floor((cfg->limits_v[c][1] - cfg->dac_span_v[0]) / b->dac_lsb_v + 1e-9);
    }
    b->zero_code = (uint16_t)(int64_t)rint(-cfg->dac_span_v[0] / b->dac_lsb_v);
    b->hal.dac_force_zero(b->hal.ctx);     /* power-up: 0 V, safe state latched */
    for (unsigned c = 0; c < b->channels; c++)
        b->dac_now[c] = b->zero_code;
    b->boot_ticks = b->hal.clock_ticks(b->hal.ctx);
    b->ramp.rate = cfg->max_slew_v_per_s;
    b->identity_len = dnpu_identity_build(b, b->identity, sizeof b->identity);
    return b->identity_len == 0 ? -1 : 0;
}
