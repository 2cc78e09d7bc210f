"""Fermi velocity of graphene multilayers from unfolded supercell bands.

Definition (used for the static lattice, for every Monte Carlo sample set, and for both orders of the
coupling alike):

1. Unfold the supercell eigenstates onto primitive wave vectors k = K + q·ê on two lines leaving the
   Dirac point K, towards Γ and towards M (opposite ways on the straight line Γ–K–M), for |q| ≤ ``q_max``
   (1/Å), keeping the states within ``window_eV`` of the charge-neutrality point with their weights W_J(k).
2. Fit the minimal continuum model of AB bilayer graphene (McCann & Koshino, Rep. Prog. Phys. 76, 056503,
   with γ₃ = γ₄ = 0) and an interlayer asymmetry Δ to those weighted states, per direction:

       (ε(q) − E₀)² = γ₁²/2 + Δ²/4 + x² ± √(γ₁⁴/4 + x²(γ₁² + Δ²)),   x = ħv₀q   (four bands)

   Δ = 0 gives the gapless ±γ₁/2 ± √(γ₁²/4 + x²); Δ is the gap of the low-energy bands at K (gap_eV).
   ``layers=1`` fits the massive Dirac cone ε − E₀ = ±√(x² + m²) with mass m = Δ/2 (γ₁ fixed to 0).
   The gap term keeps a thermal gap or broadening at K from leaking into v₀: without it the fit tilts
   the bands near K and v₀ absorbs the gap. The fit minimizes Σ W_J (ε_J − E₀ − ε_b(J)(q))² over
   (E₀, v₀, γ₁, Δ), with every state assigned to the nearest of the four bands. ``v₀`` is the Fermi
   velocity reported, in 10⁵ m/s; γ₁ (eV) is the interlayer coupling seen by the electrons; the band
   velocity a fixed energy (``fixed_energy_eV``, default 0.2 eV) above E₀ follows from the fitted bands
   (:func:`band_velocity_at_energy`).
3. Thermal values average over the samples: the weighted states of all samples enter one fit (the
   sample-averaged spectral function); the error bars come from refits of resampled ± pairs (antithetic
   pairs resampled together): a bootstrap from 8 pairs on, a delete-one-pair jackknife below
   (:data:`MIN_PAIRS_BOOTSTRAP`, :func:`thermal_fermi_velocity`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hedgenet.physics.sampling import HBAR_EV_S
from hedgenet.physics.unfold import (
    SupercellMap,
    Unfolder,
    primitive_kpoints_cart,
    time_reversal_groups,
    unfolded_states,
)

DIRECTIONS = {"KΓ": (0.0, 0.0, 0.0), "KM": (0.5, 0.5, 0.0)}
"""Line end points (fractional primitive reciprocal coordinates) of the lines leaving K = (1/3, 1/3, 0): the
straight line Γ–K–M through K (M = (½, ½, 0) is the M point beyond K, equivalent to (½, 0, 0) by the threefold
axis through K), so that K + q·ê on one side and K − q·ê on the other are time-reversal partners in a supercell
that folds K onto its Γ and share one eigensolve (:func:`~hedgenet.physics.unfold.time_reversal_groups`)."""


def velocity_1e5_m_s(hbar_v_eV_A: float) -> float:
    """ħv in eV·Å -> v in 10⁵ m/s."""
    return hbar_v_eV_A / HBAR_EV_S * 1e-10 / 1e5


@dataclass
class UnfoldedLines:
    """Weighted states near K of one structure: ``q`` (n_q,) 1/Å; per direction a list over q of
    (energies eV, weights) arrays."""

    q: np.ndarray
    states: dict[str, list[tuple[np.ndarray, np.ndarray]]]


def near_k_lines(primitive_cell, q_max: float = 0.08, n_q: int = 9) -> tuple[np.ndarray, np.ndarray, dict]:
    """K (Cartesian, 1/Å), the |q| grid (n_q,) from 0 to ``q_max`` and the unit vector of each line of
    :data:`DIRECTIONS`: the k-points of :func:`unfold_near_k` are K + q·d."""
    K = primitive_kpoints_cart(primitive_cell, [(1 / 3, 1 / 3, 0)])[0]
    dirs = {}
    for name, end in DIRECTIONS.items():
        d = primitive_kpoints_cart(primitive_cell, [end])[0] - K
        dirs[name] = d / np.linalg.norm(d)
    return K, np.linspace(0.0, q_max, n_q), dirs


def near_k_points(cmap: SupercellMap, q_max: float = 0.08, n_q: int = 9) -> list[np.ndarray]:
    """The distinct k-points (Cartesian) one :func:`unfold_near_k` unfolds onto: K once, then each line's q > 0
    (2 n_q − 1 points; on a supercell that folds K onto its Γ, n_q of them need an eigensolve)."""
    K, q, dirs = near_k_lines(cmap.primitive_cell, q_max, n_q)
    return [K] + [K + qq * d for d in dirs.values() for qq in q[1:]]


_POOLS: dict = {}


def _pool(workers: int):
    """A process pool of ``workers`` processes (spawned once per process and worker count, then reused)."""
    if workers not in _POOLS:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if not _POOLS:  # shut the pools down before the interpreter tears its modules down
            import atexit

            atexit.register(_shutdown_pools)
        _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return _POOLS[workers]


def _shutdown_pools() -> None:
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True, cancel_futures=True)


def _unfold_points(blocks, cmap: SupercellMap, solves, window,
                   precision: str = "double") -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """:meth:`Unfolder.states_with_partners` for every (k, partners) of ``solves`` (one worker's share of
    :func:`unfold_near_k`), on one BLAS thread: the windowed eigensolves of a few hundred orbitals ran 2×
    slower on two threads (1.8 instead of 0.8 s per sample and order at 576 orbitals); more cores go to
    ``workers``."""
    from threadpoolctl import threadpool_limits

    unfolder = Unfolder(blocks, cmap)
    with threadpool_limits(limits=1, user_api="blas"):
        return [unfolder.states_with_partners(k, partners, window, precision) for k, partners in solves]


def unfold_near_k(blocks, cmap: SupercellMap, e_ref_eV: float, q_max: float = 0.08, n_q: int = 9,
                  window_eV: float = 1.0, min_weight: float = 1e-3, plain: bool = False,
                  workers: int = 1, precision: str = "double", time_reversal: bool = True) -> UnfoldedLines:
    """Unfolded states within ``e_ref_eV ± window_eV`` on the K–Γ and K–M lines (|q| ≤ q_max, 1/Å).
    ``plain=True``: with the one-k-at-a-time :func:`~hedgenet.physics.unfold.unfolded_states` (the
    reference the tests and the cost benchmark compare the default :class:`~hedgenet.physics.unfold.Unfolder`
    path with; same numbers). ``workers > 1`` splits the eigensolves over that many worker processes (a pool
    started on first use and kept; the same numbers; give each one BLAS thread, ``OMP_NUM_THREADS=1``).
    ``precision="single"``: complex64 eigensolves polished in double precision
    (:func:`~hedgenet.orbitals.bloch.generalized_eigh`; ≈ 2.2× faster, energies within ≈ 1e-10 eV).
    Time-reversal partners share one eigensolve (:func:`~hedgenet.physics.unfold.time_reversal_groups`: on the
    default 6×6 cell 9 solves instead of 17, the same states to rounding); ``time_reversal=False`` (the cost
    benchmark's "before") and ``plain`` solve every point."""
    window = (e_ref_eV - window_eV, e_ref_eV + window_eV)
    points = near_k_points(cmap, q_max, n_q)  # K, then each line's q > 0
    if plain:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            states = [unfolded_states(blocks, cmap, k, window, precision) for k in points]
    else:
        groups = (time_reversal_groups(blocks, cmap, points) if time_reversal
                  else [(i, []) for i in range(len(points))])
        solves = [(points[i], [points[j] for j in partners]) for i, partners in groups]
        if workers > 1:
            shares = [solves[i::workers] for i in range(workers)]
            done = list(_pool(workers).map(_unfold_points,
                                           *zip(*[(blocks, cmap, sh, window, precision) for sh in shares])))
            solved = [None] * len(solves)
            for i, share in enumerate(done):
                solved[i::workers] = share
        else:
            solved = _unfold_points(blocks, cmap, solves, window, precision)
        states = [None] * len(points)
        for (i, partners), got in zip(groups, solved):
            for idx, st in zip([i, *partners], got):
                states[idx] = st
    rows = []
    for eps, W in states:
        sel = W > min_weight
        rows.append((eps[sel], W[sel]))
    _, q, dirs = near_k_lines(cmap.primitive_cell, q_max, n_q)
    n = len(q) - 1
    return UnfoldedLines(q, {name: [rows[0], *rows[1 + i * n : 1 + (i + 1) * n]] for i, name in enumerate(dirs)})


def _unfold_timed(blocks, cmap: SupercellMap, e_ref_eV: float, kw: dict) -> tuple[UnfoldedLines, float]:
    """:func:`unfold_near_k` of one Hamiltonian in this process (one job of :class:`UnfoldQueue`; its
    eigensolves run on one BLAS thread, :func:`_unfold_points`) and its seconds."""
    import time

    t0 = time.perf_counter()
    lines = unfold_near_k(blocks, cmap, e_ref_eV, **{**kw, "workers": 1})
    return lines, time.perf_counter() - t0


class UnfoldQueue:
    """:func:`unfold_near_k` of many Hamiltonians of one supercell (the Monte Carlo samples of every order),
    ``workers`` at a time: each Hamiltonian is one job for a worker process (whole Hamiltonians, not
    k-points: no per-call start-up, and the work divides evenly over any number of cores). Jobs are
    submitted as the Hamiltonians are built — at most ``2 × workers`` wait at once, so memory stays bounded —
    and :meth:`results` returns each key's lines in submission order: the same numbers whatever ``workers``.
    ``workers=1`` unfolds in this process as each job is added. ``kw``: the keywords of :func:`unfold_near_k`
    (its own ``workers`` is ignored)."""

    def __init__(self, cmap: SupercellMap, e_ref_eV: float, workers: int = 1, **kw):
        self.cmap, self.e_ref, self.workers, self.kw = cmap, float(e_ref_eV), int(workers), kw
        self.jobs: list = []  # (key, (lines, seconds)) with one worker, else (key, future of that pair)

    def add(self, key, blocks) -> None:
        if self.workers <= 1:
            self.jobs.append((key, _unfold_timed(blocks, self.cmap, self.e_ref, self.kw)))
            return
        pending = [job for _, job in self.jobs if not job.done()]
        if len(pending) >= 2 * self.workers:
            from concurrent.futures import FIRST_COMPLETED, wait

            wait(pending, return_when=FIRST_COMPLETED)
        self.jobs.append((key, _pool(self.workers).submit(_unfold_timed, blocks, self.cmap, self.e_ref, self.kw)))

    def results(self) -> tuple[dict, dict]:
        """``{key: [UnfoldedLines, ...]}`` in the order the jobs were added and ``{key: seconds}`` of its jobs,
        summed over processes (waits for the workers); the queue is then empty."""
        lines: dict = {}
        seconds: dict = {}
        for key, job in self.jobs:
            done, dt = job if self.workers <= 1 else job.result()
            lines.setdefault(key, []).append(done)
            seconds[key] = seconds.get(key, 0.0) + dt
        self.jobs = []
        return lines, seconds


def _bands(q, e0, hv, g1, gap=0.0, layers=2):
    """The four continuum bands (4, n) in eV at |q| (1/Å); see the module docstring."""
    x2 = (hv * q) ** 2
    if layers == 1:  # massive Dirac cone, doubled to four bands so both layer counts share the residual
        root = np.sqrt(x2 + 0.25 * gap**2)
        return e0 + np.stack([-root, -root, root, root])
    a = 0.5 * g1**2 + 0.25 * gap**2 + x2
    s = np.sqrt(0.25 * g1**4 + x2 * (g1**2 + gap**2))
    low, high = np.sqrt(np.maximum(a - s, 0.0)), np.sqrt(a + s)
    return e0 + np.stack([-high, -low, low, high])


def band_velocity_at_energy(hbar_v0_eV_A: float, gamma1_eV: float, gap_eV: float, energy_eV: float,
                            layers: int = 2) -> tuple[float, float]:
    """Group velocity (10⁵ m/s) of the continuum model's low-energy conduction band where it is
    ``energy_eV`` above E₀ (the charge-neutrality point of the fitted bands), and |q| there (1/Å).
    NaN for both when the band does not reach that energy (inside the gap).

    Bilayer: ε² = A + x² − √(B + C x²) with x = ħv₀q, A = γ₁²/2 + Δ²/4, B = γ₁⁴/4, C = γ₁² + Δ²; the
    outermost x solving it (beyond the "Mexican hat" of a gapped bilayer) and dε/dx = x(1 − C/(2√(B+Cx²)))/ε.
    Monolayer: ε² = x² + Δ²/4, dε/dx = x/ε."""
    e, hv, g1, gap = float(energy_eV), float(hbar_v0_eV_A), float(gamma1_eV), float(gap_eV)
    if e <= 0.5 * gap:
        return float("nan"), float("nan")
    if layers == 1:
        x = np.sqrt(e**2 - 0.25 * gap**2)
        slope = x / e
    else:
        A, B, C = 0.5 * g1**2 + 0.25 * gap**2, 0.25 * g1**4, g1**2 + gap**2
        b, c = 2 * (A - e**2) - C, (A - e**2) ** 2 - B
        disc = b * b - 4 * c
        if disc < 0:
            return float("nan"), float("nan")
        y = 0.5 * (-b + np.sqrt(disc))  # the larger root: the outer branch
        s = A + y - e**2  # = √(B + C y) on the low band
        if y < 0 or s < 0:
            return float("nan"), float("nan")
        x = np.sqrt(y)
        slope = x * (1 - C / (2 * np.sqrt(B + C * y))) / e if B + C * y > 0 else 1.0
    return float(velocity_1e5_m_s(hv * slope)), float(x / hv)


GAP_START_EV = 0.02
"""Where every fit starts the gap Δ (eV): just above 0, since at Δ = 0 the cost is flat in Δ away from K."""

DEFAULT_GUESS = (None, 6.0, 0.38, GAP_START_EV)
"""(E₀ eV or None for the weighted mean at K, ħv₀ eV·Å, γ₁ eV, gap Δ eV): graphene-like starting values."""


def fit_continuum(lines: list[UnfoldedLines], direction: str, layers: int = 2, guess=DEFAULT_GUESS,
                  multistart: bool = True, fixed_energy_eV: float | None = None) -> dict:
    """Fit (E₀, ħv₀, γ₁, Δ) of the continuum model to the weighted states of ``lines`` (one or many
    samples) on one direction; returns ``v0_1e5_m_s``, ``hbar_v0_eV_A``, ``gamma1_eV``, ``gap_eV``,
    ``E0_eV``, ``rms_residual_eV`` and, with ``fixed_energy_eV``, ``v_fixed_energy_1e5_m_s`` (the band
    velocity that far above E₀, :func:`band_velocity_at_energy`) and ``fixed_energy_q_inv_A``.

    ``guess``: (E₀, ħv₀, γ₁) or (E₀, ħv₀, γ₁, Δ). The nearest-band assignment makes the cost piecewise
    smooth with local minima (v₀ and γ₁ trade off, and thermally broadened states can be claimed by either
    of two bands), so the fit starts from ``guess`` and, unless ``multistart=False``, from a grid of
    ħv₀ ∈ {4, 5, 6, 7} eV·Å × γ₁ ∈ {0.15, 0.4} eV too (Δ from 0.02 eV), and keeps the lowest cost: the
    result does not depend on the caller's starting point."""
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
        b = _bands(q, p[0], p[1], p[2] if layers == 2 else 0.0, p[3], layers)
        return sw * np.min(np.abs(e[None, :] - b), axis=0)

    best = None
    starts = [tuple(guess)]
    if multistart:
        starts += [(None, hv, g1) for hv in (4.0, 5.0, 6.0, 7.0) for g1 in ((0.15, 0.4) if layers == 2 else (0.0,))]
    for g in starts:
        gap0 = max(g[3], GAP_START_EV) if len(g) > 3 else GAP_START_EV
        p0 = [e_k if g[0] is None else g[0], g[1], g[2] if layers == 2 else 0.0, gap0]
        fit = least_squares(residual, p0, x_scale=[0.1, 1.0, 0.1, 0.1],
                            bounds=([-np.inf, 0.5, 0.0, 0.0], [np.inf, 20.0, 2.0, 2.0]))
        if best is None or fit.cost < best.cost - 1e-12:
            best = fit
    r = residual(best.x)
    g1 = float(best.x[2]) if layers == 2 else 0.0
    out = {"E0_eV": float(best.x[0]), "hbar_v0_eV_A": float(best.x[1]), "v0_1e5_m_s": float(velocity_1e5_m_s(best.x[1])),
           "gamma1_eV": g1, "gap_eV": float(best.x[3]),
           "rms_residual_eV": float(np.sqrt(np.mean(r**2) / max(np.mean(w), 1e-12)))}
    if fixed_energy_eV is not None:
        v, qe = band_velocity_at_energy(best.x[1], g1, best.x[3], fixed_energy_eV, layers)
        out.update({"v_fixed_energy_1e5_m_s": v, "fixed_energy_q_inv_A": qe})
    return out


def fit_start(fit: dict) -> tuple:
    """A fit dict of :func:`fit_continuum` as a starting point for another fit."""
    return (fit["E0_eV"], fit["hbar_v0_eV_A"], max(fit["gamma1_eV"], 0.05), max(fit.get("gap_eV", 0.0), GAP_START_EV))


OBSERVABLES = {"v0_1e5_m_s": "v0_err_1e5_m_s", "gamma1_eV": "gamma1_err_eV", "gap_eV": "gap_err_eV",
               "v_fixed_energy_1e5_m_s": "v_fixed_energy_err_1e5_m_s"}
"""Direction-averaged observables of a fit and the names of their error bars."""


def direction_mean(fits: dict) -> dict:
    """The observables of :data:`OBSERVABLES` averaged over the directions of ``fits`` ({direction: fit})."""
    return {k: float(np.mean([f[k] for f in fits.values()])) for k in OBSERVABLES if all(k in f for f in fits.values())}


MIN_PAIRS_BOOTSTRAP = 8
"""Fewest independent samples (± pairs) for which ``error_method=auto`` bootstraps; below, it jackknifes.
With n pairs a bootstrap has only C(2n−1, n) distinct resamples (35 for 4 pairs, many of them a single
pair repeated) and its spread of a nonlinear fit is unreliable; the delete-one-pair jackknife is
deterministic and costs n refits. Either way the error bar of n pairs is itself uncertain by about
1/√(2(n−1)) (41 % for 4 pairs, 27 % for 8), which the result states below 8 pairs."""

ERROR_METHODS = ("auto", "bootstrap", "jackknife")

def error_plan(n_groups: int, method: str = "auto") -> tuple[str, str | None]:
    """(method actually used, warning or None) for ``n_groups`` independent samples; see
    :data:`MIN_PAIRS_BOOTSTRAP`."""
    if method not in ERROR_METHODS:
        raise ValueError(f"error_method={method!r} unknown; valid: {list(ERROR_METHODS)}")
    used = method if method != "auto" else ("bootstrap" if n_groups >= MIN_PAIRS_BOOTSTRAP else "jackknife")
    warning = None
    if n_groups < MIN_PAIRS_BOOTSTRAP:
        warning = (f"error bars from {n_groups} independent ± pairs ({used}): the error bar itself is uncertain by "
                   f"about {100 / np.sqrt(2 * (n_groups - 1)):.0f} %; {MIN_PAIRS_BOOTSTRAP} pairs or more "
                   f"(sampler.n_samples ≥ {2 * MIN_PAIRS_BOOTSTRAP}) make the bootstrap meaningful")
    return used, warning


def thermal_fermi_velocity(lines: list[UnfoldedLines], n_bootstrap: int = 100, seed: int = 0, layers: int = 2,
                           group: int = 2, guesses: dict | None = None, fixed_energy_eV: float = 0.2,
                           error_method: str = "auto") -> dict:
    """v₀ (10⁵ m/s), γ₁ (eV), the gap Δ (eV) and the band velocity ``fixed_energy_eV`` above E₀ of the
    sample average, per direction and as the mean of the two directions, each with an error bar.

    ``group``: samples resampled together (2 for antithetic ± pairs); needs ≥ 2 groups for an error.
    ``error_method``: ``bootstrap`` (``n_bootstrap`` resamplings of the groups with replacement),
    ``jackknife`` (delete one group at a time) or ``auto`` (bootstrap from :data:`MIN_PAIRS_BOOTSTRAP`
    groups on, jackknife below); the method used is ``error_method`` of the result, and below
    :data:`MIN_PAIRS_BOOTSTRAP` groups ``error_warning`` says how rough the error bar is. Each resample
    refits both directions and the error of a direction mean is the spread of that resample's mean.
    ``guesses``: per direction a fit dict (e.g. the static lattice's) to start the fit from as well."""
    n_groups = len(lines) // group
    if n_groups < 2:
        raise ValueError(f"an error bar needs at least 2 independent samples (groups of {group}); got "
                         f"{len(lines)} samples. Fix: raise the number of Monte Carlo samples")
    used, warning = error_plan(n_groups, error_method)
    groups = [lines[k * group : (k + 1) * group] for k in range(n_groups)]
    if used == "bootstrap":
        rng = np.random.default_rng(seed)
        subsets = [rng.integers(0, n_groups, n_groups) for _ in range(n_bootstrap)]
    else:
        subsets = [np.delete(np.arange(n_groups), k) for k in range(n_groups)]
    best, resampled = {}, [{} for _ in subsets]
    for name in DIRECTIONS:
        start = fit_start(guesses[name]) if guesses and name in guesses else DEFAULT_GUESS
        best[name] = fit_continuum(lines, name, layers, start, fixed_energy_eV=fixed_energy_eV)
        # resample refits start from the best fit only (local spread; multi-start ×9 would dominate the cost)
        for r, d in zip(resampled, subsets):
            r[name] = fit_continuum([ln for k in d for ln in groups[k]], name, layers, fit_start(best[name]),
                                    multistart=False, fixed_energy_eV=fixed_energy_eV)
    out = {"directions": {}, "n_samples": len(lines), "n_pairs": n_groups, "error_method": used,
           "error_warning": warning, "fixed_energy_eV": float(fixed_energy_eV)}
    for name in DIRECTIONS:
        out["directions"][name] = {**best[name], **_spread([{name: r[name]} for r in resampled], used)}
    out.update(direction_mean(best))
    out.update(_spread(resampled, used))
    return out


def _spread(resampled: list[dict], method: str) -> dict:
    """Error bars (:data:`OBSERVABLES`) of the direction mean from resampled fits: the standard deviation
    of a bootstrap, or √((n−1)/n Σ (θᵢ − θ̄)²) of a jackknife. NaN values (a band that does not reach the
    fixed energy in some resample) are dropped."""
    means = [direction_mean(r) for r in resampled]
    out = {}
    for key, err in OBSERVABLES.items():
        x = np.array([m[key] for m in means if key in m], dtype=float)
        x = x[np.isfinite(x)]
        if len(x) < 2:
            out[err] = float("nan")
        elif method == "bootstrap":
            out[err] = float(np.std(x, ddof=1))
        else:
            out[err] = float(np.sqrt((len(x) - 1) / len(x) * np.sum((x - x.mean()) ** 2)))
    return out
