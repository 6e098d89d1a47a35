/* The STM32F429 registers this port touches, from RM0090 (rev 19) and the Cortex-M4 TRM. Only
 * what is used; offsets are in bytes from each block's base. */
#ifndef DNPU_STM32F4_REGS_H
#define DNPU_STM32F4_REGS_H

#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* ---- RCC (RM0090 section 6.3) ---- */
#define RCC_BASE      0x40023800u
#define RCC_CR        REG32(RCC_BASE + 0x00u)
#define RCC_PLLCFGR   REG32(RCC_BASE + 0x04u)
#define RCC_CFGR      REG32(RCC_BASE + 0x08u)
#define RCC_AHB1ENR   REG32(RCC_BASE + 0x30u)
#define RCC_AHB2ENR   REG32(RCC_BASE + 0x34u)
#define RCC_APB1ENR   REG32(RCC_BASE + 0x40u)
#define RCC_APB2ENR   REG32(RCC_BASE + 0x44u)
#define RCC_CSR       REG32(RCC_BASE + 0x74u)
#define RCC_CR_HSION    (1u << 0)
#define RCC_CR_HSIRDY   (1u << 1)
#define RCC_CR_HSEON    (1u << 16)
#define RCC_CR_HSERDY   (1u << 17)
#define RCC_CR_HSEBYP   (1u << 18)
#define RCC_CR_PLLON    (1u << 24)
#define RCC_CR_PLLRDY   (1u << 25)
#define RCC_PLLCFGR_SRC_HSE (1u << 22)
#define RCC_PLLCFGR_FIELDS  0x0F437FFFu         /* M, N, P, SRC, Q */
#define RCC_CFGR_SW_PLL   2u
#define RCC_CFGR_SWS_MASK (3u << 2)
#define RCC_CFGR_SWS_PLL  (2u << 2)
#define RCC_CFGR_PPRE1_DIV4 (5u << 10)
#define RCC_CFGR_PPRE2_DIV2 (4u << 13)
#define RCC_AHB1ENR_GPIOAEN (1u << 0)
#define RCC_AHB1ENR_GPIOBEN (1u << 1)
#define RCC_AHB1ENR_GPIOCEN (1u << 2)
#define RCC_AHB2ENR_OTGFSEN (1u << 7)
#define RCC_APB1ENR_TIM3EN  (1u << 1)
#define RCC_APB1ENR_TIM5EN  (1u << 3)
#define RCC_APB1ENR_SPI2EN  (1u << 14)
#define RCC_APB1ENR_PWREN   (1u << 28)
#define RCC_APB2ENR_SPI1EN  (1u << 12)
#define RCC_CSR_IWDGRSTF    (1u << 29)
#define RCC_CSR_RMVF        (1u << 24)

/* ---- PWR, FLASH interface (sections 5.4, 3.9) ---- */
#define PWR_CR        REG32(0x40007000u)
#define PWR_CR_VOS_SCALE1 (3u << 14)
#define FLASH_ACR     REG32(0x40023C00u)
#define FLASH_ACR_PRFTEN (1u << 8)
#define FLASH_ACR_ICEN   (1u << 9)
#define FLASH_ACR_DCEN   (1u << 10)

/* ---- GPIO (section 8.4) ---- */
#define GPIOA_BASE 0x40020000u
#define GPIOB_BASE 0x40020400u
#define GPIOC_BASE 0x40020800u
#define GPIO_MODER(b)   REG32((b) + 0x00u)
#define GPIO_OSPEEDR(b) REG32((b) + 0x08u)
#define GPIO_PUPDR(b)   REG32((b) + 0x0Cu)
#define GPIO_IDR(b)     REG32((b) + 0x10u)
#define GPIO_BSRR(b)    REG32((b) + 0x18u)
#define GPIO_AFR(b, n)  REG32((b) + 0x20u + 4u * (n))   /* n = 0: pins 0..7, 1: pins 8..15 */
enum { GPIO_IN = 0u, GPIO_OUT = 1u, GPIO_AF = 2u, GPIO_ANALOG = 3u };

/* ---- SPI (section 28.5) ---- */
typedef struct spi_regs {
    volatile uint32_t CR1, CR2, SR, DR;
} spi_regs;
#define SPI1 ((spi_regs *)(uintptr_t)0x40013000u)
#define SPI2 ((spi_regs *)(uintptr_t)0x40003800u)
#define SPI_CR1_CPHA (1u << 0)
#define SPI_CR1_CPOL (1u << 1)
#define SPI_CR1_MSTR (1u << 2)
#define SPI_CR1_BR_DIV2 (0u << 3)
#define SPI_CR1_SPE  (1u << 6)
#define SPI_CR1_SSI  (1u << 8)
#define SPI_CR1_SSM  (1u << 9)
#define SPI_CR1_DFF  (1u << 11)           /* 16-bit frames */
#define SPI_SR_RXNE  (1u << 0)
#define SPI_SR_TXE   (1u << 1)
#define SPI_SR_BSY   (1u << 7)

