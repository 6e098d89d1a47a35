/* Mean-field steady state of a virtual DNPU: pseudo-transient continuation with the analytic
 * Jacobian, batched and multithreaded over configurations. Plain C11 + pthreads.
 *
 * Energies in units of kT:  eps_i = beta [phi_i + E_i] - beta sum_j C_ij (1 - p_j),
 * electrode levels beta V_k (V_7 = 0). f(x) = 1/(1 + e^x). W_ij, U_ik: tunnelling factors.
 *   F_i = sum_j W_ij [f(eps_i - eps_j) S_ij - p_i (1 - p_j)] + sum_k U_ik [f(eps_i - eps_k) - p_i]
 *   with S_ij = p_i + p_j - 2 p_i p_j (net flow from j into i written with f(-x) = 1 - f(x)).
 *   I_k = sum_i U_ik [p_i - f(eps_i - eps_k)]   (hole current into electrode k)
 * The factor e^(eps_i - eps_j) is formed as e^(eps_i - c) e^(c - eps_j): 2N exponentials per
 * iteration instead of N^2.
 */
#include "dnpu_kernel.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(DNPU_NO_CLONES)
/* Run-time dispatch on CPU features (an AVX2/FMA clone and the baseline); no -march=native. */
#define DNPU_HOT __attribute__((target_clones("arch=haswell", "default")))
#else
#define DNPU_HOT
#endif

typedef struct {
    double *phi0, *p, *q, *eps, *ep, *em, *F, *J, *A, *d, *tmp;
} workspace;

static void ws_free(workspace *ws) { free(ws->phi0); memset(ws, 0, sizeof(*ws)); }

static int ws_alloc(workspace *ws, int n) {
    size_t nn = (size_t)n * (size_t)n;
    size_t total = 9 * (size_t)n + 2 * nn + 8;
    memset(ws, 0, sizeof(*ws));
    double *buf = (double *)calloc(total, sizeof(double));
    if (!buf) return -1;
    ws->phi0 = buf;            buf += n;
    ws->p = buf;               buf += n;
    ws->q = buf;               buf += n;
    ws->eps = buf;             buf += n;
    ws->ep = buf;              buf += n;
    ws->em = buf;              buf += n;
    ws->F = buf;               buf += n;
    ws->d = buf;               buf += n;
    ws->tmp = buf;             buf += n + 8;
    ws->J = buf;               buf += nn;
    ws->A = buf;
    return 0;
}

/* eps_i = phi0_i - beta sum_j C_ij (1 - p_j); returns the shift c used for the exponentials */
static double energies(const dnpu_model *m, workspace *ws, double beta) {
    const int n = m->n;
    double lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < n; ++j) ws->q[j] = 1.0 - ws->p[j];
    for (int i = 0; i < n; ++i) {
        const double *ci = m->coul + (size_t)i * n;
        double s = 0.0;
        for (int j = 0; j < n; ++j) s += ci[j] * ws->q[j];
        double e = ws->phi0[i] - beta * s;
        ws->eps[i] = e;
        if (e < lo) lo = e;
        if (e > hi) hi = e;
    }
    return 0.5 * (lo + hi);
}

