"""Fermi velocity of graphene multilayers from unfolded supercell bands.

Definition (used for the static lattice, for every Monte Carlo sample set, and for both orders of the
coupling alike):

1. Unfold the supercell eigenstates onto primitive wave vectors k = K + q·ê on two lines leaving the
   Dirac point K, towards Γ and towards M, for |q| ≤ ``q_max`` (1/Å), keeping the states within
   ``window_eV`` of the charge-neutrality point with their weights W_J(k).
2. Fit the minimal continuum model of AB bilayer graphene (McCann & Koshino, Rep. Prog. Phys. 76, 056503)
   to those weighted states, per direction:

       ε(q) − E₀ = ±γ₁/2 ± √(γ₁²/4 + (ħ v₀ q)²)           (four bands; γ₁ = 0 gives the monolayer cone)

   minimizing Σ W_J (ε_J − E₀ − ε_b(J)(q))² over (E₀, v₀, γ₁), with every state assigned to the nearest of
   the four bands. ``v₀`` is the Fermi velocity reported, in 10⁵ m/s; γ₁ (eV) is the interlayer coupling
   seen by the electrons. ``layers=1`` fits the monolayer cone (γ₁ fixed to 0).
3. Thermal values average over the samples: the weighted states of all samples enter one fit (the
   sample-averaged spectral function), and the error bar is the standard deviation of that fit over
   bootstrap resamplings of the samples (antithetic pairs resampled together).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hedgenet.physics.sampling import HBAR_EV_S
from hedgenet.physics.unfold import (
    SupercellMap,
    primitive_kpoints_cart,
    unfolded_states,
)

DIRECTIONS = {"KΓ": (0.0, 0.0, 0.0), "KM": (0.5, 0.0, 0.0)}
"""Line end points (fractional primitive reciprocal coordinates) of the lines leaving K = (1/3, 1/3, 0)."""


def velocity_1e5_m_s(hbar_v_eV_A: float) -> float:
    """ħv in eV·Å -> v in 10⁵ m/s."""
    return hbar_v_eV_A / HBAR_EV_S * 1e-10 / 1e5


@dataclass
class UnfoldedLines:
    """Weighted states near K of one structure: ``q`` (n_q,) 1/Å; per direction a list over q of
    (energies eV, weights) arrays."""

    q: np.ndarray
    states: dict[str, list[tuple[np.ndarray, np.ndarray]]]


def unfold_near_k(blocks, cmap: SupercellMap, e_ref_eV: float, q_max: float = 0.08, n_q: int = 9,
                  window_eV: float = 1.0, min_weight: float = 1e-3) -> UnfoldedLines:
    """Unfolded states within ``e_ref_eV ± window_eV`` on the K–Γ and K–M lines (|q| ≤ q_max, 1/Å)."""
    cell = cmap.primitive_cell
    K = primitive_kpoints_cart(cell, [(1 / 3, 1 / 3, 0)])[0]
    q = np.linspace(0.0, q_max, n_q)
    window = (e_ref_eV - window_eV, e_ref_eV + window_eV)
    at_K = None  # q = 0 is K on both lines: solved once
    out = {}
    for name, end in DIRECTIONS.items():
        d = primitive_kpoints_cart(cell, [end])[0] - K
        d /= np.linalg.norm(d)
        rows = []
        for qq in q:
            if qq == 0.0 and at_K is not None:
                rows.append(at_K)
                continue
            eps, W = unfolded_states(blocks, cmap, K + qq * d, window)
            sel = W > min_weight
            rows.append((eps[sel], W[sel]))
            if qq == 0.0:
                at_K = rows[-1]
        out[name] = rows
    return UnfoldedLines(q, out)


def _bands(q, e0, hv, g1):
    root = np.sqrt(0.25 * g1**2 + (hv * q) ** 2)
    return e0 + np.stack([-0.5 * g1 - root, 0.5 * g1 - root, -0.5 * g1 + root, 0.5 * g1 + root])


DEFAULT_GUESS = (None, 6.0, 0.38)
"""(E₀ eV or None for the weighted mean at K, ħv₀ eV·Å, γ₁ eV): graphene-like starting values."""


def fit_continuum(lines: list[UnfoldedLines], direction: str, layers: int = 2, guess=DEFAULT_GUESS,
                  multistart: bool = True) -> dict:
    """Fit (E₀, ħv₀, γ₁) of the continuum model to the weighted states of ``lines`` (one or many samples)
    on one direction; returns ``v0_1e5_m_s``, ``hbar_v0_eV_A``, ``gamma1_eV``, ``E0_eV``.

    The nearest-band assignment makes the cost piecewise smooth with local minima (v₀ and γ₁ trade off,
    and thermally broadened states can be claimed by either of two bands), so the fit starts from ``guess``
    and, unless ``multistart=False``, from a grid of ħv₀ ∈ {4, 5, 6, 7} eV·Å × γ₁ ∈ {0.15, 0.4} eV too, and
    keeps the lowest cost: the result does not depend on the caller's starting point."""
    from scipy.optimize import least_squares

    q, e, w = [], [], []
    for ln in lines:
        for qq, (eps, W) in zip(ln.q, ln.states[direction]):
            q.append(np.full(len(eps), qq))
            e.append(eps)
            w.append(W)
    q, e, w = np.concatenate(q), np.concatenate(e), np.concatenate(w)
    if not len(e):
        raise ValueError("no unfolded states near K within the energy window: widen window_eV or check E_F")
    at_k = q == 0
    e_k = float(np.average(e[at_k], weights=w[at_k])) if at_k.any() else float(np.average(e, weights=w))
    sw = np.sqrt(w)

    def residual(p):
        g1 = p[2] if layers == 2 else 0.0
        b = _bands(q, p[0], p[1], g1)
        return sw * np.min(np.abs(e[None, :] - b), axis=0)

    best = None
    starts = [tuple(guess)]
    if multistart:
        starts += [(None, hv, g1) for hv in (4.0, 5.0, 6.0, 7.0) for g1 in ((0.15, 0.4) if layers == 2 else (0.0,))]
    for g in starts:
        p0 = [e_k if g[0] is None else g[0], g[1], g[2] if layers == 2 else 0.0]
        fit = least_squares(residual, p0, x_scale=[0.1, 1.0, 0.1], bounds=([-np.inf, 0.5, 0.0], [np.inf, 20.0, 2.0]))
        if best is None or fit.cost < best.cost - 1e-12:
            best = fit
    r = residual(best.x)
    return {"E0_eV": float(best.x[0]), "hbar_v0_eV_A": float(best.x[1]), "v0_1e5_m_s": velocity_1e5_m_s(best.x[1]),
            "gamma1_eV": float(best.x[2]) if layers == 2 else 0.0,
            "rms_residual_eV": float(np.sqrt(np.mean(r**2) / max(np.mean(w), 1e-12)))}


