"""Harmonic thermal displacements of a supercell: Monte Carlo (with antithetic pairs) and the special
displacement method (one Zacharias–Giustino configuration per temperature).

The supercell's force constants Φ (eV/Å²) give the dynamical matrix D = M^{-1/2} Φ M^{-1/2} at the
supercell's Γ point, i.e. every phonon q commensurate with the supercell. Its normal modes (ω_ν, e_ν)
give displacements u_a = Σ_ν e_{aν} Q_ν / √M_a with independent Gaussian normal coordinates of variance

* quantum:   σ_ν² = ħ / (2 ω_ν) · coth(ħω_ν / 2k_BT)   (zero-point motion at T = 0 K)
* classical: σ_ν² = k_B T / ω_ν²

in amu·Å². Modes at or below ``cutoff_frequency_THz`` (the three Γ translations, any imaginary mode, soft
modes) are not sampled. :func:`excluded_modes` lists them (frequency, wave vector, kind: acoustic, imaginary,
below cutoff) for the run's summary, and :func:`check_imaginary_modes` stops a run whose force constants
have imaginary modes beyond a threshold before anything is sampled: leaving such a mode out is not a
thermal average, it is a sign that the force constants are wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import units

THZ_PER_SQRT_EV_A2_AMU = float(np.sqrt(units._e / units._amu) * 1e10 / (2 * np.pi) / 1e12)
"""ν (THz) = this × √λ for an eigenvalue λ of D in eV/(Å²·amu) (phonopy's VaspToTHz, 15.633302)."""
HBAR_EV_S = units._hbar / units._e
KB_EV_K = units.kB


@dataclass
class NormalModes:
    """Supercell normal modes: ``frequencies_THz`` (3N,) (negative: imaginary), ``eigenvectors``
    (3N, 3N) columns mass-weighted, ``masses`` (N,) amu."""

    frequencies_THz: np.ndarray
    eigenvectors: np.ndarray
    masses: np.ndarray

    @classmethod
    def from_force_constants(cls, force_constants: np.ndarray, masses) -> "NormalModes":
        fc = np.asarray(force_constants)
        n = fc.shape[0]
        m = np.repeat(np.asarray(masses, dtype=float), 3)
        phi = fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
        dyn = phi / np.sqrt(np.outer(m, m))
        lam, vec = np.linalg.eigh(0.5 * (dyn + dyn.T))
        nu = np.sign(lam) * np.sqrt(np.abs(lam)) * THZ_PER_SQRT_EV_A2_AMU
        return cls(nu, vec, np.asarray(masses, dtype=float))


def mode_variances(modes: NormalModes, temperature_K: float, quantum: bool = True,
                   cutoff_frequency_THz: float = 0.1) -> np.ndarray:
    """σ_ν² (amu·Å²) of every normal coordinate at ``temperature_K``; 0 for modes below the cutoff."""
    if temperature_K < 0:
        raise ValueError(f"temperature must be ≥ 0 K, got {temperature_K} K")
    nu = modes.frequencies_THz
    keep = nu > cutoff_frequency_THz
    omega = 2 * np.pi * nu[keep] * 1e12  # rad/s
    # ħ/(2ω) in eV·s²  ->  amu·Å²  (1 eV·s² = e / amu · 1e20 amu·Å²)
    to_amu_a2 = units._e / units._amu * 1e20
    var = np.zeros_like(nu)
    if quantum:
        x = HBAR_EV_S * omega / (2 * KB_EV_K * temperature_K) if temperature_K > 0 else np.full_like(omega, np.inf)
        coth = np.where(np.isinf(x), 1.0, 1.0 / np.tanh(np.minimum(x, 700)))
        var[keep] = HBAR_EV_S / (2 * omega) * coth * to_amu_a2
    else:
        var[keep] = KB_EV_K * temperature_K / omega**2 * to_amu_a2
    return var


def _to_cartesian(modes: NormalModes, q: np.ndarray) -> np.ndarray:
    """u (..., N, 3) Å from normal coordinates q (..., 3N) amu^{1/2}·Å."""
    u = q @ modes.eigenvectors.T
    return (u.reshape(*q.shape[:-1], -1, 3)) / np.sqrt(modes.masses)[:, None]


def thermal_displacements(modes: NormalModes, temperature_K: float, n_samples: int, seed: int,
                          quantum: bool = True, antithetic: bool = True,
                          cutoff_frequency_THz: float = 0.1) -> np.ndarray:
    """Monte Carlo displacements (n_samples, N, 3) in Å from the harmonic distribution at T.

    With ``antithetic`` the samples come in ± pairs (n_samples must be even): odd-order terms of any
    observable cancel exactly within a pair, which lowers the variance of ⟨O(u)⟩."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be ≥ 1, got {n_samples}")
    if antithetic and n_samples % 2:
        raise ValueError(f"antithetic sampling needs an even number of samples, got {n_samples}. "
                         "Fix: use an even n_samples or antithetic=false")
    sigma = np.sqrt(mode_variances(modes, temperature_K, quantum, cutoff_frequency_THz))
    rng = np.random.default_rng(seed)
    n_draw = n_samples // 2 if antithetic else n_samples
    q = rng.standard_normal((n_draw, len(sigma))) * sigma
    if antithetic:
        q = np.stack([q, -q], axis=1).reshape(n_samples, len(sigma))
    return _to_cartesian(modes, q)


def special_displacement(modes: NormalModes, temperature_K: float, quantum: bool = True,
                         cutoff_frequency_THz: float = 0.1, seed: int | None = None) -> np.ndarray:
    """The special displacement method's configuration (N, 3) Å (Zacharias & Giustino, PRB 94, 075125
    (2016); PRR 2, 013357 (2020)): every normal coordinate at its thermal amplitude, Q_ν = s_ν σ_ν, with
    signs s_ν alternating (+, −, +, …) over the modes sorted by frequency, so that cross terms
    Σ_{ν≠ν'} s_ν s_ν' … cancel to leading order and one configuration reproduces the thermal average.

    ``seed``: another configuration of the same kind: the frequency-adjacent pairs (ν₂ₖ, ν₂ₖ₊₁) keep
    opposite signs, but each pair's sign is drawn at random. The spread over such configurations measures
    what the leading-order cancellation leaves (the SDM's error bar)."""
    sigma = np.sqrt(mode_variances(modes, temperature_K, quantum, cutoff_frequency_THz))
    order = np.argsort(modes.frequencies_THz, kind="stable")
    sampled = order[sigma[order] > 0]
    signs = np.zeros_like(sigma)
    alternating = np.where(np.arange(len(sampled)) % 2 == 0, 1.0, -1.0)
    if seed is not None:
        pair_sign = np.random.default_rng(seed).choice([-1.0, 1.0], size=(len(sampled) + 1) // 2)
        alternating *= np.repeat(pair_sign, 2)[: len(sampled)]
    signs[sampled] = alternating
    return _to_cartesian(modes, signs * sigma)


def mean_square_displacement(modes: NormalModes, temperature_K: float, quantum: bool = True,
                             cutoff_frequency_THz: float = 0.1) -> np.ndarray:
    """Exact harmonic ⟨u_aα²⟩ (N, 3) Å² = Σ_ν σ_ν² e_{aα,ν}² / M_a."""
    var = mode_variances(modes, temperature_K, quantum, cutoff_frequency_THz)
    e2 = modes.eigenvectors**2 @ var
    return e2.reshape(-1, 3) / modes.masses[:, None]


ACOUSTIC = "acoustic"
IMAGINARY = "imaginary"
BELOW_CUTOFF = "below cutoff"


class ImaginaryModesError(ValueError):
    """The force constants of a thermal-sampling cell have imaginary modes beyond the threshold; the message
    names the modes and the fix."""


def commensurate_wave_vectors(supercell_matrix) -> np.ndarray:
    """The phonon wave vectors q (fractional, primitive reciprocal lattice) of a supercell's Γ point, as
    phonopy lists them for ``supercell_matrix`` (3, 3)."""
    from phonopy.harmonic.dynmat_to_fc import get_commensurate_points

    return np.asarray(get_commensurate_points(np.asarray(supercell_matrix, dtype=int)), dtype=float)


def _canonical_q(q: np.ndarray) -> np.ndarray:
    """q folded into (−½, ½] per component, and of the pair {q, −q} the one whose first nonzero component is
    positive (a real normal mode of the supercell is a standing wave of q and −q)."""
    q = np.asarray(q, dtype=float) - np.round(q)
    q[np.isclose(q, -0.5)] = 0.5
    nz = np.flatnonzero(np.abs(q) > 1e-9)
    if len(nz) and q[nz[0]] < 0:
        q = -q
        q = q - np.round(q)
        q[np.isclose(q, -0.5)] = 0.5
    return np.where(np.abs(q) < 1e-9, 0.0, q)


def excluded_modes(modes: NormalModes, cutoff_frequency_THz: float = 0.1, lattice_frac=None,
                   unit_index=None, supercell_matrix=None, acoustic_overlap: float = 0.9) -> list[dict]:
    """The normal modes the samplers leave out (ν ≤ ``cutoff_frequency_THz``), one dict each, lowest first:
    ``frequency_THz`` (negative: imaginary), ``q`` ("Γ" or the fractional wave vector of the standing wave)
    and ``kind``: ``acoustic`` (≥ ``acoustic_overlap`` of the mode is a rigid translation of the whole cell),
    ``imaginary`` (ν < 0 and not acoustic) or ``below cutoff`` (0 ≤ ν ≤ cutoff, not acoustic).

    The wave vector needs the supercell's lattice: ``lattice_frac`` (N, 3) the integer lattice vector of each
    atom's primitive cell (fractional, primitive lattice), ``unit_index`` (N,) its primitive-cell atom and
    ``supercell_matrix``; without them ``q`` is Γ for acoustic modes and None otherwise."""
    nu = modes.frequencies_THz
    masses = modes.masses
    n = len(masses)
    trans = np.zeros((3 * n, 3))
    for a in range(3):
        trans[a::3, a] = np.sqrt(masses)
    trans /= np.linalg.norm(trans, axis=0)
    qs = None
    if lattice_frac is not None:
        qs = commensurate_wave_vectors(supercell_matrix)
        phase = np.exp(-2j * np.pi * np.asarray(lattice_frac, float) @ qs.T)  # (N, n_q)
        unit_index = np.asarray(unit_index)
        n_unit = int(unit_index.max()) + 1
        n_cells = n // n_unit
    out = []
    for v in np.flatnonzero(nu <= cutoff_frequency_THz):
        e = modes.eigenvectors[:, v]
        overlap = float(np.sum((trans.T @ e) ** 2) / max(e @ e, 1e-300))
        if overlap >= acoustic_overlap:
            kind, q = ACOUSTIC, "Γ"
        else:
            kind = IMAGINARY if nu[v] < 0 else BELOW_CUTOFF
            q = None
            if qs is not None:
                ea = e.reshape(n, 3)
                weight = np.zeros(len(qs))
                for k in range(n_unit):  # |Σ_L e_{κL} e^{−2πiq·R_L}|² per primitive-cell atom κ, summed
                    sel = unit_index == k
                    weight += np.sum(np.abs(phase[sel].T @ ea[sel]) ** 2, axis=1) / n_cells
                qbest = _canonical_q(qs[int(np.argmax(weight))])
                q = "Γ" if not np.any(qbest) else [round(float(x), 6) for x in qbest]
        out.append({"frequency_THz": float(nu[v]), "q": q, "kind": kind})
    return sorted(out, key=lambda m: m["frequency_THz"])


def supercell_lattice(phonon) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a phonopy object (primitive = unit cell): each supercell atom's integer lattice vector (N, 3)
    (fractional, primitive lattice), its primitive-cell atom (N,) and the (3, 3) supercell matrix, the
    arguments :func:`excluded_modes` needs for the wave vectors."""
    sc, prim = phonon.supercell, phonon.primitive
    unit_index = np.array([sc.u2u_map[int(s)] for s in sc.s2u_map])
    frac = sc.positions @ np.linalg.inv(prim.cell)
    unit_frac = prim.scaled_positions
    lattice = np.rint(frac - unit_frac[unit_index]).astype(int)
    return lattice, unit_index, np.asarray(phonon.supercell_matrix, dtype=int)


def check_imaginary_modes(excluded: list[dict], threshold_THz: float | None = 0.1, what: str = "the sampling cell",
                          fix: str = "") -> None:
    """Raise :class:`ImaginaryModesError` when a non-acoustic excluded mode is imaginary with
    |ν| > ``threshold_THz`` (None: never; the modes are still listed by :func:`excluded_modes`): sampling without it would silently drop a degree of freedom whose harmonic
    distribution does not exist. The message names the modes (frequency, q) and ``fix``."""
    if threshold_THz is None:
        return
    bad = [m for m in excluded if m["kind"] == IMAGINARY and abs(m["frequency_THz"]) > threshold_THz]
    if not bad:
        return
    shown = ", ".join(f"{m['frequency_THz']:.3f} THz at q={m['q']}" for m in bad[:8])
    more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
    raise ImaginaryModesError(
        f"{len(bad)} imaginary non-acoustic mode(s) beyond {threshold_THz} THz in the force constants of {what}: "
        f"{shown}{more}. A thermal sample cannot include them and leaving them out is not a thermal average. "
        f"{fix or 'Fix: force constants from a cell that does not fold K onto Γ (n×n, n not a multiple of 3).'}"
    )
