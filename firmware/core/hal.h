/* The one struct through which the core reaches hardware (grblHAL style).
 *
 * A port fills a dnpu_hal and hands it to dnpu_board_init(); the core calls nothing else that
 * touches hardware. Every function gets the port's `ctx` back. None of them may block. */
#ifndef DNPU_HAL_H
#define DNPU_HAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dnpu_hal {
    void *ctx;

    /* Link: copy up to `max` received bytes into `buf`, return how many (0: none now). */
    size_t (*link_read)(void *ctx, uint8_t *buf, size_t max);
    /* Link: send up to `n` bytes, return how many were accepted (0: try again later). */
    size_t (*link_write)(void *ctx, const uint8_t *buf, size_t n);
    /* Link: whether a host is attached (USB DTR, a pty's peer); a true -> false edge is a port
     * close (ramp to 0 V and latch). */
    bool (*link_is_open)(void *ctx);

    /* Clock: a free-running 64-bit counter, the core's only source of time. */
    uint64_t (*clock_ticks)(void *ctx);
    uint64_t ticks_per_s;

    /* DACs: stage a code on channel 0..7K-1 (device k's electrode e is channel 7k + e; not yet on
     * the pin), then latch all staged codes at once; force_zero drives every output to 0 V at once
     * (power-up). */
    void (*dac_stage)(void *ctx, unsigned channel, uint16_t code);
    void (*dac_latch)(void *ctx);
    void (*dac_force_zero)(void *ctx);

    /* ADC: one conversion of every device's readout for the latched outputs, codes[0..K) for the
     * board's K devices (simultaneous sampling); false when the analog side failed (the sweep
     * then ends with DEVICE). */
    bool (*adc_read)(void *ctx, int32_t *codes);

    /* The hardware watchdog (resets the MCU if the main loop stops). */
    void (*watchdog_kick)(void *ctx);
} dnpu_hal;

#endif
