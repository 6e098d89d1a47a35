/* Mean-field steady state of a virtual DNPU (hopping on a dopant network), batch solver.
 * Plain C11 + pthreads. See firmware_sim/physics/reference.py for the equations; this file is
 * an independent implementation of the same solver for batches of voltage configurations.
 */
#ifndef DNPU_KERNEL_H
#define DNPU_KERNEL_H

#include <stdint.h>

#define DNPU_NE 8          /* electrodes; index 7 is the readout at 0 V */
#define DNPU_NACT 7        /* activation electrodes given per configuration */
#define DNPU_MAX_SITES 256

typedef struct {
    int n;                     /* sites */
    const double *psi;         /* [n][8] electrostatic basis at the sites */
    const double *e_static;    /* [n] static site energies (eV) */
    const double *coul;        /* [n][n] I0 R / r_ij (eV), zero diagonal, symmetric */
    const double *w;           /* [n][n] exp(-2 r_ij / a), zero diagonal, symmetric */
    const double *u;           /* [n][8] c_k exp(-2 d_ik / a) */
    const double *p_guess;     /* [n] fixed cold-start occupations */
    double beta;               /* 1/kT (1/eV) when no per-configuration beta is given */
    double dt0;                /* first pseudo time step */
    double dt_max;             /* largest pseudo time step */
    double tol_abs;            /* converged when max|delta| < tol_abs ... */
    double tol_quad;           /* ... or max|delta| < tol_quad in the quadratic regime */
    int max_iter;              /* per attempt */
} dnpu_model;

typedef struct {
    int64_t count;             /* configurations */
    const double *volts;       /* [count][7] activation voltages (V) */
    const double *beta;        /* [count] per-configuration 1/kT, or NULL for model->beta */
    double *currents;          /* [count][ncols] hole current into electrodes (units e nu) */
    int ncols;                 /* 1: readout only; 8: all electrodes */
    int warm;                  /* 0: every configuration starts from p_guess (cold) */
    double *p_state;           /* [n] warm: start of configuration 0 (in) and end of the last (out); may be NULL */
    int32_t *iters;            /* [count] iterations used (-1: not converged), or NULL */
    int nthreads;
} dnpu_batch;

/* Solve a batch. Cold results depend only on each configuration (not on batch composition or
 * thread count). Warm: each thread's contiguous chunk starts from p_state (chunk 0) or p_guess
 * and warm-starts every configuration from the previous one.
 * Returns the number of configurations that did not converge (their currents are NaN), or a
 * negative error code (-1 bad arguments, -2 out of memory, -3 thread creation failed). */
int64_t dnpu_solve_batch(const dnpu_model *model, const dnpu_batch *batch);

#endif
