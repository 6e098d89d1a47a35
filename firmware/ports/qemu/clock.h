/* The board's clock: TIM2 free-running at 1 MHz, extended to 64 bits in software. */
#ifndef DNPU_QEMU_CLOCK_H
#define DNPU_QEMU_CLOCK_H

#include <stdint.h>

#define CLOCK_TICKS_PER_S 1000000u

/* tim_clk_hz: TIM2's input clock (a port constant: QEMU's model runs at 1 GHz whatever the RCC
 * says; silicon from reset: HSI 16 MHz); it must be a multiple of 1 MHz up to 65.536 GHz. */
void clock_init(uint32_t tim_clk_hz);
/* Must be called at least once per 2^32 us (71 min); the main loop calls it every pass. */
uint64_t clock_now(void);
/* A periodic SysTick interrupt that only wakes the core from WFI. */
void wakeup_init(uint32_t cpu_hz, uint32_t rate_hz);

#endif
