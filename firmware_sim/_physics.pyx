# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython wrapper of the virtual-DNPU C kernel (firmware_sim/physics/csrc/dnpu_kernel.c).

Low level: use `firmware_sim.physics.VirtualDNPU`, which builds a `Kernel` from a seeded device.
Every array is validated here (shape, dtype, finiteness, voltage bounds) before the C code, which
runs with the GIL released, sees it.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t, int32_t

cnp.import_array()

cdef extern from "dnpu_kernel.h" nogil:
    int DNPU_NE
    int DNPU_NACT
    int DNPU_MAX_SITES
    ctypedef struct dnpu_model:
        int n
        const double *psi
        const double *e_static
        const double *coul
        const double *w
        const double *u
        const double *p_guess
        double beta
        double dt0
        double dt_max
        double tol_abs
        double tol_quad
        int max_iter
    ctypedef struct dnpu_batch:
        int64_t count
        const double *volts
        const double *beta
        double *currents
        int ncols
        int warm
        double *p_state
        int32_t *iters
        int nthreads
    int64_t dnpu_solve_batch(const dnpu_model *model, const dnpu_batch *batch)

MAX_ABS_VOLTS = 2.5          # beyond this the device model is not meant to be driven
MAX_SITES = DNPU_MAX_SITES


