/* The native port's virtual DNPU: firmware_sim's VirtualDNPU (firmware_sim/physics/device.py)
 * behind the DAC pins, on the same C kernel (firmware_sim/physics/csrc/dnpu_kernel.c).
 *
 * Everything the device is made of (geometry, solver settings, current scale, noise and TIA
 * parameters) is computed by the Python simulator from the seed and handed over in one binary
 * file (firmware_sim/native.py: dnpu_params_blob; layout below), read and validated once.
 *
 * Per row, as VirtualDNPU.convert: line settling (RC + slew), the slow drift and temperature
 * random walks, the clean steady state at the settled voltages, then per sub-sample the 1/f-like
 * relative noise, the TIA low-pass, white noise and clipping; the oversample sub-samples are
 * averaged (in nA, before the ADC, as the Python board does). The kernel solves a block's rows in
 * one multithreaded batch: the device is given the block ahead and checks each latched row
 * against it (a row that differs is solved on its own). The random numbers come from this
 * file's generators, not NumPy's: the same noise model and levels, not the same samples. */
#ifndef DNPU_NATIVE_DNPU_DEVICE_H
#define DNPU_NATIVE_DNPU_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dnpu_kernel.h"

#define DNPU_DEV_MAGIC "DNPUDEV1"
#define DNPU_DEV_MAX_FLICKER 64
#define DNPU_DEV_MAX_FILE (4u << 20)

/* The scalars of the parameter file, in file order (firmware_sim/native.py: DNPU_SCALARS). */
#define DNPU_DEV_SCALARS(X) X(beta) X(dt0) X(dt_max) X(tol_abs) X(tol_quad) X(scale_na)              \
    X(temperature_k) X(k_b_ev) X(max_abs_volts) X(noise_level) X(white_noise_na) X(flicker_rel)    \
    X(drift_rel) X(drift_tau_s) X(temperature_rms_k) X(temperature_tau_s) X(line_tau_s)             \
    X(slew_v_per_s) X(tia_bandwidth_hz) X(tia_lo_na) X(tia_hi_na)
#define DNPU_DEV_SCALAR_ENUM(name) DNPU_DEV_S_##name,
enum { DNPU_DEV_SCALARS(DNPU_DEV_SCALAR_ENUM) DNPU_DEV_N_SCALARS };

/* Fills `out` with the DAC volts [n][7] of the rows the core is about to convert (the current
 * sweep block), at most `cap`; returns n (0: none known). */
typedef size_t (*dnpu_dev_ahead_fn)(void *ctx, double *out, size_t cap);

typedef struct dnpu_device {
    dnpu_model model;
    double *arrays;                        /* psi, e_static, coul, w, u, p_guess (one allocation) */
    double s[DNPU_DEV_N_SCALARS];
    int n_flicker, nthreads;
    double flicker_rate[DNPU_DEV_MAX_FLICKER];
    uint64_t noise_seed;

    /* analog state (VirtualDNPU._AnalogState) */
    double v_line[DNPU_NACT], drift, temp, flicker[DNPU_DEV_MAX_FLICKER], tia;
    uint64_t rows;
    uint64_t rng[4];                       /* sub-sample noise: xoshiro256** */
    double spare;
    bool have_spare;

    /* per-sub-sample constants for the last (period, oversample) */
    double h_period;
    unsigned h_os;
    double alpha, rho[DNPU_DEV_MAX_FLICKER], amp[DNPU_DEV_MAX_FLICKER];

    /* the rows solved ahead: target volts, settled volts, drift, temperature, clean current */
    size_t cap, spec_n, spec_pos;
    double spec_period;
    double *spec_target, *spec_vdev, *spec_drift, *spec_temp, *spec_beta, *spec_raw;

    char error[256];                       /* why the last row failed */
} dnpu_device;

/* Read and validate the parameter file; `max_rows`: the largest block the core converts.
 * 0 on success, -1 with a message in err. */
int dnpu_device_load(dnpu_device *d, const char *path, size_t max_rows, char *err, size_t errcap);

/* One row: the latched DAC volts, the sweep's period and oversample -> the TIA output in nA,
 * the mean of `oversample` sub-samples. false (d->error says why) if the device cannot run it. */
bool dnpu_device_row(dnpu_device *d, const double volts[DNPU_NACT], double period_s, unsigned oversample,
                     dnpu_dev_ahead_fn ahead, void *ahead_ctx, double *na);

#endif
