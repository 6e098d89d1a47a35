#include "clock.h"

#include "regs.h"

#define HSE_HZ 8000000u
#define HSE_TIMEOUT 500000u                /* polls; HSE starts in well under 1 ms */
#define PLL_TIMEOUT 1000000u               /* polls; the PLL locks in well under 1 ms */
/* VCO input 1 MHz (M = source MHz), VCO 336 MHz (N), SYSCLK = VCO / 2 (P), USB = VCO / 7 (Q). */
#define PLL_N 336u
#define PLL_P_DIV2 0u
#define PLL_Q 7u
#define FLASH_WAIT_STATES 5u               /* RM0090 table 10: 150 < HCLK <= 168 MHz at 2.7-3.6 V */

static uint32_t last_cnt;
static uint64_t high;

static bool hse_start(void)
{
    RCC_CR |= RCC_CR_HSEBYP;               /* the ST-LINK's MCO drives OSC_IN: an external clock */
    RCC_CR |= RCC_CR_HSEON;
    for (uint32_t i = 0; i < HSE_TIMEOUT; i++)
        if (RCC_CR & RCC_CR_HSERDY)
            return true;
    RCC_CR &= ~(RCC_CR_HSEON | RCC_CR_HSEBYP);
    return false;
}

static void time_base_init(void)
{
    rcc_enable(&RCC_APB1ENR, RCC_APB1ENR_TIM5EN);
    TIM5->CR1 = 0;
    TIM5->DIER = 0;
    TIM5->PSC = 0;                         /* 84 MHz */
    TIM5->ARR = 0xFFFFFFFFu;
    TIM5->EGR = TIM_EGR_UG;
    TIM5->SR = 0;
    TIM5->CR1 = TIM_CR1_CEN;
    last_cnt = TIM5->CNT;
}

static bool wait_set(volatile uint32_t *reg, uint32_t mask, uint32_t value)
{
    for (uint32_t i = 0; i < PLL_TIMEOUT; i++)
        if ((*reg & mask) == value)
            return true;
    return false;
}

clock_source clock_init(void)
{
    rcc_enable(&RCC_APB1ENR, RCC_APB1ENR_PWREN);
    PWR_CR |= PWR_CR_VOS_SCALE1;           /* 168 MHz needs voltage scale 1 (no over-drive) */
    bool hse = hse_start();
    uint32_t m = hse ? HSE_HZ / 1000000u : 16u;
    RCC_CR &= ~RCC_CR_PLLON;
    while (RCC_CR & RCC_CR_PLLRDY) {
    }
    RCC_PLLCFGR = (RCC_PLLCFGR & ~RCC_PLLCFGR_FIELDS)   /* reserved bits keep their reset values */
                  | m | (PLL_N << 6) | (PLL_P_DIV2 << 16) | (hse ? RCC_PLLCFGR_SRC_HSE : 0u) | (PLL_Q << 24);
    RCC_CR |= RCC_CR_PLLON;
    if (!wait_set(&RCC_CR, RCC_CR_PLLRDY, RCC_CR_PLLRDY))
        return CLOCK_FAILED;               /* still on the 16 MHz HSI */
    FLASH_ACR = FLASH_WAIT_STATES | FLASH_ACR_PRFTEN | FLASH_ACR_ICEN | FLASH_ACR_DCEN;
    while ((FLASH_ACR & 0xFu) != FLASH_WAIT_STATES) {
    }
    RCC_CFGR = (RCC_CFGR & ~0xFCF0u) | RCC_CFGR_PPRE1_DIV4 | RCC_CFGR_PPRE2_DIV2;  /* HPRE /1 */
    RCC_CFGR = (RCC_CFGR & ~3u) | RCC_CFGR_SW_PLL;
    if (!wait_set(&RCC_CFGR, RCC_CFGR_SWS_MASK, RCC_CFGR_SWS_PLL))
        return CLOCK_FAILED;
    time_base_init();
    return hse ? CLOCK_HSE : CLOCK_HSI;
}

uint64_t clock_now(void)
{
    uint32_t cnt = TIM5->CNT;
    if (cnt < last_cnt)
        high += (uint64_t)1 << 32;
    last_cnt = cnt;
    return high | cnt;
}

void clock_delay_us(uint32_t us)
{
    uint32_t t0 = TIM5->CNT, n = us * (CLOCK_TICKS_PER_S / 1000000u);
    while (TIM5->CNT - t0 < n) {
    }
}

void systick_handler(void);
void systick_handler(void)
{
}

void wakeup_init(uint32_t rate_hz)
{
    SYST_CSR = 0;
    SCB_SHPR3 = (SCB_SHPR3 & 0x00FFFFFFu) | (0xF0u << 24);   /* the lowest priority */
    SYST_RVR = CLOCK_SYSCLK_HZ / rate_hz - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u;                         /* processor clock, interrupt, enable */
}

void watchdog_start(void)
{
    DBGMCU_APB1_FZ |= DBGMCU_IWDG_STOP;    /* a debugger halting the core does not reset it */
    IWDG_KR = 0xCCCCu;                     /* start: from now on only a reset stops it */
    IWDG_KR = 0x5555u;                     /* unlock PR and RLR */
    IWDG_PR = 3u;                          /* LSI / 32 */
    IWDG_RLR = 1000u;
    while (IWDG_SR & 3u) {                 /* PVU, RVU: the values reached the LSI domain */
    }
    IWDG_KR = 0xAAAAu;
}

void watchdog_kick(void)
{
    IWDG_KR = 0xAAAAu;
}
