"""Plain NumPy reference of the mean-field steady state (used by the tests against the C kernel).

Hole picture, energies in units of kT (beta = 1/kT):

    eps_i(p) = beta [phi_i + E_i] - beta sum_{j != i} C_ij (1 - p_j)
    phi_i = sum_k V_k psi_ik,  E_i = I0 sum_d R/r_id + mu0 + sigma xi_i,  C_ij = I0 R / r_ij
    eps_k = beta V_k                     (electrode levels; V_7 = 0, the readout)

Smoothed Miller-Abrahams rates with f(x) = 1 / (1 + e^x) and nu = 1:

    Gamma_ij = W_ij f(eps_j - eps_i),  W_ij = exp(-2 r_ij / a)
    Gamma_ik = U_ik f(eps_k - eps_i),  Gamma_ki = U_ik f(eps_i - eps_k),  U_ik = c_k exp(-2 d_ik / a)

Steady state F(p) = 0 of the master equation

    F_i = sum_j [Gamma_ji p_j (1 - p_i) - Gamma_ij p_i (1 - p_j)] + sum_k U_ik [f(eps_i - eps_k) - p_i]

solved by pseudo-transient continuation, (J - I/dt) delta = -F with the analytic Jacobian and dt
grown by the ratio of successive residual norms. The current into electrode k (holes, units of
e nu) is I_k = sum_i U_ik [p_i - f(eps_i - eps_k)], so sum_k I_k = -sum_i F_i = 0 at steady state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.electrodes import N_ELECTRODES

from .geometry import N_CONTACTS, READOUT, Geometry


@dataclass(frozen=True)
class SolverConfig:
    """Pseudo-transient continuation settings (shared by the NumPy reference and the C kernel)."""

    dt0: float = 100.0          # first pseudo time step (units of 1/nu)
    dt_max: float = 1e14        # cap on the pseudo time step
    tol_abs: float = 1e-11      # converged when max |delta p| < tol_abs, or
    tol_quad: float = 1e-6      # when max |delta p| < tol_quad and the step shrank quadratically
    max_iter: int = 60


def fermi(x: np.ndarray) -> np.ndarray:
    """f(x) = 1 / (1 + e^x), overflow-safe."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(np.clip(x, -700.0, 700.0)))


def volts8(volts7: np.ndarray) -> np.ndarray:
    """Append the readout (0 V) to the 7 activation voltages."""
    v = np.zeros(N_CONTACTS)
    v[:N_ELECTRODES] = volts7
    v[READOUT] = 0.0
    return v


def static_energies(geom: Geometry, volts7: np.ndarray, beta: float) -> np.ndarray:
    """beta [phi_i + E_i]: the p-independent part of eps_i."""
    return beta * (geom.psi @ volts8(volts7) + geom.e_static_ev)


def residual_and_jacobian(geom: Geometry, volts7: np.ndarray, p: np.ndarray, beta: float,
                          jacobian: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """F(p) and dF/dp for one configuration."""
    C = beta * geom.coulomb_ev
    eps = static_energies(geom, volts7, beta) - C @ (1.0 - p)
    epk = beta * volts8(volts7)
    W = geom.w_site
    U = geom.w_elec
    x = eps[:, None] - eps[None, :]                 # x_ij = eps_i - eps_j
    fx = fermi(x)                                   # f(eps_i - eps_j): rate factor j -> i
    pi, pj = p[:, None], p[None, :]
    S = pi + pj - 2.0 * pi * pj
    # net flow from j into i
    flow = W * (fx * S - pi * (1.0 - pj))
    y = eps[:, None] - epk[None, :]
    fy = fermi(y)
    F = flow.sum(axis=1) + (U * (fy - pi)).sum(axis=1)
    if not jacobian:
        return F, None
    dflow_dpi = W * (fx * (1.0 - 2.0 * pj) - (1.0 - pj))
    dflow_dpj = W * (fx * (1.0 - 2.0 * pi) + pi)
    J = dflow_dpj.copy()
    np.fill_diagonal(J, 0.0)
    J[np.diag_indices_from(J)] = dflow_dpi.sum(axis=1) - U.sum(axis=1)
    # Coulomb: eps_i depends on p_m through C_im
    A = W * (-fx * (1.0 - fx)) * S                  # W_ij f'(x_ij) S_ij (symmetric)
    B = (U * (-fy * (1.0 - fy))).sum(axis=1)        # sum_k U_ik f'(y_ik)
    D = A.sum(axis=1) + B
    J += D[:, None] * C - A @ C
    return F, J


def electrode_currents(geom: Geometry, volts7: np.ndarray, p: np.ndarray, beta: float) -> np.ndarray:
    """Hole current into each of the 8 electrodes (units of e nu)."""
    C = beta * geom.coulomb_ev
    eps = static_energies(geom, volts7, beta) - C @ (1.0 - p)
    y = eps[:, None] - beta * volts8(volts7)[None, :]
    return (geom.w_elec * (p[:, None] - fermi(y))).sum(axis=0)


def cold_guess(geom: Geometry) -> np.ndarray:
    """The fixed starting point of a cold solve: every site half occupied.

    The same for every configuration, so a cold result depends on that configuration only.
    """
    return np.full(geom.n_sites, 0.5)


def solve(geom: Geometry, volts7: np.ndarray, beta: float | None = None,
          p0: np.ndarray | None = None, cfg: SolverConfig = SolverConfig()
          ) -> tuple[np.ndarray, int]:
    """Steady-state occupations for one configuration; returns (p, iterations).

    Pseudo-transient continuation: (J - I/dt) delta = -F, p <- clip(p + delta, 0, 1),
    dt <- dt ||F_old|| / ||F_new||. Converged when max|delta| < tol_abs, or when
    max|delta| < tol_quad and the step shrank quadratically (then the error left is ~delta^2).
    """
    b = geom.beta if beta is None else float(beta)
    v = np.asarray(volts7, dtype=float)
    p = cold_guess(geom) if p0 is None else np.array(p0, dtype=float)
    n = geom.n_sites
    dt = cfg.dt0
    fprev = -1.0
    dprev = np.inf
    for it in range(1, cfg.max_iter + 1):
        F, J = residual_and_jacobian(geom, v, p, b)
        fn = float(np.linalg.norm(F))
        if fprev > 0:
            dt = min(cfg.dt_max, dt * fprev / fn) if fn > 0 else cfg.dt_max
        fprev = fn
        delta = np.linalg.solve(J - np.eye(n) / dt, -F)
        p = np.clip(p + delta, 0.0, 1.0)
        dmax = float(np.max(np.abs(delta)))
        if dmax < cfg.tol_abs or (dmax < cfg.tol_quad and dmax <= 10.0 * dprev * dprev):
            return p, it
        dprev = dmax
    raise RuntimeError(f"steady state did not converge in {cfg.max_iter} iterations")


def currents(geom: Geometry, volts: np.ndarray, beta: float | None = None,
             cfg: SolverConfig = SolverConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Cold-start steady state for each row of volts [n, 7]: (currents [n, 8] in e nu, iterations [n])."""
    v = np.atleast_2d(np.asarray(volts, dtype=float))
    b = geom.beta if beta is None else float(beta)
    out = np.empty((v.shape[0], N_CONTACTS))
    its = np.empty(v.shape[0], dtype=int)
    for r in range(v.shape[0]):
        p, its[r] = solve(geom, v[r], b, cfg=cfg)
        out[r] = electrode_currents(geom, v[r], p, b)
    return out, its
