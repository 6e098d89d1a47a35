/* The clock tree (HSE 8 MHz -> PLL -> 168 MHz SYSCLK, 48 MHz USB), the core's time base (TIM5,
 * 32 bits at the 84 MHz APB1 timer clock, extended to 64 bits), the SysTick wake-up and the IWDG. */
#ifndef DNPU_STM32F4_CLOCK_H
#define DNPU_STM32F4_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

#define CLOCK_SYSCLK_HZ 168000000u        /* AHB = SYSCLK */
#define CLOCK_PCLK1_HZ   42000000u        /* APB1 = AHB / 4 (max 42 MHz) */
#define CLOCK_PCLK2_HZ   84000000u        /* APB2 = AHB / 2 (max 84 MHz) */
#define CLOCK_TIM_APB1_HZ 84000000u       /* timers on APB1 run at 2 x PCLK1 (prescaler != 1) */
#define CLOCK_TICKS_PER_S CLOCK_TIM_APB1_HZ

/* CLOCK_HSE: the PLL runs from the 8 MHz HSE (ST-LINK MCO); CLOCK_HSI: the HSE did not start and
 * the PLL runs from the 16 MHz HSI (same frequencies, but HSI's 1 % is outside USB's 0.25 %);
 * CLOCK_FAILED: the PLL did not lock (nothing else may run: the caller parks). */
typedef enum { CLOCK_FAILED, CLOCK_HSE, CLOCK_HSI } clock_source;
clock_source clock_init(void);
/* The 64-bit tick counter. Main context only; it must run at least once per 2^32 ticks (51 s):
 * the main loop calls it every pass and the IWDG resets a loop that stops for 1 s. */
uint64_t clock_now(void);
void clock_delay_us(uint32_t us);
/* A periodic SysTick interrupt that only wakes the core from WFI. */
void wakeup_init(uint32_t rate_hz);
/* IWDG on the ~32 kHz LSI: /32 prescaler, 1000 counts: about 1 s (0.68..1.9 s over LSI's spread). */
void watchdog_start(void);
void watchdog_kick(void);

#endif
