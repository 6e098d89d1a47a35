/* USART1 as the host link: interrupt-driven receive into a ring buffer, polled transmit. */
#ifndef DNPU_QEMU_USART_H
#define DNPU_QEMU_USART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void usart_init(uint32_t pclk_hz, uint32_t baud);
size_t usart_read(uint8_t *buf, size_t max);
size_t usart_write(const uint8_t *buf, size_t n);
bool usart_rx_pending(void);
uint32_t usart_overruns(void);
uint32_t usart_rx_count(void);        /* bytes received so far (wraps) */

#endif
