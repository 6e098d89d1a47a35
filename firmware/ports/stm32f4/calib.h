/* The calibration block: flash sector 4 (0x08010000, 64 KB; the 64 KB image lives in sectors 0-3,
 * so re-flashing the firmware keeps it). Written by mkcal.py from DMM measurements
 * (docs/board.md, "Calibration"). All fields little-endian; the CRC is zlib's crc32 of every byte
 * before it. Without a valid block (erased flash reads 0xFF) the board runs on nominal values. */
#ifndef DNPU_STM32F4_CALIB_H
#define DNPU_STM32F4_CALIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CAL_ADDR 0x08010000u
#define CAL_MAGIC 0x43504E44u               /* "DNPC" */
#define CAL_VERSION 1u

typedef struct cal_block {
    uint32_t magic, version, size;          /* size: sizeof(cal_block) */
    float dac_gain[7];                      /* measured volts out per volt asked (1.0 nominal) */
    float dac_offset_v[7];                  /* measured volts out when 0 V is asked */
    float tia_ohm;                          /* effective transimpedance, ADC gain included (V/A) */
    float adc_offset_na;                    /* reading with the readout open (subtracted) */
    uint32_t settle_ns;                     /* LDAC edge to ADC sampling; 0: the default */
    char serial[32];                        /* NUL-terminated; "" : the MCU's unique ID */
    uint32_t crc32;
} cal_block;

/* mkcal.py packs "<3I7f7f2fI32sI" (112 bytes) */
_Static_assert(offsetof(cal_block, tia_ohm) == 68, "cal_block layout");
_Static_assert(offsetof(cal_block, serial) == 80, "cal_block layout");
_Static_assert(sizeof(cal_block) == 116, "cal_block layout");

#define CAL_TIA_OHM_NOMINAL 7.87e6          /* R_f: +-2.56 V at the ADC = +-325 nA */
#define CAL_ADC_FULL_SCALE_V 2.56           /* ADS8681 range +-0.625 x 4.096 V */

/* Magic, version, size, CRC and values all sound (tests/firmware/test_stm32f4_port.py runs it
 * natively on mkcal.py's output). */
bool calib_valid(const cal_block *c);
/* The block in flash if its magic, version, size, CRC and values are sound, else NULL. */
const cal_block *calib_find(void);

#endif
