"""Seeded geometry and electrostatics of a virtual DNPU (see docs/virtual-dnpu.md).

A disc of radius 150 nm with 8 contact arcs (~60 nm wide, 45 deg apart): the activation electrodes
e0..e6 and, as contact 7, the readout, N acceptors and M compensating donors at random positions. Everything that differs from
device to device (positions, disorder, contact factors, localisation length, Fermi-level offset,
current scale) is drawn from the seed.

The electrostatic basis functions psi_k (Laplace's equation, psi_k = 1 on arc k, 0 on the other
arcs, zero normal flux on the gaps) are solved once per device on the boundary: a harmonic
function in a disc is fixed by its boundary values g, whose Dirichlet-to-Neumann map is diagonal
in Fourier space (mode n -> |n| / R). The mixed problem is then a dense solve for g on the gap
nodes, and psi_k(r_i) follows from the Fourier (Poisson) series at each site. Because the problem
is linear and psi = 1 on every arc gives psi = 1 everywhere, sum_k psi_k = 1 to rounding.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.electrodes import N_ELECTRODES

N_CONTACTS = N_ELECTRODES + 1     # the activation electrodes, then the readout
READOUT = N_ELECTRODES            # index of the readout contact
E2_OVER_4PI_EPS0_EV_NM = 1.439964547  # e^2 / (4 pi eps0) in eV nm
K_B_EV = 8.617333262e-5  # eV / K


@dataclass(frozen=True)
class DeviceParams:
    """Physical parameters of a virtual DNPU and the ranges that seeded variation draws from.

    Values are those of the design note (docs/virtual-dnpu.md); they are physical and are not
    tuned to make any experiment reach a target.
    """

    n_sites: int = 30                  # acceptors (20..40 useful)
    n_donors: int = 3                  # compensating donors
    radius_nm: float = 150.0           # disc radius
    electrode_width_nm: float = 60.0   # arc length of each electrode
    eps_r: float = 11.7                # silicon
    temperature_k: float = 77.0
    sigma_ev: float = 0.050            # energetic disorder (std of site energies)
    mu0_ev: float = -0.15              # Fermi-level offset (centre of the seeded range)
    mu0_spread_ev: float = 0.02        # mu0 drawn uniformly in mu0 +- spread
    a_over_r: tuple[float, float] = (0.5, 1.0)  # localisation length range, units of R
    contact_log_sigma: float = 0.4     # contact factors c_k ~ lognormal(0, this)
    min_separation_nm: float = 3.0     # no two impurities closer than this
    edge_margin_nm: float = 3.0        # impurities stay this far inside the disc edge
    n_boundary: int = 2048             # boundary nodes of the Laplace solve
    # Output scale: after calibration the 0.5th percentile of the clean current over random
    # voltages in the working ranges sits at target_p05_na * (a seeded factor in scale_range).
    target_p05_na: float = -300.0
    scale_range: tuple[float, float] = (0.9, 1.0)
    n_calibration: int = 4096

    def __post_init__(self) -> None:
        if not 2 <= int(self.n_sites) <= 200:
            raise ValueError(f"n_sites must be in [2, 200], got {self.n_sites}")
        if not 0 <= int(self.n_donors) <= self.n_sites:
            raise ValueError(f"n_donors must be in [0, n_sites], got {self.n_donors}")
        if not self.temperature_k > 0:
            raise ValueError("temperature_k must be > 0")
        if not 0 < self.a_over_r[0] <= self.a_over_r[1]:
            raise ValueError("a_over_r must be an increasing pair of positive numbers")

    @property
    def mean_spacing_nm(self) -> float:
        """R = sqrt(pi r_disc^2 / N)."""
        return float(np.sqrt(np.pi * self.radius_nm ** 2 / self.n_sites))

    @property
    def i0_ev(self) -> float:
        """Coulomb scale I0 = e^2 / (4 pi eps0 eps_r R)."""
        return E2_OVER_4PI_EPS0_EV_NM / (self.eps_r * self.mean_spacing_nm)


# Working ranges of the activation electrodes e0..e6 (volts), declared once: the simulated
# board's default hard limits are these.
WORKING_RANGES_V = np.array([[-1.2, 0.6]] * 5 + [[-0.7, 0.3]] * 2)
WORKING_RANGES_V.setflags(write=False)


def electrode_angles() -> np.ndarray:
    """Centre angle of each contact arc (rad); contact k at k * 360 / N_CONTACTS deg."""
    return np.arange(N_CONTACTS) * (2 * np.pi / N_CONTACTS)


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def _place(rng: np.random.Generator, count: int, rmax: float, existing: list[np.ndarray],
           min_sep: float) -> np.ndarray:
    """Uniform positions in a disc of radius rmax, rejecting any closer than min_sep."""
    pts: list[np.ndarray] = []
    others = list(existing)
    tries = 0
    while len(pts) < count:
        tries += 1
        if tries > 100000:
            raise RuntimeError("could not place impurities with the requested minimum separation")
        r = rmax * np.sqrt(rng.random())
        t = 2 * np.pi * rng.random()
        p = np.array([r * np.cos(t), r * np.sin(t)])
        if all(np.hypot(*(p - q)) >= min_sep for q in others):
            pts.append(p)
            others.append(p)
    return np.array(pts).reshape(count, 2)


def arc_distances(xy: np.ndarray, radius: float, half_angle: float) -> np.ndarray:
    """Distance from each point to the nearest point of each contact arc, [n, N_CONTACTS]."""
    r = np.hypot(xy[:, 0], xy[:, 1])
    th = np.arctan2(xy[:, 1], xy[:, 0])
    out = np.empty((len(xy), N_CONTACTS))
    for k, c in enumerate(electrode_angles()):
        dth = _wrap(th - c)
        inside = np.abs(dth) <= half_angle
        # nearest point: the radial projection if within the arc, else the nearer end
        end = c + np.sign(dth) * half_angle
        ex, ey = radius * np.cos(end), radius * np.sin(end)
        d_end = np.hypot(xy[:, 0] - ex, xy[:, 1] - ey)
        out[:, k] = np.where(inside, radius - r, d_end)
    return out


def laplace_basis(xy: np.ndarray, radius: float, half_angle: float, n_boundary: int = 2048
                  ) -> np.ndarray:
    """psi_k at the given points, [n, N_CONTACTS]: psi_k = 1 on arc k, 0 on the other arcs, dpsi/dn = 0 on gaps.

    Spectral Dirichlet-to-Neumann solve on n_boundary equispaced boundary nodes (see module doc).
    """
    m = int(n_boundary)
    theta = 2 * np.pi * np.arange(m) / m
    on_arc = np.full(m, -1)
    for k, c in enumerate(electrode_angles()):
        on_arc[np.abs(_wrap(theta - c)) <= half_angle] = k
    arc_idx = np.flatnonzero(on_arc >= 0)
    gap_idx = np.flatnonzero(on_arc < 0)
    # circulant Dirichlet-to-Neumann operator (times radius): column 0 = ifft(|n|)
    nabs = np.abs(np.fft.fftfreq(m, 1.0 / m))
    col = np.real(np.fft.ifft(nabs))
    dtn = col[(np.arange(m)[:, None] - np.arange(m)[None, :]) % m]
    g_arc = np.zeros((arc_idx.size, N_CONTACTS))
    g_arc[np.arange(arc_idx.size), on_arc[arc_idx]] = 1.0
    rhs = -dtn[np.ix_(gap_idx, arc_idx)] @ g_arc
    g_gap = np.linalg.solve(dtn[np.ix_(gap_idx, gap_idx)], rhs)
    g = np.zeros((m, N_CONTACTS))
    g[arc_idx] = g_arc
    g[gap_idx] = g_gap
    # Poisson series: psi(r, t) = sum_n ghat_n (r/R)^|n| e^{i n t}
    ghat = np.fft.fft(g, axis=0) / m                      # [m, 8]
    nsig = np.fft.fftfreq(m, 1.0 / m)                     # signed mode numbers
    r = np.hypot(xy[:, 0], xy[:, 1]) / radius
    t = np.arctan2(xy[:, 1], xy[:, 0])
    with np.errstate(under="ignore"):
        damp = r[:, None] ** nabs[None, :]                # [n, m]
    phase = np.exp(1j * t[:, None] * nsig[None, :])
    return np.real((damp * phase) @ ghat)


@dataclass(frozen=True)
class Geometry:
    """A seeded device: positions, couplings and static energies (all arrays read-only)."""

    seed: int
    params: DeviceParams
    sites_nm: np.ndarray          # [N, 2]
    donors_nm: np.ndarray         # [M, 2]
    a_nm: float                   # localisation length
    mu0_ev: float
    contact: np.ndarray           # [8] contact factors c_k
    xi: np.ndarray                # [N] disorder draws ~ N(0, 1)
    scale_factor: float           # seeded factor on the calibrated output scale
    psi: np.ndarray               # [N, 8] electrostatic basis at the sites
    e_static_ev: np.ndarray       # [N] I0 sum_d R/r_id + mu0 + sigma xi_i
    coulomb_ev: np.ndarray        # [N, N] I0 R / r_ij, zero diagonal
    w_site: np.ndarray            # [N, N] exp(-2 r_ij / a), zero diagonal
    w_elec: np.ndarray            # [N, 8] c_k exp(-2 d_ik / a)
    extras: dict = field(default_factory=dict)

    @property
    def n_sites(self) -> int:
        return int(self.sites_nm.shape[0])

    @property
    def beta(self) -> float:
        """1 / kT in 1/eV at the nominal temperature."""
        return 1.0 / (K_B_EV * self.params.temperature_k)

    def describe(self) -> dict:
        return {
            "seed": int(self.seed), "n_sites": self.n_sites, "n_donors": int(self.donors_nm.shape[0]),
            "radius_nm": self.params.radius_nm, "temperature_k": self.params.temperature_k,
            "a_nm": round(self.a_nm, 4), "mu0_ev": round(self.mu0_ev, 5),
            "sigma_ev": self.params.sigma_ev, "i0_ev": round(self.params.i0_ev, 6),
            "contact": [round(float(c), 4) for c in self.contact],
        }


def make_geometry(seed: int, params: DeviceParams | None = None) -> Geometry:
    """Draw a device from its seed and solve its electrostatics (~0.1 s)."""
    p = params or DeviceParams()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x444E5055]))
    rmax = p.radius_nm - p.edge_margin_nm
    sites = _place(rng, p.n_sites, rmax, [], p.min_separation_nm)
    donors = _place(rng, p.n_donors, rmax, list(sites), p.min_separation_nm)
    R = p.mean_spacing_nm
    a = R * rng.uniform(*p.a_over_r)
    mu0 = p.mu0_ev + rng.uniform(-p.mu0_spread_ev, p.mu0_spread_ev)
    contact = np.exp(p.contact_log_sigma * rng.standard_normal(N_CONTACTS))
    xi = rng.standard_normal(p.n_sites)
    scale_factor = float(rng.uniform(*p.scale_range))

    half = 0.5 * p.electrode_width_nm / p.radius_nm
    psi = laplace_basis(sites, p.radius_nm, half, p.n_boundary)
    i0 = p.i0_ev
    rij = np.hypot(sites[:, None, 0] - sites[None, :, 0], sites[:, None, 1] - sites[None, :, 1])
    np.fill_diagonal(rij, np.inf)
    coul = i0 * R / rij
    w_site = np.exp(-2.0 * rij / a)
    if p.n_donors:
        rid = np.hypot(sites[:, None, 0] - donors[None, :, 0], sites[:, None, 1] - donors[None, :, 1])
        e_don = i0 * np.sum(R / rid, axis=1)
    else:
        e_don = np.zeros(p.n_sites)
    e_static = e_don + mu0 + p.sigma_ev * xi
    d_ik = arc_distances(sites, p.radius_nm, half)
    w_elec = contact[None, :] * np.exp(-2.0 * d_ik / a)
    arrays = [sites, donors, contact, xi, psi, e_static, coul, w_site, w_elec]
    for arr in arrays:
        arr.setflags(write=False)
    return Geometry(seed=int(seed), params=p, sites_nm=sites, donors_nm=donors, a_nm=float(a),
                    mu0_ev=float(mu0), contact=contact, xi=xi, scale_factor=scale_factor, psi=psi,
                    e_static_ev=e_static, coulomb_ev=coul, w_site=w_site, w_elec=w_elec)
