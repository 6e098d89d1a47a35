/* The boot configuration block: the board's settings and the analog model's parameters, which
 * the native port takes on its command line. The launcher (firmware_sim/qemu.py) packs it with
 * the same layout and QEMU's `-device loader` puts it into the last flash sector before reset (on
 * silicon: a flashed configuration sector). All fields little-endian; the strings end in NUL
 * within `size`. Without a valid block the firmware runs on built-in defaults. */
#ifndef DNPU_QEMU_CONFIG_H
#define DNPU_QEMU_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define QCFG_ADDR 0x080E0000u
#define QCFG_MAGIC 0x51504E44u              /* "DNPQ" */
#define QCFG_VERSION 1u
#define QCFG_MAX_SIZE 4096u                 /* the whole block, strings included */

typedef struct qcfg {
    uint32_t magic, version, size, seed;
    uint32_t dac_bits, adc_bits, fifo_blocks, realtime;
    double dac_span_v[2], adc_span_na[2];
    double limits_v[14];                    /* [channel][lo, hi] */
    double max_slew_v_per_s, watchdog_s, sample_period_s;
    double dac_gain[7], dac_offset[7], weights[7];
    double bias, clip_lo, clip_hi;
    int64_t fail_after_rows;                /* < 0: never */
    char serial[64];
    char device_json[];                     /* to the end of the block */
} qcfg;

/* firmware_sim/qemu.py packs struct "<8I4d14d3d21d3dq64s" (464 bytes), then the JSON + NUL */
_Static_assert(offsetof(qcfg, dac_span_v) == 32, "qcfg layout");
_Static_assert(offsetof(qcfg, max_slew_v_per_s) == 176, "qcfg layout");
_Static_assert(offsetof(qcfg, bias) == 368, "qcfg layout");
_Static_assert(offsetof(qcfg, serial) == 400, "qcfg layout");
_Static_assert(offsetof(qcfg, device_json) == 464, "qcfg layout");

#endif
