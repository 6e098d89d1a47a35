/* The core in-process with a fake HAL and a stepped clock, as a shared library for the tests
 * (tests/firmware/, through ctypes): the test owns time, the link's bytes and its open state,
 * and sees every DAC latch with its tick. The analog side: ADC code = e0's DAC code - zero code,
 * so a test knows exactly what each row must return. */
#include <stdio.h>
#include <string.h>

#include "board.h"

#define FAKE_RX_CAP (1u << 20)
#define FAKE_TX_CAP (1u << 22)
#define FAKE_LATCH_LOG (1u << 16)

static dnpu_board board;

static struct {
    uint64_t ticks;
    bool open;
    uint8_t rx[FAKE_RX_CAP];
    size_t rx_head, rx_len;
    uint8_t tx[FAKE_TX_CAP];
    size_t tx_len, write_limit;       /* bytes the link takes per pass of the main loop (0: all) */
    size_t write_budget;
    uint16_t staged[DNPU_MAX_CHANNELS], latched[DNPU_MAX_CHANNELS];
    uint64_t latches, adc_reads, kicks;
    uint64_t latch_ticks[FAKE_LATCH_LOG];
    long long fail_after_reads;       /* < 0: never */
} fake;

static size_t link_read(void *ctx, uint8_t *buf, size_t max)
{
    (void)ctx;
    size_t n = fake.rx_len - fake.rx_head;
    n = n < max ? n : max;
    memcpy(buf, fake.rx + fake.rx_head, n);
    fake.rx_head += n;
    return n;
}

static size_t link_write(void *ctx, const uint8_t *buf, size_t n)
{
    (void)ctx;
    if (fake.write_limit > 0) {
        n = n < fake.write_budget ? n : fake.write_budget;
        fake.write_budget -= n;
    }
    if (n > FAKE_TX_CAP - fake.tx_len)
        n = FAKE_TX_CAP - fake.tx_len;
    memcpy(fake.tx + fake.tx_len, buf, n);
    fake.tx_len += n;
    return n;
}

static bool link_is_open(void *ctx) { (void)ctx; return fake.open; }
static uint64_t clock_ticks(void *ctx) { (void)ctx; return fake.ticks; }

static void dac_stage(void *ctx, unsigned ch, uint16_t code)
{
    (void)ctx;
    if (ch < DNPU_MAX_CHANNELS)
        fake.staged[ch] = code;
}

static void dac_latch(void *ctx)
{
    (void)ctx;
    memcpy(fake.latched, fake.staged, sizeof fake.latched);
    fake.latch_ticks[fake.latches % FAKE_LATCH_LOG] = fake.ticks;
    fake.latches++;
}

static void dac_force_zero(void *ctx)
{
    (void)ctx;
    for (unsigned c = 0; c < DNPU_MAX_CHANNELS; c++)
        fake.latched[c] = board.zero_code;
}

/* Device k reads its e0's code above 0 V: a sweep's results show which row each device saw. */
static bool adc_read(void *ctx, int32_t *codes)
{
    (void)ctx;
    if (fake.fail_after_reads >= 0 && (long long)fake.adc_reads >= fake.fail_after_reads)
        return false;
    fake.adc_reads++;
    for (unsigned d = 0; d < board.n_devices; d++)
        codes[d] = (int32_t)fake.latched[d * DNPU_CHANNELS] - (int32_t)board.zero_code;
    return true;
}

static void watchdog_kick(void *ctx) { (void)ctx; fake.kicks++; }

/* ---- the library's interface (tests/firmware/fake_board.py) -------------------------------- */

int fake_init(uint64_t ticks_per_s, double watchdog_s, double max_slew, int realtime, unsigned fifo_blocks,
              unsigned n_devices)
{
    memset(&fake, 0, sizeof fake);
    fake.ticks = 1000;
    fake.open = true;
    fake.fail_after_reads = -1;
    dnpu_config cfg;
    dnpu_config_defaults(&cfg);           /* the virtual device's limits on every device */
    cfg.n_devices = n_devices;
    for (unsigned d = 0; d < DNPU_MAX_DEVICES; d++)
        cfg.device_json[d] = "{\"model\":\"fake\"}";
    cfg.firmware = "dnpu-bench-fake 0.1.0";
    cfg.model = "DNPU-BENCH-FAKE";
    cfg.serial = "FAKE-00000000";
    cfg.watchdog_s = watchdog_s;
    cfg.max_slew_v_per_s = max_slew;
    cfg.realtime = realtime != 0;
    cfg.fifo_blocks = fifo_blocks;
    dnpu_hal hal = {NULL, link_read, link_write, link_is_open, clock_ticks, ticks_per_s,
                    dac_stage, dac_latch, dac_force_zero, adc_read, watchdog_kick};
    return dnpu_board_init(&board, &cfg, &hal);
}

void fake_advance(uint64_t ticks) { fake.ticks += ticks; }
uint64_t fake_ticks(void) { return fake.ticks; }
void fake_set_open(int open) { fake.open = open != 0; }
void fake_set_write_limit(size_t n) { fake.write_limit = n; }
void fake_fail_after_reads(long long n) { fake.fail_after_reads = n; }
int fake_step(void)
{
    fake.write_budget = fake.write_limit;
    return dnpu_board_step(&board);
}

size_t fake_feed(const uint8_t *data, size_t n)
{
    if (fake.rx_head == fake.rx_len)
        fake.rx_head = fake.rx_len = 0;
    size_t room = FAKE_RX_CAP - fake.rx_len;
    n = n < room ? n : room;
    memcpy(fake.rx + fake.rx_len, data, n);
    fake.rx_len += n;
    return n;
}

size_t fake_take_tx(uint8_t *out, size_t max)
{
    size_t n = fake.tx_len < max ? fake.tx_len : max;
    memcpy(out, fake.tx, n);
    memmove(fake.tx, fake.tx + n, fake.tx_len - n);
    fake.tx_len -= n;
    return n;
}

/* The latched codes of every channel the board has (out holds DNPU_MAX_CHANNELS). */
void fake_dac(uint16_t out[DNPU_MAX_CHANNELS]) { memcpy(out, fake.latched, sizeof fake.latched); }
uint64_t fake_latches(void) { return fake.latches; }
uint64_t fake_latch_tick(uint64_t i) { return fake.latch_ticks[i % FAKE_LATCH_LOG]; }
uint64_t fake_adc_reads(void) { return fake.adc_reads; }
uint64_t fake_kicks(void) { return fake.kicks; }
size_t fake_rx_pending(void) { return fake.rx_len - fake.rx_head; }
int fake_armed(void) { return board.armed; }

size_t fake_counter_names(char *out, size_t cap)
{
    size_t len = 0;
    for (int i = 0; i < DNPU_N_COUNTERS; i++)
        len += (size_t)snprintf(out + (len < cap ? len : cap), len < cap ? cap - len : 0, "%s%s",
                                i ? " " : "", DNPU_COUNTER_NAMES[i]);
    return len;
}
