/* The qemu port: the firmware core on an STM32F405 (QEMU's netduinoplus2), its host link on
 * USART1 (the host opens it as a pty: qemu-system-arm -serial pty). Time comes from TIM2 at
 * 1 MHz; the core sleeps in WFI when idle, woken by the UART or a 1 kHz SysTick. The analog
 * side is behind USART2: each block of conversions goes to the host-side analog emulator
 * (analog_link.h), which runs the seeded device as the Python firmware does. The board's settings
 * come from the boot configuration block (config.h) that the launcher loads into flash. */
#include <string.h>

#include "analog_link.h"
#include "board.h"
#include "clock.h"
#include "config.h"
#include "stm32f4.h"
#include "usart.h"

/* Port constants (set by the build; these defaults are QEMU's model clocks). */
#ifndef DNPU_TIM_CLOCK_HZ
#define DNPU_TIM_CLOCK_HZ 1000000000u      /* QEMU 7.2's stm32f2xx timer: 1 GHz, whatever RCC says */
#endif
#ifndef DNPU_CPU_CLOCK_HZ
#define DNPU_CPU_CLOCK_HZ 168000000u       /* netduinoplus2's SYSCLK (drives SysTick) */
#endif
#ifndef DNPU_PCLK2_HZ
#define DNPU_PCLK2_HZ 84000000u            /* USART1's bus clock (QEMU ignores the baud rate) */
#endif
#ifndef DNPU_PCLK1_HZ
#define DNPU_PCLK1_HZ 42000000u            /* USART2's bus clock */
#endif
#define LINK_BAUD 115200u
#define WAKEUP_HZ 1000u
#define RX_AWAKE_TICKS (2u * CLOCK_TICKS_PER_S / 1000u)   /* 2 ms */

/* A full RESULT frame must fit the transmit queue on top of DNPU_TX_HIGH, 8 at a time (stream()),
 * plus one reply of any size. */
#define RESULT_FRAME_MAX (DNPU_HEADER_SIZE + DNPU_RESULT_HEAD_SIZE + 4u * DNPU_MAX_BLOCK_SAMPLES + DNPU_CRC_SIZE)
_Static_assert(DNPU_TX_CAP >= DNPU_TX_HIGH + 8u * RESULT_FRAME_MAX + DNPU_FRAME_MAX, "DNPU_TX_CAP too small");
_Static_assert(DNPU_MAX_BLOCK_SAMPLES <= (DNPU_BOARD_MAX_PAYLOAD - DNPU_RESULT_HEAD_SIZE) / 4, "block too big");

static analog_link analog_;
static dnpu_board board;                  /* every buffer of the firmware: static storage */
static char serial_[64];
static char device_json_[QCFG_MAX_SIZE];

/* ---- HAL ---------------------------------------------------------------------------------- */

static size_t link_read(void *ctx, uint8_t *buf, size_t max) { (void)ctx; return usart_read(buf, max); }
static size_t link_write(void *ctx, const uint8_t *buf, size_t n) { (void)ctx; return usart_write(buf, n); }
/* A UART has no carrier: the host counts as attached always (silence is the watchdog's job). */
static bool link_is_open(void *ctx) { (void)ctx; return true; }
static uint64_t clock_ticks(void *ctx) { (void)ctx; return clock_now(); }
static void dac_stage(void *ctx, unsigned ch, uint16_t code) { (void)ctx; analog_link_stage(&analog_, ch, code); }
static void dac_latch(void *ctx) { (void)ctx; analog_link_latch(&analog_); }
static void dac_force_zero(void *ctx) { (void)ctx; analog_link_force_zero(&analog_); }
static bool adc_read(void *ctx, int32_t *code) { (void)ctx; return analog_link_adc_read(&analog_, code); }

static void watchdog_start(void)
{
    IWDG_KR = 0xCCCCu;                    /* start (LSI 32 kHz) */
    IWDG_KR = 0x5555u;                    /* unlock PR/RLR */
    IWDG_PR = 3u;                         /* /32: 1 kHz */
    IWDG_RLR = 1000u;                     /* about 1 s */
    IWDG_KR = 0xAAAAu;
}

static void watchdog_kick(void *ctx)
{
    (void)ctx;
    IWDG_KR = 0xAAAAu;
}

/* ---- configuration ----------------------------------------------------------------------- */

static void defaults(dnpu_config *c)
{
    dnpu_config_defaults(c);
    c->fifo_blocks = DNPU_MAX_FIFO_BLOCKS;
    c->serial = "QEMU-NOCONFIG";
}

/* The n NUL-terminated JSON objects of the block, copied into device_json_ and pointed at by
 * json[0..n); false when they do not all end within the block. */
static bool load_device_json(const qcfg *q, unsigned n, const char *json[QCFG_MAX_DEVICES])
{
    size_t json_max = q->size - sizeof(qcfg), at = 0;
    memcpy(device_json_, q->device_json, json_max);
    for (unsigned k = 0; k < n; k++) {
        const char *end = at < json_max ? memchr(device_json_ + at, 0, json_max - at) : NULL;
        if (end == NULL)
            return false;
        json[k] = device_json_ + at;
        at = (size_t)(end - device_json_) + 1;
    }
    return true;
}

