/* The board: protocol state machine, DAC/ADC, limits, slew limiter, watchdog, sweeps.
 *
 * A port owns one dnpu_board (static storage: it holds every buffer), fills a dnpu_config and a
 * dnpu_hal, calls dnpu_board_init() once and dnpu_board_step() from its main loop. The core
 * allocates nothing and takes time only from hal->clock_ticks. */
#ifndef DNPU_BOARD_H
#define DNPU_BOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dnpu_protocol.h"
#include "frame.h"
#include "hal.h"

/* DNPU_CHANNELS (the electrodes of one device) comes with the generated header, from
 * core/electrodes.py. A board carries n_devices (1..DNPU_MAX_DEVICES) devices side by side, each
 * behind DNPU_CHANNELS DAC channels and one readout: channel 7k + e is device k's electrode e, and
 * a sweep row sets every device at once and reads K currents (protocol 1.2). */
#ifndef DNPU_MAX_DEVICES
#define DNPU_MAX_DEVICES 1u
#endif
#define DNPU_MAX_CHANNELS (DNPU_MAX_DEVICES * DNPU_CHANNELS)

/* Sizes a port may override (each bounds a static buffer; an MCU port shrinks them to fit its RAM). */
#ifndef DNPU_MAX_SWEEP_SAMPLES
#define DNPU_MAX_SWEEP_SAMPLES (1u << 20)
#endif
#ifndef DNPU_MAX_FIFO_BLOCKS
#define DNPU_MAX_FIFO_BLOCKS 512u
#endif
#ifndef DNPU_BOARD_MAX_PAYLOAD                /* the largest payload this board sends, and declares */
#define DNPU_BOARD_MAX_PAYLOAD DNPU_MAX_PAYLOAD  /* (identity, HELLO): a slow link keeps frames short */
#endif
#ifndef DNPU_MAX_BLOCK_SAMPLES
#define DNPU_MAX_BLOCK_SAMPLES ((DNPU_BOARD_MAX_PAYLOAD - DNPU_RESULT_HEAD_SIZE) / 4)
#endif
_Static_assert(DNPU_BOARD_MAX_PAYLOAD <= DNPU_RX_MAX_PAYLOAD, "the board declares frames it cannot take");
_Static_assert(DNPU_RESULT_HEAD_SIZE + 4u * DNPU_MAX_BLOCK_SAMPLES <= DNPU_BOARD_MAX_PAYLOAD,
               "a RESULT block does not fit the board's payload");
#define DNPU_MAX_OVERSAMPLE 1024u
#define DNPU_MIN_PERIOD_NS 1000u
#define DNPU_MAX_PERIOD_NS 100000000u
#define DNPU_ERROR_QUEUE 32u
#ifndef DNPU_REPLY_CACHE
#define DNPU_REPLY_CACHE 32u
#endif
#ifndef DNPU_TX_HIGH
#define DNPU_TX_HIGH 65536u              /* stream only while less than this is queued */
#endif
#ifndef DNPU_TX_CAP
#define DNPU_TX_CAP (DNPU_TX_HIGH + 10u * DNPU_FRAME_MAX)
#endif
#ifndef DNPU_IDENTITY_CAP
#define DNPU_IDENTITY_CAP 16384u
#endif
#define DNPU_ERROR_TEXT_MAX 200u
#ifndef DNPU_LINK_BYTES_PER_S            /* what the port's link carries (identity; 0: not limited) */
#define DNPU_LINK_BYTES_PER_S 0u
#endif
#ifndef DNPU_FRAME_GAP_S                  /* a frame incomplete this long after its last byte is dropped */
#define DNPU_FRAME_GAP_S (DNPU_FRAME_GAP_MS / 1000.0)
#endif

/* The counters, in the order of the identity's `counters` (firmware_sim's COUNTER_NAMES). */
#define DNPU_COUNTERS(X) X(rx_bytes) X(rx_frames) X(garbage_bytes) X(header_errors) X(crc_errors) \
    X(naks_sent) X(unknown_commands) X(malformed) X(cached_replies) X(limit_rejects)             \
    X(watchdog_trips) X(port_closes) X(tx_frames) X(blocks_sent) X(blocks_resent) X(overflows)   \
    X(errors_dropped) X(frame_timeouts)
#define DNPU_COUNTER_ENUM(name) DNPU_CNT_##name,
enum { DNPU_COUNTERS(DNPU_COUNTER_ENUM) DNPU_N_COUNTERS };
extern const char *const DNPU_COUNTER_NAMES[DNPU_N_COUNTERS];

typedef struct dnpu_config {
    uint32_t seed;
    unsigned dac_bits, adc_bits;
    double dac_span_v[2];
    double adc_span_na[2];
    unsigned n_devices;                   /* 1..DNPU_MAX_DEVICES */
    double limits_v[DNPU_MAX_CHANNELS][2];  /* the first 7 x n_devices channels */
    double max_slew_v_per_s;
    double watchdog_s;
    double sample_period_s;
    uint32_t fifo_blocks;                 /* 1..DNPU_MAX_FIFO_BLOCKS */
    bool realtime;                        /* sweeps paced by the sample clock (FIFO can overflow) */
    const char *firmware, *model, *serial;
    const char *device_json[DNPU_MAX_DEVICES];  /* each analog device's own description, a JSON object */
} dnpu_config;

