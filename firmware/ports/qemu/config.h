/* The boot configuration block: the board's settings, which the native port takes on its
 * command line (the analog side's parameters stay with the host-side emulator). The launcher (firmware_sim/qemu.py) packs it with
 * the same layout and QEMU's `-device loader` puts it into the last flash sector before reset (on
 * silicon: a flashed configuration sector). All fields little-endian; the strings end in NUL
 * within `size`. Without a valid block the firmware runs on built-in defaults. */
#ifndef DNPU_QEMU_CONFIG_H
#define DNPU_QEMU_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "board.h"

#define QCFG_ADDR 0x080E0000u
#define QCFG_MAGIC 0x51504E44u              /* "DNPQ" */
#define QCFG_VERSION 3u                     /* 3: n_devices, the limits of every device, one JSON each */
#define QCFG_MAX_SIZE 4096u                 /* the whole block, strings included */
#define QCFG_MAX_DEVICES DNPU_MAX_DEVICES   /* firmware_sim/qemu.py: QEMU_MAX_DEVICES */

typedef struct qcfg {
    uint32_t magic, version, size, seed;
    uint32_t dac_bits, adc_bits, fifo_blocks, realtime;
    uint32_t n_devices, reserved;
    double dac_span_v[2], adc_span_na[2];
    double max_slew_v_per_s, watchdog_s, sample_period_s;
    double limits_v[QCFG_MAX_DEVICES * 14]; /* [channel][lo, hi]; the first 7 x n_devices channels */
    char serial[64];
    char device_json[];                     /* n_devices JSON objects, each ending in NUL, to the end */
} qcfg;

/* firmware_sim/qemu.py packs struct "<10I4d3d{14 x QCFG_MAX_DEVICES}d64s", then the JSONs */
_Static_assert(offsetof(qcfg, dac_span_v) == 40, "qcfg layout");
_Static_assert(offsetof(qcfg, limits_v) == 96, "qcfg layout");
_Static_assert(offsetof(qcfg, serial) == 96 + 112 * QCFG_MAX_DEVICES, "qcfg layout");
_Static_assert(offsetof(qcfg, device_json) == 160 + 112 * QCFG_MAX_DEVICES, "qcfg layout");

#endif