cdef cnp.ndarray _f64(object a, tuple shape, str name):
    arr = np.ascontiguousarray(a, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


cdef class Kernel:
    """A device's constant arrays plus solver settings; `solve` evaluates batches of voltages."""
    cdef dnpu_model m
    cdef readonly int n_sites
    cdef object _keep

    def __init__(self, psi, e_static, coulomb, w_site, w_elec, p_guess, double beta,
                 double dt0=100.0, double dt_max=1e14, double tol_abs=1e-11, double tol_quad=1e-6,
                 int max_iter=60):
        e = np.ascontiguousarray(e_static, dtype=np.float64)
        if e.ndim != 1 or not 1 <= e.shape[0] <= DNPU_MAX_SITES:
            raise ValueError(f"e_static must be 1-D with 1..{DNPU_MAX_SITES} sites")
        n = e.shape[0]
        arrs = [
            _f64(psi, (n, DNPU_NE), "psi"), _f64(e, (n,), "e_static"),
            _f64(coulomb, (n, n), "coulomb"), _f64(w_site, (n, n), "w_site"),
            _f64(w_elec, (n, DNPU_NE), "w_elec"), _f64(p_guess, (n,), "p_guess"),
        ]
        if not (beta > 0 and np.isfinite(beta)):
            raise ValueError("beta must be positive and finite")
        if not (dt0 > 0 and dt_max >= dt0 and tol_abs > 0 and tol_quad > 0 and max_iter >= 1):
            raise ValueError("invalid solver settings")
        self._keep = arrs
        self.n_sites = n
        cdef const double[:, ::1] psi_v = arrs[0]
        cdef const double[::1] e_v = arrs[1]
        cdef const double[:, ::1] c_v = arrs[2]
        cdef const double[:, ::1] w_v = arrs[3]
        cdef const double[:, ::1] u_v = arrs[4]
        cdef const double[::1] g_v = arrs[5]
        self.m.n = n
        self.m.psi = &psi_v[0, 0]
        self.m.e_static = &e_v[0]
        self.m.coul = &c_v[0, 0]
        self.m.w = &w_v[0, 0]
        self.m.u = &u_v[0, 0]
        self.m.p_guess = &g_v[0]
        self.m.beta = beta
        self.m.dt0 = dt0
        self.m.dt_max = dt_max
        self.m.tol_abs = tol_abs
        self.m.tol_quad = tol_quad
        self.m.max_iter = max_iter

    @property
    def beta(self) -> float:
        return self.m.beta

    def solve(self, volts, beta=None, bint all_currents=False, bint warm=False, p_state=None,
              int nthreads=1, bint return_iters=False):
        """Steady-state hole currents (units e nu) for volts [n, 7].

        Returns currents [n] (readout) or [n, 8] (all_currents), and iterations [n] if
        return_iters (-1 where a configuration did not converge; its current is NaN).
        beta: optional [n] per-configuration 1/kT (1/eV). warm: start each configuration from the
        previous one (per thread chunk); p_state: float64 [n_sites] array, the state before the
        first configuration, overwritten with the state after the last (use nthreads=1 to chain).
        """
        v = np.ascontiguousarray(volts, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != DNPU_NACT:
            raise ValueError(f"volts must have shape [n, {DNPU_NACT}], got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("volts contains NaN or infinite values")
        if v.size and np.max(np.abs(v)) > MAX_ABS_VOLTS:
            raise ValueError(f"volts outside +-{MAX_ABS_VOLTS} V")
        cdef int64_t count = v.shape[0]
        if nthreads < 1 or nthreads > 256:
            raise ValueError("nthreads must be in 1..256")
        cdef const double[:, ::1] vv = v if count else np.zeros((1, DNPU_NACT))
        cdef const double[::1] bv
        cdef const double *bptr = NULL
        if beta is not None:
            b = np.ascontiguousarray(beta, dtype=np.float64)
            if b.shape != (count,):
                raise ValueError(f"beta must have shape ({count},), got {b.shape}")
            if not np.all(np.isfinite(b)) or (count and (np.min(b) < 0.25 * self.m.beta or np.max(b) > 4 * self.m.beta)):
                raise ValueError("beta must be finite and within a factor 4 of the device's 1/kT")
            if count:
                bv = b
                bptr = &bv[0]
        cdef int ncols = DNPU_NE if all_currents else 1
        out = np.empty((count, ncols), dtype=np.float64)
        its = np.empty(count, dtype=np.int32)
        cdef double[:, ::1] ov = out if count else np.zeros((1, ncols))
        cdef int32_t[::1] iv = its if count else np.zeros(1, dtype=np.int32)
        cdef double[::1] sv
        cdef double *sptr = NULL
        if p_state is not None:
            if not isinstance(p_state, np.ndarray) or p_state.dtype != np.float64 or \
                    p_state.shape != (self.n_sites,) or not p_state.flags.c_contiguous or \
                    not p_state.flags.writeable:
                raise ValueError(f"p_state must be a writeable C-contiguous float64 array of shape ({self.n_sites},)")
            if not np.all((p_state >= 0) & (p_state <= 1)):
                raise ValueError("p_state must lie in [0, 1]")
            sv = p_state
            sptr = &sv[0]
        cdef dnpu_batch bt
        bt.count = count
        bt.volts = &vv[0, 0]
        bt.beta = bptr
        bt.currents = &ov[0, 0]
        bt.ncols = ncols
        bt.warm = 1 if warm else 0
        bt.p_state = sptr
        bt.iters = &iv[0]
        bt.nthreads = nthreads
        cdef int64_t rc
        with nogil:
            rc = dnpu_solve_batch(&self.m, &bt)
        if rc < 0:
            raise RuntimeError(f"dnpu kernel error {rc}")
        res = out if all_currents else out[:, 0]
        if return_iters:
            return res, its
        return res


def ar1(const double[::1] u, double a, double y0):
    """y[t] = a y[t-1] + u[t] with y[-1] = y0 (a first-order recursion, for the analog chain)."""
    cdef Py_ssize_t n = u.shape[0], t
    out = np.empty(n, dtype=np.float64)
    cdef double[::1] o = out
    cdef double y = y0
    with nogil:
        for t in range(n):
            y = a * y + u[t]
            o[t] = y
    return out


def lowpass_hold(const double[::1] x, double a, double y0, Py_ssize_t os):
    """Single-pole filter of a held input sampled os times per row.

    x: [n] input, constant over each row; y after each sub-step: y = x + (y - x) a.
    Returns the [n * os] filtered sub-samples.
    """
    cdef Py_ssize_t n = x.shape[0], r, s
    if os < 1:
        raise ValueError("os must be >= 1")
    out = np.empty(n * os, dtype=np.float64)
    cdef double[::1] o = out
    cdef double y = y0, xv
    with nogil:
        for r in range(n):
            xv = x[r]
            for s in range(os):
                y = xv + (y - xv) * a
                o[r * os + s] = y
    return out


def settle(const double[:, ::1] target, double[::1] v0, double a_rc, double max_step):
    """Line settling per row: slew-limited first-order approach of each channel to its target.

    Each row: step = (target - v) (1 - a_rc), clipped to +-max_step; v += step.
    Returns the device-side voltages [n, k] at the end of each row; v0 [k] is updated in place.
    """
    cdef Py_ssize_t n = target.shape[0], k = target.shape[1], r, c
    if v0.shape[0] != k:
        raise ValueError("v0 must have one entry per channel")
    out = np.empty((n, k), dtype=np.float64)
    cdef double[:, ::1] o = out
    cdef double step
    with nogil:
        for r in range(n):
            for c in range(k):
                step = (target[r, c] - v0[c]) * (1.0 - a_rc)
                if step > max_step:
                    step = max_step
                elif step < -max_step:
                    step = -max_step
                v0[c] = v0[c] + step
                o[r, c] = v0[c]
    return out


def ou_sum(double[::1] state, const double[::1] rho, const double[::1] amp, const double[:, ::1] z):
    """Advance a bank of Ornstein-Uhlenbeck processes and return their sum at every step.

    state [m] (updated in place), rho [m] per-step decay, amp [m] innovation scale, z [n, m]
    standard normals: x_j <- rho_j x_j + amp_j z[t, j]; out[t] = sum_j x_j.
    """
    cdef Py_ssize_t m = state.shape[0], n = z.shape[0], t, j
    if rho.shape[0] != m or amp.shape[0] != m or z.shape[1] != m:
        raise ValueError("ou_sum: state, rho, amp and z must agree in the number of processes")
    out = np.empty(n, dtype=np.float64)
    cdef double[::1] o = out
    cdef double s
    with nogil:
        for t in range(n):
            s = 0.0
            for j in range(m):
                state[j] = rho[j] * state[j] + amp[j] * z[t, j]
                s = s + state[j]
            o[t] = s
    return out
