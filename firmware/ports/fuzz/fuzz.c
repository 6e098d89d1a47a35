/* A fuzz driver for the firmware core: `dnpu-fuzz SEED NBYTES` feeds NBYTES of seeded random
 * input through a fake HAL (stepped clock, in-memory link, affine analog side) and exits 0.
 * Built with -fsanitize=address,undefined (make firmware: build/firmware-asan/fuzz/dnpu-fuzz) it
 * is the sanitizer check of tests/firmware/test_fuzz_sanitized.py.
 *
 * The input mixes: well-formed frames of every message id the schema declares (and unknown ids)
 * with random payloads of the declared sizes, of random sizes and of random tail lengths; a
 * scripted session (HELLO with the right version, ARM, SWEEP_BEGIN/DATA/RUN, CREDIT, ABORT) with
 * random field values, so that sweeps really run; frames cut short; frames with a flipped bit;
 * headers with an oversized LEN (and a valid header CRC); plain garbage. Between chunks the clock
 * jumps (watchdog, slew limiter, realtime pacing), the link closes and reopens, the transmit side
 * stalls, and the ADC fails now and then. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "board.h"
#include "crc.h"
#include "frame.h"

static dnpu_board board;

static struct {
    uint8_t rx[1u << 16];
    size_t rx_head, rx_len;
    bool open, stall;
    uint64_t ticks;
    uint16_t staged[DNPU_MAX_CHANNELS];
    uint64_t tx_bytes, adc_reads;
    int adc_fail_percent;
    uint64_t rng;
} fz;

static uint64_t rnd(void)                 /* splitmix64 */
{
    uint64_t z = (fz.rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint32_t below(uint32_t n) { return n ? (uint32_t)(rnd() % n) : 0; }

static size_t link_read(void *ctx, uint8_t *buf, size_t max)
{
    (void)ctx;
    size_t n = fz.rx_len - fz.rx_head;
    if (n > max)
        n = max;
    if (n > 1 && below(4) == 0)
        n = 1 + below((uint32_t)n);       /* short reads */
    memcpy(buf, fz.rx + fz.rx_head, n);
    fz.rx_head += n;
    return n;
}

static size_t link_write(void *ctx, const uint8_t *buf, size_t n)
{
    (void)ctx;
    if (fz.stall)
        return 0;
    size_t w = n > 1 && below(3) == 0 ? 1 + below((uint32_t)n) : n;
    volatile uint8_t sink = 0;            /* touch every byte handed over */
    for (size_t i = 0; i < w; i++)
        sink ^= buf[i];
    (void)sink;
    fz.tx_bytes += w;
    return w;
}

static bool link_is_open(void *ctx) { (void)ctx; return fz.open; }
static uint64_t clock_ticks(void *ctx) { (void)ctx; return fz.ticks; }
static void dac_stage(void *ctx, unsigned ch, uint16_t code)
{
    (void)ctx;
    if (ch < DNPU_MAX_CHANNELS)
        fz.staged[ch] = code;
}
static void dac_latch(void *ctx) { (void)ctx; }
static void dac_force_zero(void *ctx) { (void)ctx; }
static bool adc_read(void *ctx, int32_t *codes)
{
    (void)ctx;
    fz.adc_reads++;
    if (fz.adc_fail_percent && (int)below(100) < fz.adc_fail_percent)
        return false;
    for (unsigned d = 0; d < board.n_devices; d++) {
        int32_t v = 0;
        for (unsigned c = 0; c < DNPU_CHANNELS; c++)
            v += (int32_t)fz.staged[d * DNPU_CHANNELS + c] - 32768;
        codes[d] = v;
    }
    return true;
}
static void watchdog_kick(void *ctx) { (void)ctx; }

/* ---- input generation ------------------------------------------------------------------------ */

static uint8_t out[3 * DNPU_FRAME_MAX];
static size_t out_len;
static uint16_t seq;

static void put(const uint8_t *p, size_t n)
{
    if (out_len + n > sizeof out)
        n = sizeof out - out_len;
    memcpy(out + out_len, p, n);
    out_len += n;
}

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint8_t frame[DNPU_FRAME_MAX];

/* A sealed frame around payload[0..len) (already at frame + HEADER_SIZE); returns its size. */
static size_t seal(uint8_t msg, size_t len)
{
    uint8_t flags = below(8) == 0 ? (uint8_t)below(256) : (msg == DNPU_MSG_CREDIT ? DNPU_FLAG_NOREPLY : 0);
    uint16_t s = below(5) == 0 ? (uint16_t)below(4) : ++seq;   /* repeats exercise the reply cache */
    return dnpu_frame_seal(frame, msg, flags, s, len);
}

static uint8_t *payload(void) { return frame + DNPU_HEADER_SIZE; }

static void random_bytes(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

static size_t random_length(const dnpu_msg_info *m)
{
    switch (below(6)) {
    case 0: return below(DNPU_MAX_PAYLOAD + 1);
    case 1: return below(16);
    case 2: return m ? m->head_size : below(32);
    case 3: return m && m->head_size ? (size_t)m->head_size - 1 : 0;
    default:
        if (m && m->tail_size) {
            size_t k = below(8) == 0 ? (DNPU_MAX_PAYLOAD - m->head_size) / m->tail_size + below(3) : below(64);
            size_t len = m->head_size + k * m->tail_size + (below(6) == 0 ? 1 : 0);
            return len > DNPU_MAX_PAYLOAD ? DNPU_MAX_PAYLOAD : len;
        }
        return m ? (size_t)m->head_size + (below(4) == 0 ? 1u : 0u) : (size_t)below(64);
    }
}

/* A frame of a random message with a random payload. */
static size_t random_frame(void)
{
    const dnpu_msg_info *m = below(10) == 0 ? NULL : &DNPU_MESSAGES[below(DNPU_N_MESSAGES)];
    uint8_t id = m ? m->id : (uint8_t)below(256);
    if (!m)
        m = dnpu_msg_find(id);
    size_t len = random_length(m);
    random_bytes(payload(), len);
    return seal(id, len);
}

/* Fields that make sense to the board, now and then off by a little. */
static uint32_t fuzzy(uint32_t good, uint32_t span)
{
    switch (below(8)) {
    case 0: return (uint32_t)rnd();
    case 1: return good + below(3) - 1;
    default: return span ? below(span) : good;
    }
}

static uint16_t sweep_id;
static uint32_t sweep_n;

static size_t session_frame(void)
{
    uint8_t *p = payload();
    switch (below(10)) {
    case 0:
        p[DNPU_HELLO_MAJOR_OFF] = below(8) ? DNPU_PROTOCOL_MAJOR : (uint8_t)below(4);
        p[DNPU_HELLO_MINOR_OFF] = (uint8_t)below(3);
        put_le(p + DNPU_HELLO_SCHEMA_OFF, below(8) ? DNPU_SCHEMA_HASH : (uint32_t)rnd(), 4);
        return seal(DNPU_MSG_HELLO, DNPU_HELLO_HEAD_SIZE);
    case 1:
        return seal(below(4) ? DNPU_MSG_ARM : DNPU_MSG_SAFE, 0);
    case 2: {
        sweep_id = (uint16_t)below(4);
        sweep_n = 1 + below(below(4) ? 64 : 4000);
        put_le(p + DNPU_SWEEP_BEGIN_SWEEP_ID_OFF, sweep_id, 2);
        put_le(p + DNPU_SWEEP_BEGIN_N_SAMPLES_OFF, fuzzy(sweep_n, 0), 4);
        put_le(p + DNPU_SWEEP_BEGIN_OVERSAMPLE_OFF, fuzzy(1 + below(3), 5), 2);
        put_le(p + DNPU_SWEEP_BEGIN_PERIOD_NS_OFF, fuzzy(1000 + below(20000), 0), 4);
        put_le(p + DNPU_SWEEP_BEGIN_BLOCK_SAMPLES_OFF, fuzzy(1 + below(64), 0), 2);
        return seal(DNPU_MSG_SWEEP_BEGIN, DNPU_SWEEP_BEGIN_HEAD_SIZE);
    }
    case 3: case 4: {
        uint32_t off = sweep_n ? below(sweep_n) : 0;
        uint32_t k = 1 + below(below(4) ? 64 : (DNPU_MAX_PAYLOAD - DNPU_SWEEP_DATA_HEAD_SIZE) / 2);
        if (below(3))
            k = off < sweep_n ? (sweep_n - off < k ? sweep_n - off : k) : k;
        put_le(p + DNPU_SWEEP_DATA_SWEEP_ID_OFF, fuzzy(sweep_id, 0), 2);
        put_le(p + DNPU_SWEEP_DATA_OFFSET_OFF, below(6) ? 0 + off : (uint32_t)rnd(), 4);
        size_t len = DNPU_SWEEP_DATA_HEAD_SIZE + 2 * (size_t)k;
        if (len > DNPU_MAX_PAYLOAD)
            len = DNPU_MAX_PAYLOAD;
        for (size_t i = DNPU_SWEEP_DATA_HEAD_SIZE; i + 1 < len; i += 2)   /* mostly near 0 V */
            put_le(p + i, below(8) ? 32768 + below(4000) - 2000 : (uint16_t)rnd(), 2);
        return seal(DNPU_MSG_SWEEP_DATA, len);
    }
    case 5:
        put_le(p + DNPU_SWEEP_RUN_SWEEP_ID_OFF, fuzzy(sweep_id, 0), 2);
        put_le(p + DNPU_SWEEP_RUN_WINDOW_OFF, fuzzy(1 + below(16), 0), 2);
        return seal(DNPU_MSG_SWEEP_RUN, DNPU_SWEEP_RUN_HEAD_SIZE);
    case 6: case 7:
        put_le(p + DNPU_CREDIT_SWEEP_ID_OFF, fuzzy(sweep_id, 0), 2);
        put_le(p + DNPU_CREDIT_NEXT_BLOCK_OFF, fuzzy(below(64), 0), 4);
        put_le(p + DNPU_CREDIT_WINDOW_OFF, fuzzy(1 + below(16), 0), 2);
        p[DNPU_CREDIT_FLAGS_OFF] = (uint8_t)(below(4) ? 0 : below(256));
        return seal(DNPU_MSG_CREDIT, DNPU_CREDIT_HEAD_SIZE);
    case 8:
        put_le(p + DNPU_SWEEP_ABORT_SWEEP_ID_OFF, fuzzy(sweep_id, 0), 2);
        return seal(DNPU_MSG_SWEEP_ABORT, DNPU_SWEEP_ABORT_HEAD_SIZE);
    default: {
        static const uint8_t queries[] = {DNPU_MSG_STATUS, DNPU_MSG_GET_OUTPUTS, DNPU_MSG_GET_ERRORS,
                                          DNPU_MSG_GET_COUNTERS, DNPU_MSG_IDENTIFY, DNPU_MSG_SET};
        uint8_t id = queries[below(sizeof queries)];
        const dnpu_msg_info *m = dnpu_msg_find(id);
        size_t len = m->head_size;
        random_bytes(p, len);
        if (id == DNPU_MSG_IDENTIFY)
            put_le(p, below(8), 2);
        if (id == DNPU_MSG_SET) {
            put_le(p, below(100000), 4);
            unsigned n = board.channels;
            for (unsigned c = 0; c < n; c++)
                put_le(p + len + 2 * c, 32768 + below(2000) - 1000, 2);
            len += below(4) ? 2 * n : 2 * below(2 * n);
        }
        return seal(id, len);
    }
    }
}

/* A whole, well-formed sweep: handshake, arm, begin, all its data, run (credits follow later). */
static void full_sweep(void)
{
    uint8_t *p = payload();
    p[DNPU_HELLO_MAJOR_OFF] = DNPU_PROTOCOL_MAJOR;
    p[DNPU_HELLO_MINOR_OFF] = 0;
    put_le(p + DNPU_HELLO_SCHEMA_OFF, DNPU_SCHEMA_HASH, 4);
    put(frame, seal(DNPU_MSG_HELLO, DNPU_HELLO_HEAD_SIZE));
    put(frame, seal(DNPU_MSG_ARM, 0));
    sweep_id = (uint16_t)(sweep_id + 1);
    sweep_n = 1 + below(200);
    put_le(p + DNPU_SWEEP_BEGIN_SWEEP_ID_OFF, sweep_id, 2);
    put_le(p + DNPU_SWEEP_BEGIN_N_SAMPLES_OFF, sweep_n, 4);
    put_le(p + DNPU_SWEEP_BEGIN_OVERSAMPLE_OFF, 1 + below(3), 2);
    put_le(p + DNPU_SWEEP_BEGIN_PERIOD_NS_OFF, 1000 + below(20000), 4);
    put_le(p + DNPU_SWEEP_BEGIN_BLOCK_SAMPLES_OFF, 1 + below(32), 2);
    put(frame, seal(DNPU_MSG_SWEEP_BEGIN, DNPU_SWEEP_BEGIN_HEAD_SIZE));
    for (uint32_t off = 0; off < sweep_n;) {
        uint32_t k = 1 + below(100);
        if (k > sweep_n - off)
            k = sweep_n - off;
        put_le(p + DNPU_SWEEP_DATA_SWEEP_ID_OFF, sweep_id, 2);
        put_le(p + DNPU_SWEEP_DATA_OFFSET_OFF, off, 4);
        for (uint32_t i = 0; i < k * board.channels; i++)
            put_le(p + DNPU_SWEEP_DATA_HEAD_SIZE + 2 * i, 32768 + below(4000) - 2000, 2);
        put(frame, seal(DNPU_MSG_SWEEP_DATA, DNPU_SWEEP_DATA_HEAD_SIZE + 2 * (size_t)k * board.channels));
        off += k;
    }
    put_le(p + DNPU_SWEEP_RUN_SWEEP_ID_OFF, sweep_id, 2);
    put_le(p + DNPU_SWEEP_RUN_WINDOW_OFF, 1 + below(16), 2);
    put(frame, seal(DNPU_MSG_SWEEP_RUN, DNPU_SWEEP_RUN_HEAD_SIZE));
}

/* One chunk of input into out[]. */
static void generate(void)
{
    out_len = 0;
    if (below(6) == 0) {
        full_sweep();
        return;
    }
    switch (below(16)) {
    case 0: case 1: case 2:                    /* garbage, sometimes with sync bytes sprinkled */
        for (uint32_t i = 0, n = 1 + below(400); i < n; i++) {
            uint8_t b = (uint8_t)rnd();
            if (below(8) == 0)
                b = below(2) ? DNPU_SYNC0 : DNPU_SYNC1;
            put(&b, 1);
        }
        break;
    case 3: {                                  /* a header with an oversized LEN, valid header CRC */
        uint8_t h[DNPU_HEADER_SIZE];
        h[DNPU_OFF_SYNC] = DNPU_SYNC0;
        h[DNPU_OFF_SYNC + 1] = DNPU_SYNC1;
        put_le(h + DNPU_OFF_LEN, DNPU_MAX_PAYLOAD + 1 + below(65535 - DNPU_MAX_PAYLOAD), 2);
        h[DNPU_OFF_MSG] = DNPU_MESSAGES[below(DNPU_N_MESSAGES)].id;
        h[DNPU_OFF_FLAGS] = 0;
        put_le(h + DNPU_OFF_SEQ, below(65536), 2);
        put_le(h + DNPU_OFF_HCRC, dnpu_crc16(h, DNPU_OFF_HCRC, DNPU_HCRC_INIT), 2);
        put(h, sizeof h);
        uint8_t tail[64];
        random_bytes(tail, sizeof tail);
        put(tail, below(sizeof tail));
        break;
    }
    case 4: case 5: {                          /* a frame cut short, or with a flipped bit */
        size_t n = below(2) ? random_frame() : session_frame();
        if (below(2))
            n = below((uint32_t)n);
        else
            frame[below((uint32_t)n)] ^= (uint8_t)(1u << below(8));
        put(frame, n);
        break;
    }
    case 6: case 7: case 8:                    /* a well-formed frame, random payload */
        put(frame, random_frame());
        break;
    default:                                   /* the scripted session */
        for (uint32_t i = 0, k = 1 + below(4); i < k; i++)
            put(frame, session_frame());
        break;
    }
}

static void steps(int n)
{
    for (int i = 0; i < n; i++) {
        fz.ticks += below(64) == 0 ? below(2000000000u) : below(200000);
        dnpu_board_step(&board);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: dnpu-fuzz SEED NBYTES\n");
        return 2;
    }
    fz.rng = strtoull(argv[1], NULL, 10) * 0x2545F4914F6CDD1Dull + 1;
    unsigned long long total = strtoull(argv[2], NULL, 10);
    dnpu_config cfg;
    dnpu_config_defaults(&cfg);           /* the virtual device's limits on every device */
    cfg.seed = 1;
    cfg.fifo_blocks = 4 + below(60);
    cfg.realtime = below(2);
    cfg.n_devices = 1 + below(DNPU_MAX_DEVICES < 4u ? DNPU_MAX_DEVICES : 4u);   /* 1..4 devices */
    cfg.firmware = "dnpu-fuzz";
    cfg.model = "DNPU-FUZZ";
    cfg.serial = "FUZZ-1";
    for (unsigned d = 0; d < DNPU_MAX_DEVICES; d++)
        cfg.device_json[d] = "{\"model\":\"fuzz\"}";
    dnpu_hal hal = {
        .ctx = NULL, .link_read = link_read, .link_write = link_write, .link_is_open = link_is_open,
        .clock_ticks = clock_ticks, .ticks_per_s = 1000000000u, .dac_stage = dac_stage, .dac_latch = dac_latch,
        .dac_force_zero = dac_force_zero, .adc_read = adc_read, .watchdog_kick = watchdog_kick};
    if (dnpu_board_init(&board, &cfg, &hal) < 0) {
        fprintf(stderr, "dnpu-fuzz: init failed\n");
        return 1;
    }
    fz.open = true;
    unsigned long long fed = 0, chunks = 0;
    while (fed < total) {
        generate();
        if (fz.rx_head == fz.rx_len)
            fz.rx_head = fz.rx_len = 0;
        if (out_len > sizeof fz.rx - fz.rx_len)
            out_len = sizeof fz.rx - fz.rx_len;
        memcpy(fz.rx + fz.rx_len, out, out_len);
        fz.rx_len += out_len;
        fed += out_len;
        chunks++;
        if (below(64) == 0)
            fz.open = !fz.open;
        fz.stall = below(16) == 0;
        fz.adc_fail_percent = below(32) == 0 ? (int)below(50) : 0;
        steps(1 + (int)below(4));
        if (below(4) == 0) {
            fz.stall = false;
            steps(8);                          /* drain the transmit queue */
        }
    }
    fz.stall = false;
    steps(64);
    printf("dnpu-fuzz: bytes=%llu chunks=%llu bytes_out=%llu adc_reads=%llu frames=%u crc_errors=%u "
           "header_errors=%u garbage_bytes=%u\n",
           fed, chunks, (unsigned long long)fz.tx_bytes, (unsigned long long)fz.adc_reads,
           board.counters[DNPU_CNT_rx_frames], board.counters[DNPU_CNT_crc_errors],
           board.counters[DNPU_CNT_header_errors], board.counters[DNPU_CNT_garbage_bytes]);
    return 0;
}