/* Take the launcher's block when it is valid (else keep the defaults); bounded by QCFG_MAX_SIZE.
 * Returns ANALOG_CONFIG_ADOPTED, or the code of why the block was not taken. */
static unsigned load_config(dnpu_config *c)
{
    const qcfg *q = (const qcfg *)(uintptr_t)QCFG_ADDR;
    if (q->magic != QCFG_MAGIC)
        return ANALOG_CONFIG_NO_BLOCK;
    if (q->version != QCFG_VERSION)
        return ANALOG_CONFIG_VERSION;
    if (q->size <= sizeof(qcfg) || q->size > QCFG_MAX_SIZE)
        return ANALOG_CONFIG_SIZE;
    if (q->n_devices < 1 || q->n_devices > QCFG_MAX_DEVICES)
        return ANALOG_CONFIG_DEVICES;
    if (memchr(q->serial, 0, sizeof q->serial) == NULL)
        return ANALOG_CONFIG_SERIAL;
    const char *json[QCFG_MAX_DEVICES];
    if (!load_device_json(q, q->n_devices, json))
        return ANALOG_CONFIG_JSON;
    memcpy(c->device_json, json, q->n_devices * sizeof json[0]);
    c->n_devices = q->n_devices;
    c->seed = q->seed;
    c->dac_bits = q->dac_bits;
    c->adc_bits = q->adc_bits;
    c->fifo_blocks = q->fifo_blocks;
    c->realtime = q->realtime != 0;
    memcpy(c->dac_span_v, q->dac_span_v, sizeof c->dac_span_v);
    memcpy(c->adc_span_na, q->adc_span_na, sizeof c->adc_span_na);
    memcpy(c->limits_v, q->limits_v, sizeof c->limits_v);
    c->max_slew_v_per_s = q->max_slew_v_per_s;
    c->watchdog_s = q->watchdog_s;
    c->sample_period_s = q->sample_period_s;
    memcpy(serial_, q->serial, sizeof serial_);
    c->serial = serial_;
    return ANALOG_CONFIG_ADOPTED;
}

/* ---- main loop ---------------------------------------------------------------------------- */

int main(void)
{
    static dnpu_config cfg;
    defaults(&cfg);
    unsigned config = load_config(&cfg);
    cfg.firmware = "dnpu-bench-qemu 0.1.0";
    cfg.model = "DNPU-BENCH-QEMU-STM32F405";

    clock_init(DNPU_TIM_CLOCK_HZ);
    usart_init(DNPU_PCLK2_HZ, LINK_BAUD);
    analog_link_init(&analog_, &board, DNPU_PCLK1_HZ);
    static const dnpu_hal hal = {
        .ctx = NULL, .link_read = link_read, .link_write = link_write, .link_is_open = link_is_open,
        .clock_ticks = clock_ticks, .ticks_per_s = CLOCK_TICKS_PER_S, .dac_stage = dac_stage,
        .dac_latch = dac_latch, .dac_force_zero = dac_force_zero, .adc_read = adc_read,
        .watchdog_kick = watchdog_kick,
    };
    if (dnpu_board_init(&board, &cfg, &hal) < 0) {
        cfg.fifo_blocks = DNPU_MAX_FIFO_BLOCKS;    /* a block that does not fit: fall back */
        if (config == ANALOG_CONFIG_ADOPTED)
            config = ANALOG_CONFIG_FIFO;
        if (dnpu_board_init(&board, &cfg, &hal) < 0) {
            analog_link_announce(&analog_, ANALOG_CONFIG_INIT, 0u);
            for (;;)
                wait_for_interrupt();
        }
    }
    analog_link_announce(&analog_, config, config == ANALOG_CONFIG_ADOPTED || config == ANALOG_CONFIG_FIFO
                                               ? ((const qcfg *)(uintptr_t)QCFG_ADDR)->size : 0u);
    watchdog_start();
    wakeup_init(DNPU_CPU_CLOCK_HZ, WAKEUP_HZ);

    uint32_t rx_seen = 0;
    uint64_t rx_at = 0;
    for (;;) {
        int busy = dnpu_board_step(&board);
        uint64_t now = clock_now();
        if (usart_rx_count() != rx_seen) {
            rx_seen = usart_rx_count();
            rx_at = now;
        }
        /* Stay awake while bytes stream in (QEMU hands the USART one byte at a time, and waking
         * a halted vCPU for each costs more than polling for a moment) and while a real-time
         * sweep runs: its blocks fall due on the counter, not on an interrupt (the stm32f4 port
         * has a timer for that), so the 1 kHz wake-up alone would convert them up to 1 ms late. */
        bool sample_clock_running = board.cfg.realtime && board.sweep.exists && board.sweep.running;
        if (busy & DNPU_BUSY_CONVERT || now - rx_at < RX_AWAKE_TICKS || sample_clock_running)
            continue;
        irq_disable();                    /* a byte arriving now still ends the WFI */
        if (!usart_rx_pending())
            wait_for_interrupt();
        irq_enable();
    }
}
