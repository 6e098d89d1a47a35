/* The boot configuration block: the board's settings, which the native port takes on its
 * command line (the analog side's parameters stay with the host-side emulator). The launcher (firmware_sim/qemu.py) packs it with
 * the same layout and QEMU's `-device loader` puts it into the last flash sector before reset (on
 * silicon: a flashed configuration sector). All fields little-endian; the strings end in NUL
 * within `size`. Without a valid block the firmware runs on built-in defaults. */
#ifndef DNPU_QEMU_CONFIG_H
#define DNPU_QEMU_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define QCFG_ADDR 0x080E0000u
#define QCFG_MAGIC 0x51504E44u              /* "DNPQ" */
#define QCFG_VERSION 2u
#define QCFG_MAX_SIZE 4096u                 /* the whole block, strings included */

typedef struct qcfg {
    uint32_t magic, version, size, seed;
    uint32_t dac_bits, adc_bits, fifo_blocks, realtime;
    double dac_span_v[2], adc_span_na[2];
    double limits_v[14];                    /* [channel][lo, hi] */
    double max_slew_v_per_s, watchdog_s, sample_period_s;
    char serial[64];
    char device_json[];                     /* to the end of the block */
} qcfg;

/* firmware_sim/qemu.py packs struct "<8I4d14d3d64s" (264 bytes), then the JSON + NUL */
_Static_assert(offsetof(qcfg, dac_span_v) == 32, "qcfg layout");
_Static_assert(offsetof(qcfg, max_slew_v_per_s) == 176, "qcfg layout");
_Static_assert(offsetof(qcfg, serial) == 200, "qcfg layout");
_Static_assert(offsetof(qcfg, device_json) == 264, "qcfg layout");

#endif