typedef struct dnpu_ramp {                /* the slew limiter: start -> target at `rate` from t0 */
    double start[DNPU_MAX_CHANNELS], target[DNPU_MAX_CHANNELS];
    double t0, rate;
} dnpu_ramp;

typedef struct dnpu_sweep {
    bool exists, running, finished, overflow, fault, overflow_sent;
    uint16_t id, oversample, block, window;
    uint32_t n, period_ns, n_blocks;
    uint32_t produced, acked, next_send;  /* blocks */
    uint64_t start_ticks;                 /* the sample clock's start (realtime pacing) */
} dnpu_sweep;

typedef struct dnpu_cached_reply {
    bool used;
    uint16_t seq;
    uint32_t key, age;
    uint16_t len;
    uint8_t frame[DNPU_FRAME_MAX];
} dnpu_cached_reply;

typedef struct dnpu_error_entry {
    uint16_t code, seq;
    int32_t arg;
} dnpu_error_entry;

typedef struct dnpu_board {
    dnpu_config cfg;
    dnpu_hal hal;
    double dac_lsb_v, adc_lsb_na;
    unsigned n_devices, channels;         /* channels = DNPU_CHANNELS x n_devices */
    uint32_t max_sweep_samples;           /* DNPU_MAX_SWEEP_SAMPLES / n_devices rows of codes */
    uint32_t max_block_samples;           /* DNPU_MAX_BLOCK_SAMPLES / n_devices: K codes per sample */
    int32_t limit_codes[DNPU_MAX_CHANNELS][2];
    uint16_t zero_code;
    uint64_t boot_ticks;

    bool armed, connected, overflowed, link_was_open;
    double last_rx;                       /* the last valid frame (watchdog) */
    double last_rx_byte;                  /* the last received byte (frame gap) */
    dnpu_ramp ramp;
    uint16_t dac_now[DNPU_MAX_CHANNELS];  /* the codes last latched by the slew limiter */

    uint32_t counters[DNPU_N_COUNTERS];
    dnpu_error_entry errors[DNPU_ERROR_QUEUE];
    uint32_t err_head, err_count;

    dnpu_cached_reply cache[DNPU_REPLY_CACHE];
    uint32_t cache_age;

    dnpu_decoder rx;
    uint8_t tx[DNPU_TX_CAP];
    size_t tx_head, tx_len;               /* queued bytes are tx[tx_head..tx_len) */
    size_t reply_at, reply_len;           /* the last reply frame written into tx */

    char identity[DNPU_IDENTITY_CAP];
    size_t identity_len;

    dnpu_sweep sweep;
    uint16_t codes[DNPU_MAX_SWEEP_SAMPLES * DNPU_CHANNELS];      /* rows of `channels` codes */
    uint8_t have[DNPU_MAX_SWEEP_SAMPLES];
    /* block b in slot b % fifo_blocks: sample-major, n_devices codes per sample */
    int32_t fifo[DNPU_MAX_FIFO_BLOCKS][DNPU_MAX_BLOCK_SAMPLES];
} dnpu_board;

/* 0 on success; -1 when the config does not fit the static buffers (nothing started). */
/* The board's defaults (16-bit DAC and ADC, the virtual device's working ranges as limits, 10 V/s
 * slew, 0.5 s watchdog, 10 us sample period); a port then sets what it knows better. */
void dnpu_config_defaults(dnpu_config *c);
int dnpu_board_init(dnpu_board *b, const dnpu_config *cfg, const dnpu_hal *hal);
/* One pass of the main loop: link events, received frames, watchdog, slew limiter, sweep
 * acquisition, streaming, transmit. Returns what is pending, so a port knows how long it may
 * sleep: DNPU_BUSY_CONVERT (a sweep block can be converted now; do not sleep), DNPU_BUSY_TX
 * (bytes wait for the link; sleep until it can take more). */
enum { DNPU_BUSY_CONVERT = 1, DNPU_BUSY_TX = 2 };
int dnpu_board_step(dnpu_board *b);

/* Present outputs in volts (the slew limiter's position now), b->channels of them. */
void dnpu_board_outputs(const dnpu_board *b, double t, double out[DNPU_MAX_CHANNELS]);
/* Sweep row r's DAC codes (b->channels of them; r < b->sweep.n). */
const uint16_t *dnpu_board_row(const dnpu_board *b, uint32_t r);
double dnpu_board_time(const dnpu_board *b);
/* The board clock in ticks since boot (the clock of the sample schedule below). */
uint64_t dnpu_board_ticks(const dnpu_board *b);
/* For a port's analog side: the rows [first, last) of the sweep block the core converts next
 * (false: no running sweep has one left), and when a real-time sweep's clock makes that block
 * due (ticks since boot). */
bool dnpu_board_next_block(const dnpu_board *b, uint32_t *first, uint32_t *last);
uint64_t dnpu_board_next_block_due(const dnpu_board *b);

#endif