/* Residual F and Jacobian J (row-major) at ws->p; returns ||F||_2. */
DNPU_HOT
static double residual_jacobian(const dnpu_model *m, workspace *ws, const double *epk, double beta) {
    const int n = m->n;
    const double c = energies(m, ws, beta);
    double *restrict ep = ws->ep, *restrict em = ws->em;
    const double *restrict p = ws->p, *restrict q = ws->q;
    for (int i = 0; i < n; ++i) {
        ep[i] = exp(ws->eps[i] - c);
        em[i] = exp(c - ws->eps[i]);
    }
    double eek[DNPU_NE];
    for (int k = 0; k < DNPU_NE; ++k) eek[k] = exp(c - epk[k]);
    double fnorm2 = 0.0;
    for (int i = 0; i < n; ++i) {
        const double *restrict wi = m->w + (size_t)i * n;
        double *restrict Ji = ws->J + (size_t)i * n;
        double *restrict Ai = ws->A + (size_t)i * n;
        const double pi = p[i], epi = ep[i];
        const double one_m_2pi = 1.0 - 2.0 * pi;
        double Fi = 0.0, diag = 0.0, asum = 0.0;
#if defined(_OPENMP) || defined(DNPU_OMP_SIMD)
#pragma omp simd reduction(+ : Fi, diag, asum)
#endif
        for (int j = 0; j < n; ++j) {
            const double wij = wi[j];
            const double fx = 1.0 / (1.0 + epi * em[j]);       /* f(eps_i - eps_j) */
            const double S = pi + p[j] - 2.0 * pi * p[j];
            Fi += wij * (fx * S - pi * q[j]);
            Ji[j] = wij * (fx * one_m_2pi + pi);                  /* d flow_ji / d p_j */
            diag += wij * (fx * (1.0 - 2.0 * p[j]) - q[j]);       /* d flow_ji / d p_i */
            const double a = -wij * fx * (1.0 - fx) * S;          /* W f'(x) S */
            Ai[j] = a;
            asum += a;
        }
        const double *ui = m->u + (size_t)i * DNPU_NE;
        double bsum = 0.0, usum = 0.0;
        for (int k = 0; k < DNPU_NE; ++k) {
            const double fy = 1.0 / (1.0 + epi * eek[k]);       /* f(eps_i - eps_k) */
            Fi += ui[k] * (fy - pi);
            usum += ui[k];
            bsum -= ui[k] * fy * (1.0 - fy);
        }
        Ji[i] = diag - usum;
        ws->F[i] = Fi;
        ws->tmp[i] = asum + bsum;                                  /* D_i */
        fnorm2 += Fi * Fi;
    }
    /* Coulomb part: J += beta (diag(D) C - A C) */
    for (int i = 0; i < n; ++i) {
        double *restrict Ji = ws->J + (size_t)i * n;
        const double *restrict Ai = ws->A + (size_t)i * n;
        const double *restrict Ci = m->coul + (size_t)i * n;
        const double Di = beta * ws->tmp[i];
        for (int j = 0; j < n; ++j) Ji[j] += Di * Ci[j];
        for (int l = 0; l < n; ++l) {
            const double a = -beta * Ai[l];
            if (a == 0.0) continue;
            const double *restrict Cl = m->coul + (size_t)l * n;
            for (int j = 0; j < n; ++j) Ji[j] += a * Cl[j];
        }
    }
    return sqrt(fnorm2);
}

/* Solve (J - s I) d = -F in place (Gaussian elimination, partial pivoting); 0 on success. */
DNPU_HOT
static int linear_solve(int n, double *restrict J, const double *restrict F, double s, double *restrict d) {
    for (int i = 0; i < n; ++i) {
        J[(size_t)i * n + i] -= s;
        d[i] = -F[i];
    }
    for (int k = 0; k < n; ++k) {
        int piv = k;
        double best = fabs(J[(size_t)k * n + k]);
        for (int r = k + 1; r < n; ++r) {
            double v = fabs(J[(size_t)r * n + k]);
            if (v > best) { best = v; piv = r; }
        }
        if (!(best > 0.0) || !isfinite(best)) return -1;
        if (piv != k) {
            double *a = J + (size_t)k * n, *b = J + (size_t)piv * n;
            for (int j = k; j < n; ++j) { double t = a[j]; a[j] = b[j]; b[j] = t; }
            double t = d[k]; d[k] = d[piv]; d[piv] = t;
        }
        const double *restrict rk = J + (size_t)k * n;
        const double inv = 1.0 / rk[k];
        for (int r = k + 1; r < n; ++r) {
            double *restrict rr = J + (size_t)r * n;
            const double l = rr[k] * inv;
            if (l == 0.0) continue;
            for (int j = k + 1; j < n; ++j) rr[j] -= l * rk[j];
            d[r] -= l * d[k];
        }
    }
    for (int k = n - 1; k >= 0; --k) {
        const double *rk = J + (size_t)k * n;
        double s2 = d[k];
        for (int j = k + 1; j < n; ++j) s2 -= rk[j] * d[j];
        d[k] = s2 / rk[k];
    }
    return 0;
}

