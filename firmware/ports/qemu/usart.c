#include "usart.h"

#include "stm32f4.h"

/* Single producer (the RX interrupt) and single consumer (the main loop). When the ring is full
 * the interrupt masks itself in the NVIC and leaves the byte in DR: the USART then holds off
 * (QEMU stops delivering; silicon overruns, counted), and usart_read() unmasks it once it has made
 * room. (Masking RXNEIE instead would not do: QEMU's model keeps its IRQ line raised.) */
#define RX_RING 2048u
_Static_assert((RX_RING & (RX_RING - 1u)) == 0, "RX_RING must be a power of two");

static uint8_t rx_ring[RX_RING];
static volatile uint32_t rx_head, rx_tail;   /* head: written by the ISR; tail: by usart_read */
static volatile uint32_t overruns;
static volatile bool rx_held;         /* the RX interrupt is masked until there is room */

void usart_init(uint32_t pclk_hz, uint32_t baud)
{
    RCC_AHB1ENR |= RCC_AHB1ENR_GPIOAEN;
    RCC_APB2ENR |= RCC_APB2ENR_USART1EN;
    /* PA9 (TX) and PA10 (RX): alternate function 7 */
    GPIO_MODER(GPIOA_BASE) = (GPIO_MODER(GPIOA_BASE) & ~(0xFu << 18)) | (0xAu << 18);
    GPIO_AFRH(GPIOA_BASE) = (GPIO_AFRH(GPIOA_BASE) & ~(0xFFu << 4)) | (0x77u << 4);
    USART1->CR1 = 0;
    USART1->BRR = (pclk_hz + baud / 2u) / baud;   /* oversampling by 16: mantissa.fraction */
    USART1->CR2 = 0;
    USART1->CR3 = 0;
    USART1->CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE | USART_CR1_RXNEIE;
    nvic_enable(USART1_IRQN);
}

void usart1_irq_handler(void);
void usart1_irq_handler(void)
{
    uint32_t sr = USART1->SR;
    if (sr & USART_SR_ORE)
        overruns++;
    while (sr & (USART_SR_RXNE | USART_SR_ORE)) {
        uint32_t head = rx_head;
        if (head - rx_tail >= RX_RING) {
            nvic_disable(USART1_IRQN);             /* full: leave the byte in DR */
            rx_held = true;
            break;
        }
        rx_ring[head % RX_RING] = (uint8_t)USART1->DR; /* reading DR also clears ORE */
        rx_head = head + 1u;
        sr = USART1->SR;
    }
    /* transmit: TXE only wakes the main loop (which refills DR); the QEMU model never raises it */
    if ((USART1->CR1 & USART_CR1_TXEIE) && (sr & USART_SR_TXE))
        USART1->CR1 &= ~USART_CR1_TXEIE;
}

size_t usart_read(uint8_t *buf, size_t max)
{
    uint32_t tail = rx_tail, head = rx_head;
    size_t n = 0;
    while (n < max && tail != head)
        buf[n++] = rx_ring[tail++ % RX_RING];
    rx_tail = tail;
    if (n > 0 && rx_held) {
        rx_held = false;
        nvic_enable(USART1_IRQN);                  /* room again: take the byte left in DR */
    }
    return n;
}

bool usart_rx_pending(void)
{
    return rx_head != rx_tail || (USART1->SR & USART_SR_RXNE);
}

size_t usart_write(const uint8_t *buf, size_t n)
{
    size_t i = 0;
    while (i < n && (USART1->SR & USART_SR_TXE))
        USART1->DR = buf[i++];
    if (i < n) {                                   /* DR busy: wake on TXE (silicon) */
        irq_disable();
        USART1->CR1 |= USART_CR1_TXEIE;
        irq_enable();
    }
    return i;
}

uint32_t usart_rx_count(void)
{
    return rx_head;
}

uint32_t usart_overruns(void)
{
    return overruns;
}
