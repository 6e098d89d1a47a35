#include "dnpu_device.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.141592653589793              /* Python's math.pi */

static const char *const SCALAR_NAMES[DNPU_DEV_N_SCALARS] = {
#define DNPU_DEV_SCALAR_NAME(name) #name,
    DNPU_DEV_SCALARS(DNPU_DEV_SCALAR_NAME)
};

/* ---- random numbers ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* (0, 1] and [0, 1) from 53 bits */
static double open_unit(uint64_t r) { return ((double)(r >> 11) + 1.0) * 0x1.0p-53; }
static double unit(uint64_t r) { return (double)(r >> 11) * 0x1.0p-53; }

static double normal(dnpu_device *d)
{
    if (d->have_spare) {
        d->have_spare = false;
        return d->spare;
    }
    double r = sqrt(-2.0 * log(open_unit(xoshiro(d->rng)))), a = 2.0 * PI * unit(xoshiro(d->rng));
    d->spare = r * sin(a);
    d->have_spare = true;
    return r * cos(a);
}

/* A standard normal that depends only on (noise seed, stream, row): the per-row processes can be
 * evaluated ahead for a block and again for any row. */
static double row_normal(const dnpu_device *d, unsigned stream, uint64_t row)
{
    uint64_t x = d->noise_seed * 0xD1B54A32D192ED03ull ^ (row * 4 + stream) * 0x9E3779B97F4A7C15ull;
    uint64_t a = splitmix64(&x), b = splitmix64(&x);
    return sqrt(-2.0 * log(open_unit(a))) * cos(2.0 * PI * unit(b));
}

/* ---- the parameter file ---------------------------------------------------------------------- */

typedef struct reader {
    const uint8_t *p, *end;
} reader;

static bool take(reader *r, void *out, size_t n)
{
    if ((size_t)(r->end - r->p) < n)
        return false;
    memcpy(out, r->p, n);
    r->p += n;
    return true;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static int fail(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return -1;
}

static bool all_finite(const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return false;
    return true;
}

static int check_scalars(const double *s, char *err, size_t cap)
{
    for (int i = 0; i < DNPU_DEV_N_SCALARS; i++)
        if (!isfinite(s[i]))
            return fail(err, cap, "%s is not finite", SCALAR_NAMES[i]);
    static const int positive[] = {DNPU_DEV_S_beta, DNPU_DEV_S_dt0, DNPU_DEV_S_tol_abs, DNPU_DEV_S_tol_quad,
                                   DNPU_DEV_S_temperature_k, DNPU_DEV_S_k_b_ev, DNPU_DEV_S_max_abs_volts,
                                   DNPU_DEV_S_drift_tau_s, DNPU_DEV_S_temperature_tau_s, DNPU_DEV_S_line_tau_s,
                                   DNPU_DEV_S_slew_v_per_s, DNPU_DEV_S_tia_bandwidth_hz};
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++)
        if (!(s[positive[i]] > 0))
            return fail(err, cap, "%s must be > 0, got %g", SCALAR_NAMES[positive[i]], s[positive[i]]);
    static const int nonneg[] = {DNPU_DEV_S_noise_level, DNPU_DEV_S_white_noise_na, DNPU_DEV_S_flicker_rel,
                                 DNPU_DEV_S_drift_rel, DNPU_DEV_S_temperature_rms_k};
    for (size_t i = 0; i < sizeof nonneg / sizeof nonneg[0]; i++)
        if (!(s[nonneg[i]] >= 0))
            return fail(err, cap, "%s must be >= 0, got %g", SCALAR_NAMES[nonneg[i]], s[nonneg[i]]);
    if (s[DNPU_DEV_S_noise_level] > 100)
        return fail(err, cap, "noise_level must be <= 100");
    if (!(s[DNPU_DEV_S_dt_max] >= s[DNPU_DEV_S_dt0]))
        return fail(err, cap, "dt_max must be >= dt0");
    if (s[DNPU_DEV_S_scale_na] == 0)
        return fail(err, cap, "scale_na must not be 0");
    if (!(s[DNPU_DEV_S_tia_lo_na] < s[DNPU_DEV_S_tia_hi_na]))
        return fail(err, cap, "tia range must be (low, high) with low < high");
    if (s[DNPU_DEV_S_max_abs_volts] > 10)
        return fail(err, cap, "max_abs_volts must be <= 10");
    return 0;
}

