/* The qemu port's analog side: the DAC codes are staged and latched here, and each block of
 * conversions is forwarded over USART2 (QEMU's second serial port) to the host-side analog
 * emulator (firmware_sim/qemu_analog.py), which runs the board's device for the seed: the DAC
 * errors, the virtual DNPU (or the null / linear test devices) and the ADC, exactly as the Python
 * firmware does. A seed therefore means the same chip on every firmware.
 *
 * The link carries one exchange per block (little-endian; firmware_sim/qemu_analog.py mirrors
 * these layouts):
 *   guest -> host  REQUEST  'B' u8 oversample, u16 n, u32 period_ns, u32 block,
 *                           u64 now_ticks, u64 due_ticks, then n rows of 7K u16 DAC codes
 *   host -> guest  REPLY    'R' u8 ok, u16 n, then (ok only) n x K i32 ADC codes, sample-major
 * for the board's K devices (both sides know K from the boot configuration block).
 * Once, at boot, before any block:
 *   guest -> host  BOOT     'C' u8 config (0: the launcher's block adopted, else why it was not:
 *                           the ANALOG_CONFIG_* codes), u16 n_devices, u32 the adopted block's size
 * so the launcher knows the image serves the board it packed (a stale image or a block it
 * refuses would otherwise boot on its defaults as another board).
 * `now_ticks` is the board clock (since boot) when the block's conversion began and `due_ticks`
 * when its sample clock made it due (0: not a real-time sweep); the emulator keeps them, so the
 * bench can report the sample clock's jitter. The core converts a block row by row: the first
 * conversion of a sweep block sends the whole block ahead; a latched row that is not the next row
 * of the block sent ahead goes on its own (n = 1). Without a reply within ANALOG_REPLY_TIMEOUT_S
 * the conversion fails (the sweep ends with DEVICE). */
#ifndef DNPU_QEMU_ANALOG_LINK_H
#define DNPU_QEMU_ANALOG_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include "board.h"

#define ANALOG_BAUD 115200u             /* QEMU ignores it; a real UART would not */
#define ANALOG_REQUEST 'B'
#define ANALOG_REPLY 'R'
#define ANALOG_REQUEST_HEAD 28u
#define ANALOG_REPLY_HEAD 4u
#define ANALOG_REPLY_TIMEOUT_S 10u
#define ANALOG_BOOT 'C'
#define ANALOG_BOOT_SIZE 8u
/* the BOOT record's config codes (firmware_sim/qemu_analog.py: CONFIG_REFUSED words them) */
enum {
    ANALOG_CONFIG_ADOPTED = 0,
    ANALOG_CONFIG_NO_BLOCK = 1,         /* no magic at QCFG_ADDR */
    ANALOG_CONFIG_VERSION = 2,          /* another layout version */
    ANALOG_CONFIG_SIZE = 3,             /* size outside (header, QCFG_MAX_SIZE] */
    ANALOG_CONFIG_DEVICES = 4,          /* n_devices outside 1..QCFG_MAX_DEVICES */
    ANALOG_CONFIG_SERIAL = 5,           /* serial without its NUL */
    ANALOG_CONFIG_JSON = 6,             /* fewer NUL-terminated descriptions than devices */
    ANALOG_CONFIG_FIFO = 7,             /* adopted, but fifo_blocks did not fit and fell back */
    ANALOG_CONFIG_INIT = 8,             /* the board refused the settings even so: it halts */
};

typedef struct analog_link {
    const dnpu_board *board;            /* read only: the sweep being converted */
    uint16_t staged[DNPU_MAX_CHANNELS], latched[DNPU_MAX_CHANNELS];
    bool fresh;                         /* a row was latched since the last conversion */
    bool row_ok;
    int32_t row_codes[DNPU_MAX_DEVICES];
    /* the rows sent ahead and their codes */
    uint32_t ahead_first, ahead_n, ahead_pos;
    uint16_t ahead_sweep;
    int32_t codes[DNPU_MAX_BLOCK_SAMPLES];  /* n x K: a block holds DNPU_MAX_BLOCK_SAMPLES / K rows */
    uint32_t timeouts, requests;
} analog_link;

void analog_link_init(analog_link *a, const dnpu_board *board, uint32_t pclk_hz);
void analog_link_stage(analog_link *a, unsigned channel, uint16_t code);
void analog_link_latch(analog_link *a);
void analog_link_force_zero(analog_link *a);
bool analog_link_adc_read(analog_link *a, int32_t *codes);
/* The BOOT record: `config` (an ANALOG_CONFIG_* code), the board's device count, `config_size`. */
void analog_link_announce(analog_link *a, unsigned config, uint32_t config_size);

#endif
