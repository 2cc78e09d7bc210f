"""Harmonic thermal displacements of a supercell: Monte Carlo (with antithetic pairs) and the special
displacement method (one Zacharias–Giustino configuration per temperature).

The supercell's force constants Φ (eV/Å²) give the dynamical matrix D = M^{-1/2} Φ M^{-1/2} at the
supercell's Γ point, i.e. every phonon q commensurate with the supercell. Its normal modes (ω_ν, e_ν)
give displacements u_a = Σ_ν e_{aν} Q_ν / √M_a with independent Gaussian normal coordinates of variance

* quantum:   σ_ν² = ħ / (2 ω_ν) · coth(ħω_ν / 2k_BT)   (zero-point motion at T = 0 K)
* classical: σ_ν² = k_B T / ω_ν²

in amu·Å². Modes below ``cutoff_frequency_THz`` (the three Γ translations, any imaginary mode) are not
sampled; how many were left out is reported.
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