static int parse(dnpu_device *d, const uint8_t *buf, size_t len, char *err, size_t cap)
{
    if (len < 16)
        return fail(err, cap, "too short (%zu bytes)", len);
    uint64_t sum;
    memcpy(&sum, buf + len - 8, 8);
    reader r = {buf, buf + len - 8};
    char magic[8];
    uint32_t n, nf, nt, max_iter, ns;
    if (!take(&r, magic, 8) || memcmp(magic, DNPU_DEV_MAGIC, 8) != 0)
        return fail(err, cap, "not a virtual-DNPU parameter file (magic %s expected)", DNPU_DEV_MAGIC);
    if (fnv1a(buf, len - 8) != sum)
        return fail(err, cap, "checksum mismatch (truncated or corrupted)");
    if (!take(&r, &n, 4) || !take(&r, &nf, 4) || !take(&r, &nt, 4) || !take(&r, &max_iter, 4) ||
        !take(&r, &ns, 4) || !take(&r, &d->noise_seed, 8))
        return fail(err, cap, "truncated header");
    if (ns != DNPU_DEV_N_SCALARS)
        return fail(err, cap, "%u scalars, this firmware reads %d (launcher and firmware disagree)",
                    (unsigned)ns, DNPU_DEV_N_SCALARS);
    if (n < 1 || n > DNPU_MAX_SITES)
        return fail(err, cap, "n_sites %u not in 1..%d", (unsigned)n, DNPU_MAX_SITES);
    if (nf < 1 || nf > DNPU_DEV_MAX_FLICKER)
        return fail(err, cap, "flicker_processes %u not in 1..%d", (unsigned)nf, DNPU_DEV_MAX_FLICKER);
    if (nt < 1 || nt > 256)
        return fail(err, cap, "nthreads %u not in 1..256", (unsigned)nt);
    if (max_iter < 1 || max_iter > 1000000)
        return fail(err, cap, "max_iter %u not in 1..1000000", (unsigned)max_iter);
    size_t nn = (size_t)n * n, total = 2 * (size_t)n * DNPU_NE + 2 * n + 2 * nn;
    size_t expect = 8 + 5 * 4 + 8 + (DNPU_DEV_N_SCALARS + total + nf) * 8 + 8;
    if (len != expect)
        return fail(err, cap, "%zu bytes, %zu expected for %u sites", len, expect, (unsigned)n);
    if (!take(&r, d->s, sizeof d->s))
        return fail(err, cap, "truncated scalars");
    if (check_scalars(d->s, err, cap) < 0)
        return -1;
    d->arrays = malloc(total * sizeof(double));
    if (d->arrays == NULL)
        return fail(err, cap, "out of memory");
    if (!take(&r, d->arrays, total * sizeof(double)) || !take(&r, d->flicker_rate, nf * sizeof(double)))
        return fail(err, cap, "truncated arrays");
    if (!all_finite(d->arrays, total))
        return fail(err, cap, "device arrays contain NaN or infinite values");
    const double *psi = d->arrays, *e = psi + n * DNPU_NE, *coul = e + n, *w = coul + nn,
                 *u = w + nn, *guess = u + n * DNPU_NE;
    for (uint32_t i = 0; i < n; i++)
        if (!(guess[i] >= 0 && guess[i] <= 1))
            return fail(err, cap, "p_guess must lie in [0, 1]");
    for (uint32_t i = 0; i < nf; i++)
        if (!(isfinite(d->flicker_rate[i]) && d->flicker_rate[i] > 0))
            return fail(err, cap, "flicker rates must be finite and > 0");
    d->model = (dnpu_model){
        .n = (int)n, .psi = psi, .e_static = e, .coul = coul, .w = w, .u = u, .p_guess = guess,
        .beta = d->s[DNPU_DEV_S_beta], .dt0 = d->s[DNPU_DEV_S_dt0], .dt_max = d->s[DNPU_DEV_S_dt_max],
        .tol_abs = d->s[DNPU_DEV_S_tol_abs], .tol_quad = d->s[DNPU_DEV_S_tol_quad], .max_iter = (int)max_iter};
    d->n_flicker = (int)nf;
    d->nthreads = (int)nt;
    return 0;
}

