/* A USB CDC ACM device (one virtual serial port) on the OTG_FS core, PA11 (DM) / PA12 (DP).
 * Enumeration and control requests run in the OTG_FS interrupt; bulk OUT lands in a ring buffer
 * (the endpoint NAKs while the ring has no room for another transfer), bulk IN is written
 * straight into the endpoint's 512-byte FIFO. Nothing here blocks. */
#ifndef DNPU_STM32F4_USB_CDC_H
#define DNPU_STM32F4_USB_CDC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define USB_VID 0x1209u                     /* pid.codes: 0x0001 is its test PID (a lab's */
#define USB_PID 0x0001u                     /* own build should get its own, see docs/board.md) */

/* `serial`: the iSerialNumber string (ASCII, at most 24 characters; copied). */
void usb_cdc_init(const char *serial);
size_t usb_cdc_read(uint8_t *buf, size_t max);
size_t usb_cdc_write(const uint8_t *buf, size_t n);
/* Configured by the host and DTR set (a terminal or pyserial holding the port open). */
bool usb_cdc_is_open(void);
/* Bytes are waiting in the receive ring. */
bool usb_cdc_rx_pending(void);

#endif
