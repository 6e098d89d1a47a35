/* The stm32f4 port: the firmware core on a Nucleo-144 STM32F429ZI bench board. Link: USB CDC ACM
 * on the user USB connector (OTG_FS; the host opens /dev/ttyACM0, DTR = attached). Analog: a
 * DAC81408 and an ADS8681 behind a transimpedance amplifier, sampled by TIM3 (analog.h). Time:
 * TIM5 at 84 MHz. The core sleeps in WFI when idle (woken by USB or a 1 kHz SysTick); the IWDG
 * resets the MCU if the main loop stops for about 1 s, and the DAC's CLR pull-down then holds
 * every electrode at 0 V until the firmware runs again. */
#include <stdio.h>
#include <string.h>

#include "analog.h"
#include "board.h"
#include "calib.h"
#include "clock.h"
#include "port_config.h"
#include "regs.h"
#include "usb_cdc.h"

#define WAKEUP_HZ 1000u

/* A full RESULT frame must fit the transmit queue on top of DNPU_TX_HIGH, 8 at a time (the core's
 * stream()), plus one reply of any size; the decoder and replies are sized by the payload this
 * port takes (DNPU_RX_MAX_PAYLOAD, its declared payload). */
#define RESULT_FRAME_MAX (DNPU_HEADER_SIZE + DNPU_RESULT_HEAD_SIZE + 4u * DNPU_MAX_BLOCK_SAMPLES + DNPU_CRC_SIZE)
_Static_assert(DNPU_TX_CAP >= DNPU_TX_HIGH + 8u * RESULT_FRAME_MAX + DNPU_FRAME_MAX, "DNPU_TX_CAP too small");
_Static_assert(DNPU_MAX_BLOCK_SAMPLES <= (DNPU_BOARD_MAX_PAYLOAD - DNPU_RESULT_HEAD_SIZE) / 4, "block too big");

static dnpu_board board;                    /* every buffer of the firmware: static storage */
static char serial_[PORT_SERIAL_CAP];
static char device_json_[PORT_DEVICE_JSON_CAP];

/* ---- HAL ---------------------------------------------------------------------------------- */

static size_t link_read(void *ctx, uint8_t *buf, size_t max) { (void)ctx; return usb_cdc_read(buf, max); }
static size_t link_write(void *ctx, const uint8_t *buf, size_t n) { (void)ctx; return usb_cdc_write(buf, n); }
static bool link_is_open(void *ctx) { (void)ctx; return usb_cdc_is_open(); }
static uint64_t clock_ticks(void *ctx) { (void)ctx; return clock_now(); }
static void dac_stage(void *ctx, unsigned ch, uint16_t code) { (void)ctx; analog_stage(ch, code); }
static void dac_latch(void *ctx) { (void)ctx; analog_latch(); }
static void dac_force_zero(void *ctx) { (void)ctx; analog_force_zero(); }
static bool adc_read(void *ctx, int32_t *code) { (void)ctx; return analog_adc_read(code); }
static void hal_watchdog_kick(void *ctx) { (void)ctx; watchdog_kick(); }

/* ---- configuration ----------------------------------------------------------------------- */

/* The MCU's 96-bit unique ID as 24 hex digits (RM0090 section 39.1). */
static void uid_serial(char *out, size_t cap)
{
    const volatile uint32_t *uid = (const volatile uint32_t *)(uintptr_t)UID_BASE;
    snprintf(out, cap, "%08lX%08lX%08lX", (unsigned long)uid[2], (unsigned long)uid[1], (unsigned long)uid[0]);
}

/* Whether the slew limiter is still moving (then the loop does not sleep: 1 kHz wake-ups would
 * turn the ramp into 10 mV steps). */
static bool ramping(const dnpu_board *b)
{
    double out[DNPU_MAX_CHANNELS];
    dnpu_board_outputs(b, dnpu_board_time(b), out);
    for (unsigned c = 0; c < b->channels; c++)
        if (out[c] != b->ramp.target[c])
            return true;
    return false;
}

/* ---- main loop ---------------------------------------------------------------------------- */

int main(void)
{
    bool iwdg_reset = (RCC_CSR & RCC_CSR_IWDGRSTF) != 0;
    RCC_CSR |= RCC_CSR_RMVF;
    SCB_AIRCR = 0x05FA0000u | (3u << 8);    /* PRIGROUP 3: 16 preemption levels, no subpriority */
    clock_source clk = clock_init();
    if (clk == CLOCK_FAILED) {              /* no valid clocks: hold 0 V (CLR pull-down), retry */
        watchdog_start();                   /* by IWDG reset, about once a second */
        for (;;)
            wait_for_interrupt();
    }
    bool hse = clk == CLOCK_HSE;

    static dnpu_config cfg;
    static analog_cal ac;
    static analog_info info;
    const cal_block *cal = calib_find();
    uid_serial(serial_, sizeof serial_);
    port_configure(&cfg, &ac, cal, serial_);
    analog_init(&ac, &info);                /* the DAC stays in hardware clear (0 V) */
    port_describe(device_json_, &ac, &info, cal, hse, iwdg_reset);
    cfg.device_json[0] = device_json_;

    static const dnpu_hal hal = {
        .ctx = NULL, .link_read = link_read, .link_write = link_write, .link_is_open = link_is_open,
        .clock_ticks = clock_ticks, .ticks_per_s = CLOCK_TICKS_PER_S, .dac_stage = dac_stage,
        .dac_latch = dac_latch, .dac_force_zero = dac_force_zero, .adc_read = adc_read,
        .watchdog_kick = hal_watchdog_kick,
    };
    watchdog_start();
    if (dnpu_board_init(&board, &cfg, &hal) < 0) {
        cfg.device_json[0] = "{\"model\":\"external\"}";   /* an identity too long for its buffer */
        if (dnpu_board_init(&board, &cfg, &hal) < 0)
            for (;;)                        /* the IWDG resets; the CLR pull-down holds 0 V */
                wait_for_interrupt();
    }
    usb_cdc_init(serial_);
    wakeup_init(WAKEUP_HZ);

    for (;;) {
        int busy = dnpu_board_step(&board);
        if ((busy & DNPU_BUSY_CONVERT) || board.sweep.running || ramping(&board))
            continue;
        irq_disable();                      /* an interrupt arriving now still ends the WFI */
        if (!usb_cdc_rx_pending())
            wait_for_interrupt();
        irq_enable();
    }
}