int dnpu_device_load(dnpu_device *d, const char *path, size_t max_rows, char *err, size_t cap)
{
    memset(d, 0, sizeof *d);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return fail(err, cap, "%s: %s", path, strerror(errno));
    uint8_t *buf = malloc(DNPU_DEV_MAX_FILE + 1);
    if (buf == NULL) {
        fclose(f);
        return fail(err, cap, "out of memory");
    }
    size_t len = fread(buf, 1, DNPU_DEV_MAX_FILE + 1, f);
    bool bad_read = ferror(f);
    fclose(f);
    int rc = bad_read ? fail(err, cap, "%s: read error", path)
             : len > DNPU_DEV_MAX_FILE ? fail(err, cap, "%s: larger than %u bytes", path, DNPU_DEV_MAX_FILE)
                                       : parse(d, buf, len, err, cap);
    free(buf);
    if (rc < 0)
        return -1;

    d->cap = max_rows < 1 ? 1 : max_rows;
    d->spec_target = malloc(d->cap * DNPU_NACT * sizeof(double));
    d->spec_vdev = malloc(d->cap * DNPU_NACT * sizeof(double));
    d->spec_drift = malloc(d->cap * sizeof(double));
    d->spec_temp = malloc(d->cap * sizeof(double));
    d->spec_beta = malloc(d->cap * sizeof(double));
    d->spec_raw = malloc(d->cap * sizeof(double));
    if (!d->spec_target || !d->spec_vdev || !d->spec_drift || !d->spec_temp || !d->spec_beta || !d->spec_raw)
        return fail(err, cap, "out of memory");

    /* the fresh analog state (VirtualDNPU._fresh_state) */
    uint64_t x = d->noise_seed ^ 0x4E4F495345ull;
    for (int i = 0; i < 4; i++)
        d->rng[i] = splitmix64(&x);
    double lvl = d->s[DNPU_DEV_S_noise_level];
    double flick = d->s[DNPU_DEV_S_flicker_rel] * lvl / sqrt((double)d->n_flicker);
    for (int j = 0; j < d->n_flicker; j++)
        d->flicker[j] = flick * normal(d);
    return 0;
}

/* ---- conversion -------------------------------------------------------------------------------- */

static bool volts_ok(const dnpu_device *d, const double *v)
{
    for (int c = 0; c < DNPU_NACT; c++)
        if (!(fabs(v[c]) <= d->s[DNPU_DEV_S_max_abs_volts]))
            return false;
    return true;
}

/* Solve rows spec_target[0..n) ahead from the present state (convert's steps 1-3). */
static bool solve_ahead(dnpu_device *d, size_t n, double period)
{
    const double *s = d->s;
    const double lvl = s[DNPU_DEV_S_noise_level];
    /* 1. line settling */
    const double a_rc = exp(-period / s[DNPU_DEV_S_line_tau_s]), max_step = s[DNPU_DEV_S_slew_v_per_s] * period;
    double v[DNPU_NACT];
    memcpy(v, d->v_line, sizeof v);
    for (size_t r = 0; r < n; r++)
        for (int c = 0; c < DNPU_NACT; c++) {
            double step = (d->spec_target[r * DNPU_NACT + c] - v[c]) * (1.0 - a_rc);
            step = step > max_step ? max_step : (step < -max_step ? -max_step : step);
            v[c] = v[c] + step;
            d->spec_vdev[r * DNPU_NACT + c] = v[c];
        }
    /* 2. drift and temperature: exact Ornstein-Uhlenbeck steps */
    bool drift_on = lvl > 0 && s[DNPU_DEV_S_drift_rel] > 0;
    bool temp_on = lvl > 0 && s[DNPU_DEV_S_temperature_rms_k] > 0;
    double x = d->drift, rho = exp(-period / s[DNPU_DEV_S_drift_tau_s]);
    double amp = (s[DNPU_DEV_S_drift_rel] * lvl) * sqrt(fmax(0.0, 1.0 - rho * rho));
    for (size_t r = 0; r < n; r++) {
        if (drift_on)
            x = rho * x + amp * row_normal(d, 0, d->rows + r);
        d->spec_drift[r] = drift_on ? x : 0.0;
    }
    x = d->temp;
    rho = exp(-period / s[DNPU_DEV_S_temperature_tau_s]);
    amp = (s[DNPU_DEV_S_temperature_rms_k] * lvl) * sqrt(fmax(0.0, 1.0 - rho * rho));
    for (size_t r = 0; r < n; r++) {
        if (temp_on)
            x = rho * x + amp * row_normal(d, 1, d->rows + r);
        d->spec_temp[r] = temp_on ? x : d->temp;
        d->spec_beta[r] = 1.0 / (s[DNPU_DEV_S_k_b_ev] * (s[DNPU_DEV_S_temperature_k] + x));
    }
    /* 3. the steady state, cold start, all rows in one batch */
    dnpu_batch b = {.count = (int64_t)n, .volts = d->spec_vdev, .beta = temp_on ? d->spec_beta : NULL,
                    .currents = d->spec_raw, .ncols = 1, .warm = 0, .p_state = NULL, .iters = NULL,
                    .nthreads = d->nthreads};
    int64_t rc = dnpu_solve_batch(&d->model, &b);
    if (rc < 0) {
        snprintf(d->error, sizeof d->error, "virtual DNPU: kernel error %lld", (long long)rc);
        return false;
    }
    return true;
}

