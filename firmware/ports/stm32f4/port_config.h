/* The board's configuration, from nominal values and the calibration block: no hardware access,
 * so tests/firmware/test_stm32f4_port.py compiles it natively with the core and checks the
 * identity that results (it must fit DNPU_IDENTITY_CAP) against mkcal.py's output. */
#ifndef DNPU_STM32F4_PORT_CONFIG_H
#define DNPU_STM32F4_PORT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "analog.h"
#include "board.h"
#include "calib.h"

#define PORT_FIRMWARE "dnpu-bench-stm32f4 0.1.0"
#define PORT_MODEL "DNPU-BENCH-NUCLEO-F429ZI"
#define PORT_DAC_SPAN_V 2.5                 /* DAC81408 range +-2.5 V (+-REF) */
#define PORT_SETTLE_NS 50000u               /* ~6 time constants of the TIA (7.87 MOhm, 1 pF) */
#define PORT_SERIAL_CAP 32u
#define PORT_DEVICE_JSON_CAP 320u

/* `serial` holds the MCU's ID on entry (PORT_SERIAL_CAP bytes); a calibrated name replaces it. */
void port_configure(dnpu_config *c, analog_cal *ac, const cal_block *cal, char *serial);
/* The identity's "device": the front end as built and as read back at start-up. */
void port_describe(char *json, const analog_cal *ac, const analog_info *info, const cal_block *cal,
                   bool hse, bool iwdg_reset);

#endif
