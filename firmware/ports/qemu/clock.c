#include "clock.h"

#include "stm32f4.h"

static uint32_t last_cnt;
static uint64_t high;                 /* the counter's wraps, << 32 */

void clock_init(uint32_t tim_clk_hz)
{
    RCC_APB1ENR |= RCC_APB1ENR_TIM2EN;
    TIM2->CR1 = 0;
    TIM2->DIER = 0;
    TIM2->PSC = tim_clk_hz / CLOCK_TICKS_PER_S - 1u;
    TIM2->ARR = 0xFFFFFFFFu;
    TIM2->EGR = TIM_EGR_UG;           /* load PSC now, counter to 0 */
    TIM2->SR = 0;
    TIM2->CR1 = TIM_CR1_CEN;
    last_cnt = TIM2->CNT;
}

uint64_t clock_now(void)
{
    uint32_t cnt = TIM2->CNT;
    if (cnt < last_cnt)
        high += (uint64_t)1 << 32;
    last_cnt = cnt;
    return high | cnt;
}

void systick_handler(void);
void systick_handler(void)
{
}

void wakeup_init(uint32_t cpu_hz, uint32_t rate_hz)
{
    SYST_CSR = 0;
    SYST_RVR = cpu_hz / rate_hz - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u;                    /* processor clock, interrupt, enable */
}