/* ---- general-purpose timers TIM2..TIM5 (section 18.4) ---- */
typedef struct tim_regs {
    volatile uint32_t CR1, CR2, SMCR, DIER, SR, EGR, CCMR1, CCMR2, CCER, CNT, PSC, ARR, RCR,
        CCR1, CCR2, CCR3, CCR4;
} tim_regs;
#define TIM3 ((tim_regs *)(uintptr_t)0x40000400u)
#define TIM5 ((tim_regs *)(uintptr_t)0x40000C00u)
#define TIM_CR1_CEN (1u << 0)
#define TIM_CR1_URS (1u << 2)
#define TIM_CR1_OPM (1u << 3)
#define TIM_DIER_UIE (1u << 0)
#define TIM_SR_UIF   (1u << 0)
#define TIM_EGR_UG   (1u << 0)
#define TIM_CCMR1_OC1M_PWM2 (7u << 4)
#define TIM_CCMR1_OC2M_PWM2 (7u << 12)
#define TIM_CCER_CC1E (1u << 0)
#define TIM_CCER_CC1P (1u << 1)
#define TIM_CCER_CC2E (1u << 4)

/* ---- independent watchdog (section 19.4), debug freeze (section 38.16) ---- */
#define IWDG_BASE 0x40003000u
#define IWDG_KR   REG32(IWDG_BASE + 0x00u)
#define IWDG_PR   REG32(IWDG_BASE + 0x04u)
#define IWDG_RLR  REG32(IWDG_BASE + 0x08u)
#define IWDG_SR   REG32(IWDG_BASE + 0x0Cu)
#define DBGMCU_APB1_FZ REG32(0xE0042008u)
#define DBGMCU_IWDG_STOP (1u << 12)

/* ---- unique device ID (section 39.1) ---- */
#define UID_BASE 0x1FFF7A10u

/* ---- USB OTG FS (section 34.16) ---- */
#define OTG_BASE 0x50000000u
#define OTG_GOTGCTL  REG32(OTG_BASE + 0x000u)
#define OTG_GAHBCFG  REG32(OTG_BASE + 0x008u)
#define OTG_GUSBCFG  REG32(OTG_BASE + 0x00Cu)
#define OTG_GRSTCTL  REG32(OTG_BASE + 0x010u)
#define OTG_GINTSTS  REG32(OTG_BASE + 0x014u)
#define OTG_GINTMSK  REG32(OTG_BASE + 0x018u)
#define OTG_GRXSTSP  REG32(OTG_BASE + 0x020u)
#define OTG_GRXFSIZ  REG32(OTG_BASE + 0x024u)
#define OTG_DIEPTXF0 REG32(OTG_BASE + 0x028u)
#define OTG_GCCFG    REG32(OTG_BASE + 0x038u)
#define OTG_DIEPTXF(n) REG32(OTG_BASE + 0x104u + 4u * ((n) - 1u))
#define OTG_DCFG     REG32(OTG_BASE + 0x800u)
#define OTG_DCTL     REG32(OTG_BASE + 0x804u)
#define OTG_DSTS     REG32(OTG_BASE + 0x808u)
#define OTG_DIEPMSK  REG32(OTG_BASE + 0x810u)
#define OTG_DOEPMSK  REG32(OTG_BASE + 0x814u)
#define OTG_DAINT    REG32(OTG_BASE + 0x818u)
#define OTG_DAINTMSK REG32(OTG_BASE + 0x81Cu)
#define OTG_DIEPCTL(n)  REG32(OTG_BASE + 0x900u + 0x20u * (n))
#define OTG_DIEPINT(n)  REG32(OTG_BASE + 0x908u + 0x20u * (n))
#define OTG_DIEPTSIZ(n) REG32(OTG_BASE + 0x910u + 0x20u * (n))
#define OTG_DTXFSTS(n)  REG32(OTG_BASE + 0x918u + 0x20u * (n))
#define OTG_DOEPCTL(n)  REG32(OTG_BASE + 0xB00u + 0x20u * (n))
#define OTG_DOEPINT(n)  REG32(OTG_BASE + 0xB08u + 0x20u * (n))
#define OTG_DOEPTSIZ(n) REG32(OTG_BASE + 0xB10u + 0x20u * (n))
#define OTG_PCGCCTL  REG32(OTG_BASE + 0xE00u)
#define OTG_FIFO(n)  REG32(OTG_BASE + 0x1000u + 0x1000u * (n))