static void sub_sample_constants(dnpu_device *d, double period, unsigned os)
{
    if (d->h_period == period && d->h_os == os)
        return;
    const double h = period / os;
    d->alpha = exp(-2 * PI * d->s[DNPU_DEV_S_tia_bandwidth_hz] * h);
    const double scale = d->s[DNPU_DEV_S_flicker_rel] * d->s[DNPU_DEV_S_noise_level] / sqrt((double)d->n_flicker);
    for (int j = 0; j < d->n_flicker; j++) {
        d->rho[j] = exp(-h * d->flicker_rate[j]);
        d->amp[j] = scale * sqrt(1.0 - d->rho[j] * d->rho[j]);
    }
    d->h_period = period;
    d->h_os = os;
}

bool dnpu_device_row(dnpu_device *d, const double volts[DNPU_NACT], double period, unsigned os,
                     dnpu_dev_ahead_fn ahead, void *ahead_ctx, double *na)
{
    if (!volts_ok(d, volts)) {
        snprintf(d->error, sizeof d->error, "virtual DNPU: volts outside the device's absolute limit +-%g V",
                 d->s[DNPU_DEV_S_max_abs_volts]);
        return false;
    }
    if (os < 1)
        os = 1;
    bool known = d->spec_pos < d->spec_n && d->spec_period == period &&
                 memcmp(d->spec_target + d->spec_pos * DNPU_NACT, volts, DNPU_NACT * sizeof(double)) == 0;
    if (!known) {
        /* the block ahead, from this row on (normally its first); else this row alone */
        size_t n = ahead ? ahead(ahead_ctx, d->spec_target, d->cap) : 0, j = 0;
        while (j < n && memcmp(d->spec_target + j * DNPU_NACT, volts, DNPU_NACT * sizeof(double)) != 0)
            j++;
        if (j == n) {
            memcpy(d->spec_target, volts, DNPU_NACT * sizeof(double));
            n = 1;
        } else if (j > 0) {
            memmove(d->spec_target, d->spec_target + j * DNPU_NACT, (n - j) * DNPU_NACT * sizeof(double));
            n -= j;
        }
        for (size_t r = 1; r < n; r++)     /* stop before a row the device refuses */
            if (!volts_ok(d, d->spec_target + r * DNPU_NACT)) {
                n = r;
                break;
            }
        d->spec_n = d->spec_pos = 0;
        if (!solve_ahead(d, n, period))
            return false;
        d->spec_n = n;
        d->spec_period = period;
    }
    size_t i = d->spec_pos++;
    double raw = d->spec_raw[i];
    if (!isfinite(raw)) {
        snprintf(d->error, sizeof d->error, "virtual DNPU: no steady state for volts [%g, %g, %g, %g, %g, %g, %g]",
                 volts[0], volts[1], volts[2], volts[3], volts[4], volts[5], volts[6]);
        d->spec_n = d->spec_pos = 0;
        return false;
    }
    /* commit the row's slow state */
    memcpy(d->v_line, d->spec_vdev + i * DNPU_NACT, sizeof d->v_line);
    d->drift = d->spec_drift[i];
    d->temp = d->spec_temp[i];
    d->rows++;

    /* 4. per sub-sample: 1/f-like noise, TIA low-pass, white noise, clipping; the mean */
    const double *s = d->s;
    const double lvl = s[DNPU_DEV_S_noise_level];
    const double i_row = raw * s[DNPU_DEV_S_scale_na] * exp(d->spec_drift[i]);
    const bool flicker_on = lvl > 0 && s[DNPU_DEV_S_flicker_rel] > 0;
    const bool white_on = lvl > 0 && s[DNPU_DEV_S_white_noise_na] > 0;
    const double white = s[DNPU_DEV_S_white_noise_na] * lvl, lo = s[DNPU_DEV_S_tia_lo_na], hi = s[DNPU_DEV_S_tia_hi_na];
    sub_sample_constants(d, period, os);
    double sum = 0.0, y = 0.0;
    for (unsigned k = 0; k < os; k++) {
        double x = i_row;
        if (flicker_on) {
            double f = 0.0;
            for (int j = 0; j < d->n_flicker; j++) {
                d->flicker[j] = d->rho[j] * d->flicker[j] + d->amp[j] * normal(d);
                f = f + d->flicker[j];
            }
            x *= 1.0 + f;
        }
        d->tia = d->alpha * d->tia + (1.0 - d->alpha) * x;
        y = d->tia;
        if (white_on)
            y = y + white * normal(d);
        y = y < lo ? lo : (y > hi ? hi : y);
        sum += y;
    }
    *na = os > 1 ? sum / os : y;
    return true;
}
