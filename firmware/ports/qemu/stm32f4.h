/* The few STM32F4 registers this port touches (RM0090 layout). The same blocks are modelled by
 * QEMU's netduinoplus2 (STM32F405), so these drivers also serve a Nucleo-F4 board. */
#ifndef DNPU_STM32F4_H
#define DNPU_STM32F4_H

#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* RCC (clock enables; QEMU leaves RCC unimplemented and ignores the writes) */
#define RCC_BASE      0x40023800u
#define RCC_AHB1ENR   REG32(RCC_BASE + 0x30u)
#define RCC_APB1ENR   REG32(RCC_BASE + 0x40u)
#define RCC_APB2ENR   REG32(RCC_BASE + 0x44u)
#define RCC_AHB1ENR_GPIOAEN  (1u << 0)
#define RCC_APB1ENR_TIM2EN   (1u << 0)
#define RCC_APB1ENR_USART2EN (1u << 17)
#define RCC_APB2ENR_USART1EN (1u << 4)

/* GPIO (pin muxing: USART1 on PA9/PA10, USART2 on PA2/PA3, alternate function 7) */
#define GPIOA_BASE    0x40020000u
#define GPIO_MODER(b) REG32((b) + 0x00u)
#define GPIO_AFRL(b)  REG32((b) + 0x20u)
#define GPIO_AFRH(b)  REG32((b) + 0x24u)

/* USART (RM0090 section 30.6) */
typedef struct usart_regs {
    volatile uint32_t SR, DR, BRR, CR1, CR2, CR3, GTPR;
} usart_regs;
#define USART1 ((usart_regs *)(uintptr_t)0x40011000u)
#define USART2 ((usart_regs *)(uintptr_t)0x40004400u)   /* the analog link (analog_link.c) */
#define USART1_IRQN 37u
#define USART_SR_ORE  (1u << 3)
#define USART_SR_RXNE (1u << 5)
#define USART_SR_TC   (1u << 6)
#define USART_SR_TXE  (1u << 7)
#define USART_CR1_RE     (1u << 2)
#define USART_CR1_TE     (1u << 3)
#define USART_CR1_RXNEIE (1u << 5)
#define USART_CR1_TXEIE  (1u << 7)
#define USART_CR1_UE     (1u << 13)

/* General-purpose timer TIM2 (32-bit; RM0090 section 18.4) */
typedef struct tim_regs {
    volatile uint32_t CR1, CR2, SMCR, DIER, SR, EGR, CCMR1, CCMR2, CCER, CNT, PSC, ARR;
} tim_regs;
#define TIM2 ((tim_regs *)(uintptr_t)0x40000000u)
#define TIM_CR1_CEN (1u << 0)
#define TIM_EGR_UG  (1u << 0)

/* Independent watchdog (not modelled by QEMU 7.2: writes are ignored there) */
#define IWDG_BASE 0x40003000u
#define IWDG_KR   REG32(IWDG_BASE + 0x00u)
#define IWDG_PR   REG32(IWDG_BASE + 0x04u)
#define IWDG_RLR  REG32(IWDG_BASE + 0x08u)

/* Cortex-M4 core: SysTick and NVIC */
#define SYST_CSR  REG32(0xE000E010u)
#define SYST_RVR  REG32(0xE000E014u)
#define SYST_CVR  REG32(0xE000E018u)
#define NVIC_ISER(n) REG32(0xE000E100u + 4u * (n))
#define NVIC_ICER(n) REG32(0xE000E180u + 4u * (n))

static inline void irq_disable(void) { __asm volatile("cpsid i" ::: "memory"); }
static inline void irq_enable(void) { __asm volatile("cpsie i" ::: "memory"); }
static inline void wait_for_interrupt(void) { __asm volatile("wfi" ::: "memory"); }
static inline void nvic_enable(unsigned irq) { NVIC_ISER(irq / 32u) = 1u << (irq % 32u); }
static inline void nvic_disable(unsigned irq)
{
    NVIC_ICER(irq / 32u) = 1u << (irq % 32u);
    __asm volatile("dsb\n\tisb" ::: "memory");
}

#endif