#define OTG_GAHBCFG_GINTMSK (1u << 0)
#define OTG_GUSBCFG_PHYSEL  (1u << 6)
#define OTG_GUSBCFG_TRDT(x) ((uint32_t)(x) << 10)
#define OTG_GUSBCFG_FDMOD   (1u << 30)
#define OTG_GRSTCTL_CSRST   (1u << 0)
#define OTG_GRSTCTL_RXFFLSH (1u << 4)
#define OTG_GRSTCTL_TXFFLSH (1u << 5)
#define OTG_GRSTCTL_TXFNUM_ALL (0x10u << 6)
#define OTG_GRSTCTL_AHBIDL  (1u << 31)
#define OTG_GINT_RXFLVL   (1u << 4)
#define OTG_GINT_USBSUSP  (1u << 11)
#define OTG_GINT_USBRST   (1u << 12)
#define OTG_GINT_ENUMDNE  (1u << 13)
#define OTG_GINT_IEPINT   (1u << 18)
#define OTG_GINT_OEPINT   (1u << 19)
#define OTG_GINT_WKUPINT  (1u << 31)
#define OTG_GCCFG_PWRDWN     (1u << 16)
#define OTG_GCCFG_NOVBUSSENS (1u << 21)
#define OTG_DCFG_DSPD_FS  3u
#define OTG_DCFG_DAD(a)   ((uint32_t)(a) << 4)
#define OTG_DCFG_DAD_MASK (0x7Fu << 4)
#define OTG_DCTL_SDIS     (1u << 1)
#define OTG_DCTL_CGINAK   (1u << 8)
#define OTG_EPCTL_USBAEP  (1u << 15)
#define OTG_EPCTL_EPTYP_BULK (2u << 18)
#define OTG_EPCTL_EPTYP_INTR (3u << 18)
#define OTG_EPCTL_STALL   (1u << 21)
#define OTG_EPCTL_TXFNUM(n) ((uint32_t)(n) << 22)
#define OTG_EPCTL_CNAK    (1u << 26)
#define OTG_EPCTL_SNAK    (1u << 27)
#define OTG_EPCTL_SD0PID  (1u << 28)
#define OTG_EPCTL_EPDIS   (1u << 30)
#define OTG_EPCTL_EPENA   (1u << 31)
#define OTG_EPINT_XFRC    (1u << 0)
#define OTG_DOEPINT_STUP  (1u << 3)
#define OTG_TSIZ_PKTCNT(n) ((uint32_t)(n) << 19)
#define OTG_DOEPTSIZ0_STUPCNT3 (3u << 29)
#define OTG_RXSTS_EPNUM(s)  ((s) & 0xFu)
#define OTG_RXSTS_BCNT(s)   (((s) >> 4) & 0x7FFu)
#define OTG_RXSTS_PKTSTS(s) (((s) >> 17) & 0xFu)
enum { OTG_PKTSTS_OUT_DATA = 2u, OTG_PKTSTS_SETUP_DATA = 6u };

/* ---- Cortex-M4 core: SysTick, NVIC, SCB (ARMv7-M ARM B3) ---- */
#define SYST_CSR  REG32(0xE000E010u)
#define SYST_RVR  REG32(0xE000E014u)
#define SYST_CVR  REG32(0xE000E018u)
#define NVIC_ISER(n) REG32(0xE000E100u + 4u * (n))
#define NVIC_IPR8(irq) (*(volatile uint8_t *)(uintptr_t)(0xE000E400u + (irq)))
#define SCB_CPACR REG32(0xE000ED88u)
#define SCB_AIRCR REG32(0xE000ED0Cu)
#define SCB_SHPR3 REG32(0xE000ED20u)

/* IRQ numbers (RM0090 table 62) */
#define TIM3_IRQN   29u
#define OTG_FS_IRQN 67u

static inline void irq_disable(void) { __asm volatile("cpsid i" ::: "memory"); }
static inline void irq_enable(void) { __asm volatile("cpsie i" ::: "memory"); }
static inline void wait_for_interrupt(void) { __asm volatile("wfi" ::: "memory"); }
static inline void nvic_enable(unsigned irq, uint8_t prio)
{
    NVIC_IPR8(irq) = prio;                /* the F4 implements the top 4 bits */
    NVIC_ISER(irq / 32u) = 1u << (irq % 32u);
}

/* A pin's mode, speed (3: very high) and alternate function in one call. */
static inline void gpio_pin(uint32_t port, unsigned pin, uint32_t mode, unsigned af)
{
    GPIO_MODER(port) = (GPIO_MODER(port) & ~(3u << (2u * pin))) | (mode << (2u * pin));
    GPIO_OSPEEDR(port) |= 3u << (2u * pin);
    GPIO_AFR(port, pin / 8u) = (GPIO_AFR(port, pin / 8u) & ~(0xFu << (4u * (pin % 8u))))
                               | ((uint32_t)af << (4u * (pin % 8u)));
}
/* Enable a peripheral clock and read it back: the errata's delay before the first access. */
static inline void rcc_enable(volatile uint32_t *enr, uint32_t bits)
{
    *enr |= bits;
    (void)*enr;
    __asm volatile("dsb" ::: "memory");
}

static inline void gpio_set(uint32_t port, unsigned pin) { GPIO_BSRR(port) = 1u << pin; }
static inline void gpio_clear(uint32_t port, unsigned pin) { GPIO_BSRR(port) = 1u << (pin + 16u); }

#endif