/* Pseudo-transient continuation from ws->p; returns iterations used or -1. */
static int ptc(const dnpu_model *m, workspace *ws, const double *epk, double beta, double dt0, int max_iter) {
    const int n = m->n;
    double dt = dt0, fprev = -1.0, dprev = INFINITY;
    for (int it = 1; it <= max_iter; ++it) {
        double fn = residual_jacobian(m, ws, epk, beta);
        if (!isfinite(fn)) return -1;
        if (fprev > 0.0) {
            dt = (fn > 0.0) ? dt * (fprev / fn) : m->dt_max;
            if (dt > m->dt_max) dt = m->dt_max;
        }
        fprev = fn;
        if (linear_solve(n, ws->J, ws->F, 1.0 / dt, ws->d) != 0) return -1;
        double dmax = 0.0;
        for (int i = 0; i < n; ++i) {
            double v = ws->p[i] + ws->d[i];
            v = v < 0.0 ? 0.0 : (v > 1.0 ? 1.0 : v);
            double ad = fabs(ws->d[i]);
            if (!(ad <= dmax)) dmax = ad;   /* also catches NaN */
            ws->p[i] = v;
        }
        if (!isfinite(dmax)) return -1;
        if (dmax < m->tol_abs) return it;
        if (dmax < m->tol_quad && dmax <= 10.0 * dprev * dprev) return it;
        dprev = dmax;
    }
    return -1;
}

static void electrode_currents(const dnpu_model *m, workspace *ws, const double *epk, double beta,
                               double *out, int ncols) {
    const int n = m->n;
    const double c = energies(m, ws, beta);
    double cur[DNPU_NE] = {0};
    for (int i = 0; i < n; ++i) {
        const double *ui = m->u + (size_t)i * DNPU_NE;
        const double pi = ws->p[i];
        const double x = ws->eps[i] - c;
        for (int k = 0; k < DNPU_NE; ++k) {
            if (ncols == 1 && k != DNPU_NE - 1) continue;
            const double fy = 1.0 / (1.0 + exp(x + (c - epk[k])));
            cur[k] += ui[k] * (pi - fy);
        }
    }
    if (ncols == 1) out[0] = cur[DNPU_NE - 1];
    else memcpy(out, cur, sizeof(cur));
}

/* One configuration; start from ws->p. Returns iterations (or -1). */
static int solve_one(const dnpu_model *m, workspace *ws, const double *v7, double beta, int from_guess,
                     double *out, int ncols) {
    const int n = m->n;
    double epk[DNPU_NE];
    for (int k = 0; k < DNPU_NACT; ++k) epk[k] = beta * v7[k];
    epk[DNPU_NE - 1] = 0.0;
    for (int i = 0; i < n; ++i) {
        const double *psi = m->psi + (size_t)i * DNPU_NE;
        double phi = 0.0;
        for (int k = 0; k < DNPU_NACT; ++k) phi += psi[k] * v7[k];
        ws->phi0[i] = beta * (phi + m->e_static[i]);
    }
    if (from_guess) memcpy(ws->p, m->p_guess, (size_t)n * sizeof(double));
    /* a warm start is already close: take (near-)Newton steps at once */
    int it = ptc(m, ws, epk, beta, from_guess ? m->dt0 : m->dt_max, m->max_iter);
    if (it < 0) {
        /* fallback: a cautious continuation from the fixed guess */
        memcpy(ws->p, m->p_guess, (size_t)n * sizeof(double));
        it = ptc(m, ws, epk, beta, m->dt0 * 1e-3, 4 * m->max_iter);
        if (it >= 0) it += m->max_iter;
    }
    if (it < 0) {
        for (int c = 0; c < ncols; ++c) out[c] = NAN;
        memcpy(ws->p, m->p_guess, (size_t)n * sizeof(double));
        return -1;
    }
    electrode_currents(m, ws, epk, beta, out, ncols);
    return it;
}

typedef struct {
    const dnpu_model *m;
    const dnpu_batch *b;
    atomic_llong *next;        /* cold: shared work counter */
    int64_t lo, hi;            /* warm: static chunk */
    int chunk_index;
    const double *p_start;     /* warm: start of chunk 0 (a private copy of p_state) */
    int64_t failures;
    int error;
} job;

#define DNPU_GRAIN 8