def thermal_fermi_velocity(lines: list[UnfoldedLines], n_bootstrap: int = 100, seed: int = 0, layers: int = 2,
                           group: int = 2, guesses: dict | None = None) -> dict:
    """v₀ (10⁵ m/s) and γ₁ of the sample average per direction and their mean, with bootstrap errors.

    ``group``: samples resampled together (2 for antithetic ± pairs). Needs ≥ 2 groups for an error.
    ``guesses``: per direction a fit dict (e.g. the static lattice's) to start the fit from as well."""
    n_groups = len(lines) // group
    if n_groups < 2:
        raise ValueError(f"an error bar needs at least 2 independent samples (groups of {group}); got "
                         f"{len(lines)} samples. Fix: raise the number of Monte Carlo samples")
    groups = [lines[k * group : (k + 1) * group] for k in range(n_groups)]
    out = {}
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, n_groups, n_groups) for _ in range(n_bootstrap)]
    for name in DIRECTIONS:
        start = DEFAULT_GUESS
        if guesses and name in guesses:
            g = guesses[name]
            start = (g["E0_eV"], g["hbar_v0_eV_A"], max(g["gamma1_eV"], 0.05))
        best = fit_continuum(lines, name, layers, start)
        guess = (best["E0_eV"], best["hbar_v0_eV_A"], max(best["gamma1_eV"], 0.05))
        # bootstrap refits start from the best fit only (local spread; multi-start ×9 would dominate the cost)
        boot = [fit_continuum([ln for k in d for ln in groups[k]], name, layers, guess, multistart=False)["v0_1e5_m_s"]
                for d in draws]
        out[name] = {**best, "v0_err_1e5_m_s": float(np.std(boot, ddof=1))}
    v = np.mean([out[n]["v0_1e5_m_s"] for n in DIRECTIONS])
    err = np.sqrt(np.mean([out[n]["v0_err_1e5_m_s"] ** 2 for n in DIRECTIONS]))
    return {"v0_1e5_m_s": float(v), "v0_err_1e5_m_s": float(err), "directions": out, "n_samples": len(lines)}