static void *worker(void *arg) {
    job *jb = (job *)arg;
    const dnpu_model *m = jb->m;
    const dnpu_batch *b = jb->b;
    workspace ws;
    if (ws_alloc(&ws, m->n) != 0) { jb->error = -2; return NULL; }
    const int nc = b->ncols;
    if (!b->warm) {
        for (;;) {
            int64_t start = (int64_t)atomic_fetch_add(jb->next, DNPU_GRAIN);
            if (start >= b->count) break;
            int64_t stop = start + DNPU_GRAIN < b->count ? start + DNPU_GRAIN : b->count;
            for (int64_t r = start; r < stop; ++r) {
                double beta = b->beta ? b->beta[r] : m->beta;
                int it = solve_one(m, &ws, b->volts + r * DNPU_NACT, beta, 1, b->currents + r * nc, nc);
                if (it < 0) jb->failures++;
                if (b->iters) b->iters[r] = it;
            }
        }
    } else {
        if (jb->chunk_index == 0 && jb->p_start) memcpy(ws.p, jb->p_start, (size_t)m->n * sizeof(double));
        else memcpy(ws.p, m->p_guess, (size_t)m->n * sizeof(double));
        for (int64_t r = jb->lo; r < jb->hi; ++r) {
            double beta = b->beta ? b->beta[r] : m->beta;
            int it = solve_one(m, &ws, b->volts + r * DNPU_NACT, beta, 0, b->currents + r * nc, nc);
            if (it < 0) jb->failures++;
            if (b->iters) b->iters[r] = it;
        }
        if (b->p_state && jb->hi == b->count && jb->hi > jb->lo)
            memcpy(b->p_state, ws.p, (size_t)m->n * sizeof(double));
    }
    ws_free(&ws);
    return NULL;
}

int64_t dnpu_solve_batch(const dnpu_model *model, const dnpu_batch *batch) {
    if (!model || !batch || model->n < 1 || model->n > DNPU_MAX_SITES || batch->count < 0 ||
        (batch->ncols != 1 && batch->ncols != DNPU_NE) || !model->psi || !model->e_static ||
        !model->coul || !model->w || !model->u || !model->p_guess || model->max_iter < 1)
        return -1;
    if (batch->count == 0) return 0;
    if (!batch->volts || !batch->currents) return -1;
    int nt = batch->nthreads < 1 ? 1 : batch->nthreads;
    if (nt > 256) nt = 256;
    if ((int64_t)nt > batch->count) nt = (int)batch->count;
    atomic_llong next;
    atomic_init(&next, 0);
    job *jobs = (job *)calloc((size_t)nt, sizeof(job));
    pthread_t *th = (pthread_t *)calloc((size_t)nt, sizeof(pthread_t));
    double *p_start = NULL;
    if (batch->warm && batch->p_state) {
        /* the last chunk writes p_state back, possibly before chunk 0 has read it: copy first */
        p_start = (double *)malloc((size_t)model->n * sizeof(double));
        if (p_start) memcpy(p_start, batch->p_state, (size_t)model->n * sizeof(double));
    }
    if (!jobs || !th || (batch->warm && batch->p_state && !p_start)) {
        free(jobs); free(th); free(p_start); return -2;
    }
    for (int t = 0; t < nt; ++t) {
        jobs[t].m = model;
        jobs[t].b = batch;
        jobs[t].next = &next;
        jobs[t].lo = batch->count * t / nt;
        jobs[t].hi = batch->count * (t + 1) / nt;
        jobs[t].chunk_index = t;
        jobs[t].p_start = p_start;
    }
    int started = 0, err = 0;
    for (int t = 1; t < nt; ++t) {
        if (pthread_create(&th[t], NULL, worker, &jobs[t]) != 0) { err = -3; break; }
        started = t;
    }
    if (err) {
        /* run the remaining chunks on this thread (cold mode shares the counter anyway) */
        for (int t = started + 1; t < nt; ++t) worker(&jobs[t]);
    }
    worker(&jobs[0]);
    for (int t = 1; t <= started; ++t) pthread_join(th[t], NULL);
    int64_t failures = 0;
    int error = 0;
    for (int t = 0; t < nt; ++t) {
        failures += jobs[t].failures;
        if (jobs[t].error) error = jobs[t].error;
    }
    free(jobs);
    free(th);
    free(p_start);
    return error ? error : failures;
}
