"""Temperature-dependent Fermi velocity from thermal displacements, to first order, second order and all
orders in the electron–phonon coupling, with any calculator (model or reference: the same code).

For a supercell of the primitive cell (or of a twisted bilayer's moiré cell, unfolded onto one layer's own
primitive cell: :func:`unfolding_cell`):

1. force constants by finite displacements on ``force_constants_supercell`` (a cell that does not fold K
   onto Γ), mapped onto the sampling cell by phonopy's Fourier interpolation
   (:func:`hedgenet.physics.phonons.mapped_force_constants`) → supercell normal modes
   (:mod:`hedgenet.physics.sampling`); the modes the sampler leaves out are listed (``excluded_modes``) and
   imaginary ones beyond ``imaginary_threshold_THz`` stop the run here, before anything is sampled;
2. static blocks H₀, S₀ and their derivatives dH/du, dS/du (:mod:`hedgenet.physics.epi`);
3. for every temperature, displacements u from the sampler (Monte Carlo with antithetic pairs, or the
   special displacement method: n_samples/2 Zacharias–Giustino configurations built from the phonons at
   the cell's commensurate wave vectors, :func:`hedgenet.physics.sampling.special_displacements`, each
   ± u), and per sample up to three Hamiltonians (S likewise):
   *first order* H₀ + Σ dH/du·u; *all orders* H(u) from the calculator at the displaced geometry; and
   *second order*, from the ± pair at no further calculator cost:

       H⁽²⁾(±u) = ½[H(u) + H(−u)] ± Σ dH/du·u

   (the even part of H(u) exactly, so H₀ + the second-order term + all higher even orders, and the odd
   part to first order: it differs from H(±u) by O(u³)); it needs the samples to come in ± pairs;
4. unfolded states near K and the continuum fit (:mod:`hedgenet.physics.continuum_fit`), pooled over the
   samples of a temperature, with error bars from resampled ± pairs; per order and temperature v₀, γ₁,
   the gap at K and the band velocity ``fixed_energy_eV`` above the charge-neutrality point of the fitted
   bands, and the ratios of v₀, γ₁ and that velocity to the static lattice's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from hedgenet.orbitals.blocks import BlockDerivatives, BlockSet, blocks_on_edges
from hedgenet.physics.continuum_fit import (
    ERROR_METHODS,
    UnfoldQueue,
    direction_mean,
    fit_continuum,
    thermal_fermi_velocity,
    unfold_near_k,
)
from hedgenet.physics.phonons import (
    gamma_mode_summary,
    loaded_force_constants,
    mapped_force_constants,
    name_gamma_modes,
)
from hedgenet.physics.sampling import (
    CommensurateModes,
    NormalModes,
    check_imaginary_modes,
    excluded_modes,
    special_displacements,
    supercell_lattice,
    thermal_displacements,
)
from hedgenet.physics.unfold import (
    SupercellMap,
    charge_neutrality_level,
    layer_primitive_cell,
)
from hedgenet.structures.layers import layer_index
from hedgenet.structures.supercell import supercell_atoms

ORDERS = ("first", "second", "all")
DEFAULT_ORDERS = ("first", "second", "all")
"""All three side by side: `second` needs no calculator call, only one unfolding per sample like the others."""


@dataclass
class RenormalizationSettings:
    """Settings of :func:`fermi_velocity_vs_temperature` (units in the names)."""

    supercell: tuple[int, int] = (6, 6)
    force_constants_supercell: tuple[int, int] | None = (7, 7)  # None: the sampling cell itself
    force_constants_from: str | None = None  # another run's phonopy_params.yaml (mapped onto supercell) instead
    imaginary_threshold_THz: float | None = 0.1  # |ν| of an imaginary non-acoustic mode that stops the run; None: never
    temperatures_K: tuple[float, ...] = (0.0, 100.0, 300.0, 600.0)
    sampler: str = "monte_carlo"  # monte_carlo | sdm
    n_samples: int = 8  # per temperature, even ≥ 4 (± pairs); sdm: n_samples/2 ZG configurations, each ± u
    quantum: bool = True
    cutoff_frequency_THz: float = 0.1
    fc_displacement_A: float = 0.01
    epi_displacement_A: float = 0.005
    q_max_inv_A: float = 0.08
    n_q: int = 9
    window_eV: float = 1.0
    layers: int | None = None  # continuum model: 2 (AB bilayer) | 1 (cone); None: the layers of the unfolding cell
    unfold_layer: int | str | None = "auto"  # auto | None (the unit cell) | a layer index (its own primitive cell)
    n_bootstrap: int = 100
    seed: int = 0
    orders: tuple[str, ...] = DEFAULT_ORDERS
    fixed_energy_eV: float = 0.2  # band velocity this far above the charge-neutrality point of the fitted bands
    error_method: str = "auto"  # auto (bootstrap from 8 ± pairs, jackknife below) | bootstrap | jackknife
    workers: int = 1  # unfolding worker processes: one Monte Carlo Hamiltonian per job (same numbers)
    eigensolver_precision: str = "single"  # single (complex64, polished in double) | double

    def check(self) -> None:
        if self.sampler not in ("monte_carlo", "sdm"):
            raise ValueError(f"sampler={self.sampler!r} unknown; valid: monte_carlo, sdm")
        if not self.temperatures_K:
            raise ValueError("the temperature list is empty: give at least one temperature (K)")
        if any(t < 0 for t in self.temperatures_K):
            raise ValueError(f"temperatures must be ≥ 0 K, got {list(self.temperatures_K)}")
        if self.n_samples < 4 or self.n_samples % 2:
            raise ValueError(f"n_samples={self.n_samples}: {self.sampler} needs an even number ≥ 4 (two ± pairs) "
                             "for an error bar")
        if self.imaginary_threshold_THz is not None and self.imaginary_threshold_THz < 0:
            raise ValueError(f"imaginary_threshold_THz={self.imaginary_threshold_THz}: must be ≥ 0 THz")
        bad = set(self.orders) - set(ORDERS)
        if bad or not self.orders:
            raise ValueError(f"orders {list(self.orders)}: choose from {list(ORDERS)}")
        if not 0 < self.fixed_energy_eV < self.window_eV:
            raise ValueError(f"fermi_velocity.fixed_energy_eV={self.fixed_energy_eV}: the band velocity is read "
                             f"between the charge-neutrality point and the edge of the fitted window "
                             f"(window_eV={self.window_eV}). Fix: 0 < fixed_energy_eV < window_eV, e.g. 0.2")
        if self.error_method not in ERROR_METHODS:
            raise ValueError(f"fermi_velocity.error_method={self.error_method!r} unknown; valid: {list(ERROR_METHODS)}")
        if self.n_bootstrap < 2:
            raise ValueError(f"fermi_velocity.n_bootstrap={self.n_bootstrap}: the error bars are the spread of "
                             "bootstrap draws and need at least 2. Fix: set fermi_velocity.n_bootstrap ≥ 2 (default 100)")
        if not self.quantum and any(t == 0 for t in self.temperatures_K):
            raise ValueError("a classical sampler (sampler.quantum=false) displaces nothing at 0 K: the 0 K samples "
                             "would all be the static lattice. Fix: drop 0 from the temperatures (v_F(static) is "
                             "computed anyway) or set sampler.quantum=true (zero-point motion)")
        if self.eigensolver_precision not in ("single", "double"):
            raise ValueError(f"fermi_velocity.eigensolver_precision={self.eigensolver_precision!r} unknown; valid: "
                             "single (complex64 solve, pairs polished in double precision), double")
        if int(self.workers) < 1:
            raise ValueError(f"fermi_velocity.workers={self.workers}: the number of unfolding worker processes "
                             "must be ≥ 1. Fix: fermi_velocity.workers=1 (or the number of idle cores)")
        if self.layers is not None and int(self.layers) not in (1, 2):
            raise ValueError(f"fermi_velocity.layers={self.layers}: the continuum model has 1 (Dirac cone) or 2 (AB "
                             "bilayer) layers. Fix: layers=null (the layers of the cell the bands unfold onto), 1 or 2")
        if not (self.unfold_layer in ("auto", None) or isinstance(self.unfold_layer, int)):
            raise ValueError(f"fermi_velocity.unfold_layer={self.unfold_layer!r}: auto, null (the unit cell) or a "
                             "layer index (0, 1, …: that layer's own primitive cell)")
        if len(self.supercell) not in (2, 3) or any(int(n) < 1 for n in self.supercell):
            raise ValueError(f"fermi_velocity.supercell={list(self.supercell)}: give 2 whole numbers ≥ 1. "
                             "Fix: e.g. fermi_velocity.supercell=[6,6]")


@dataclass
class RenormalizationResult:
    static: dict
    by_temperature: dict = field(default_factory=dict)  # {order: {T: fit dict with ratios to static}}
    timings_s: dict = field(default_factory=dict)
    phonon: object | None = None
    lines: dict = field(default_factory=dict)  # {(order, T): [UnfoldedLines]} for plots
    excluded_modes: list = field(default_factory=list)  # modes the sampler left out (sampling.excluded_modes)
    phonons: dict = field(default_factory=dict)  # where the force constants come from; named Γ modes (THz)


def renormalization_settings(cfg) -> RenormalizationSettings:
    """The settings of a composed fermi_velocity config (an OmegaConf node with ``fermi_velocity``, ``sampler`` and
    ``seed``): one reading of the config for the command, the pipeline's checks and the benchmarks."""
    f = cfg.fermi_velocity
    return RenormalizationSettings(
        supercell=tuple(f.supercell), temperatures_K=tuple(float(t) for t in f.temperatures_K),
        sampler=cfg.sampler.name, n_samples=int(cfg.sampler.n_samples), quantum=bool(cfg.sampler.quantum),
        cutoff_frequency_THz=float(cfg.sampler.cutoff_frequency_THz),
        imaginary_threshold_THz=(None if cfg.sampler.imaginary_threshold_THz is None
                                 else float(cfg.sampler.imaginary_threshold_THz)),
        force_constants_supercell=None if f.force_constants_supercell is None else tuple(f.force_constants_supercell),
        force_constants_from=None if f.get("force_constants_from") is None else str(f.force_constants_from),
        fc_displacement_A=float(f.fc_displacement_A),
        epi_displacement_A=float(f.epi_displacement_A), q_max_inv_A=float(f.q_max_inv_A), n_q=int(f.n_q),
        window_eV=float(f.window_eV), layers=None if f.layers is None else int(f.layers),
        unfold_layer=f.unfold_layer if f.unfold_layer in ("auto", None) else int(f.unfold_layer),
        n_bootstrap=int(f.n_bootstrap), seed=int(cfg.seed),
        orders=tuple(f.orders), fixed_energy_eV=float(f.fixed_energy_eV), error_method=str(f.error_method),
        workers=int(f.get("workers", 1)), eigensolver_precision=str(f.eigensolver_precision),
    )


def temperature_seed(seed: int, k: int) -> int:
    """The sampling seed of the k-th temperature of a run seeded with ``seed`` (each temperature its own stream)."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def sample_displacements(modes, T, s: RenormalizationSettings, seed: int, zg_modes=None) -> np.ndarray:
    """The run's displacements (Å, shape (n_samples, N, 3)) at temperature ``T`` (K), as ± pairs: thermal Monte
    Carlo draws of ``modes`` or, with ``s.sampler == "sdm"``, special displacements of the commensurate modes
    ``zg_modes``; ``seed`` is the temperature's sampling seed (:func:`temperature_seed`)."""
    if s.sampler == "sdm":  # the ZG configuration, then ones that complete its MSD tensors; each ± u
        us = special_displacements(zg_modes, T, s.n_samples // 2, s.quantum, s.cutoff_frequency_THz, seed)
        return np.stack([x for u in us for x in (u, -u)])
    return thermal_displacements(modes, T, s.n_samples, seed, s.quantum, True, s.cutoff_frequency_THz)


def check_pairs(us: np.ndarray) -> None:
    """Raise ValueError unless the displacements (n, N, 3) come as ± pairs: sample 2k+1 = −sample 2k (the
    second order is built from such pairs)."""
    us = np.asarray(us)
    if len(us) % 2 or not np.allclose(us[1::2], -us[0::2], rtol=0.0, atol=1e-12):
        raise ValueError(
            "order 'second' is built from ± pairs of displacements (½[H(u)+H(−u)] ± Σ dH/du·u), but the samples "
            "are not ± pairs (sample 2k+1 ≠ −sample 2k). Fix: use a sampler that gives antithetic pairs "
            "(sampler=monte_carlo or sampler=sdm) or drop 'second' from fermi_velocity.orders")


def _union_edges(*sets: BlockSet) -> tuple[np.ndarray, np.ndarray]:
    """The union of the edge lists (i, j, R) of several block sets of the same atoms."""
    ei = np.concatenate([b.edge_index for b in sets], axis=1)
    cs = np.concatenate([b.cell_shift for b in sets])
    _, first = np.unique(np.concatenate([ei.T, cs], axis=1), axis=0, return_index=True)
    first = np.sort(first)
    return ei[:, first], cs[first]


def second_order_pair(deriv: BlockDerivatives, u: np.ndarray, plus: BlockSet, minus: BlockSet,
                      first_plus: BlockSet | None = None) -> tuple[BlockSet, BlockSet]:
    """H⁽²⁾(+u), H⁽²⁾(−u) = ½[H(u) + H(−u)] ± Σ dH/du·u (S likewise) from the calculator's blocks at ±u
    (``plus``, ``minus``) and the derivatives at u = 0; ``first_plus`` = ``deriv.first_order(u)`` if already
    computed. The three edge lists (undisplaced, +u, −u) may differ where a pair crosses the block cutoff:
    the result lives on their union, a block absent from one list counting as zero there."""
    first_plus = deriv.first_order(u) if first_plus is None else first_plus
    b0 = deriv.blocks0
    ei, cs = _union_edges(b0, plus, minus)
    Hp, Sp = blocks_on_edges(plus, ei, cs)
    Hm, Sm = blocks_on_edges(minus, ei, cs)
    H0, S0 = blocks_on_edges(b0, ei, cs)
    H1, S1 = blocks_on_edges(first_plus, ei, cs)
    dH, dS = H1 - H0, S1 - S0  # Σ dH/du·u on the undisplaced edges, zero elsewhere
    Heven, Seven = 0.5 * (Hp + Hm), 0.5 * (Sp + Sm)
    return (BlockSet(ei, cs, Heven + dH, Seven + dS, b0.n_orb),
            BlockSet(ei, cs, Heven - dH, Seven - dS, b0.n_orb))


def _ratios(fit: dict, static: dict) -> None:
    """Ratios to the static lattice (and their errors, the static fit being exact) of v₀, γ₁ and the band
    velocity at the fixed energy, added to ``fit``; None where the static value is 0 or undefined."""
    for key, err, name in (("v0_1e5_m_s", "v0_err_1e5_m_s", ""), ("gamma1_eV", "gamma1_err_eV", "gamma1_"),
                           ("v_fixed_energy_1e5_m_s", "v_fixed_energy_err_1e5_m_s", "v_fixed_energy_")):
        ref = static.get(key)
        ok = ref is not None and np.isfinite(ref) and ref != 0 and np.isfinite(fit.get(key, np.nan))
        fit[f"{name}ratio_to_static"] = float(fit[key] / ref) if ok else None
        fit[f"{name}ratio_err"] = float(fit[err] / abs(ref)) if ok else None


def unfolding_cell(supercell: Atoms, unit: Atoms, unfold_layer="auto") -> tuple[Atoms, np.ndarray | None, int]:
    """(primitive cell the bands unfold onto, indices of the supercell atoms mapped onto it (None: all), number
    of layers it holds — the continuum model's).

    ``unfold_layer``: None → the unit cell (AB bilayer: both layers, the four-band model); a layer index →
    that layer's own primitive cell (:func:`~hedgenet.physics.unfold.layer_primitive_cell`), the layer's
    Dirac cone; ``"auto"`` → the unit cell when it is already primitive for its layers (layer 0's primitive
    cell has the unit cell's area: AB, AA, monolayer), else layer 0 (a twisted bilayer, whose moiré cell
    holds many graphene cells per layer and whose Brillouin zone has no graphene K point)."""
    def n_layers(atoms):
        return len(set(layer_index(atoms).tolist()))

    if unfold_layer == "auto":
        unfold_layer = None
        if len(unit):
            first = int(min(layer_index(unit)))
            try:
                prim0 = layer_primitive_cell(unit, first)[0].cell
            except ValueError:  # the layer is its own primitive cell
                prim0 = unit.cell
            areas = [abs(np.linalg.det(np.asarray(c)[:2, :2])) for c in (prim0, unit.cell)]
            if not np.isclose(*areas, rtol=1e-6):
                unfold_layer = first
    if unfold_layer is None:
        return unit, None, n_layers(unit)
    prim, atoms = layer_primitive_cell(supercell, int(unfold_layer))
    return prim, atoms, 1


def other_dirac_points(supercell: Atoms, prim: Atoms, layer: int, q_max_inv_A: float) -> dict:
    """How far (1/Å) the other layers' Dirac points (K and K' of their own, rotated cells) lie from the K of
    ``prim`` (layer ``layer``'s cell) that the fit leaves: the cones meet and hybridize about halfway (the van
    Hove singularity of a twisted bilayer), so the fitted |q| ≤ ``q_max_inv_A`` should stay well inside half that
    distance. Returns ``other_dirac_distance_inv_A`` and, when 2·q_max exceeds half of it, a ``warning`` naming
    the fix."""
    from hedgenet.physics.unfold import primitive_kpoints_cart

    corners = [(1 / 3, 1 / 3, 0), (2 / 3, -1 / 3, 0), (1 / 3, -2 / 3, 0), (-1 / 3, -1 / 3, 0), (-2 / 3, 1 / 3, 0),
               (-1 / 3, 2 / 3, 0)]
    K = primitive_kpoints_cart(prim.cell.array, [(1 / 3, 1 / 3, 0)])[0]
    dist = []
    for other in sorted(set(layer_index(supercell).tolist()) - {layer}):
        cell = layer_primitive_cell(supercell, other)[0].cell.array
        dist += [float(np.linalg.norm(k - K)) for k in primitive_kpoints_cart(cell, corners)]
    if not dist:
        return {}
    d = min(dist)
    out = {"other_dirac_distance_inv_A": d}
    if 2 * q_max_inv_A > 0.5 * d:
        out["warning"] = (f"the other layer's Dirac cone is {d:.3f} 1/Å from the fitted K: the cones hybridize near "
                          f"{d / 2:.3f} 1/Å, and the fit's |q| ≤ {q_max_inv_A} 1/Å comes within a factor 2 of it, so "
                          f"the one-cone fit absorbs the hybridization (a gap, a bent cone). Fix: "
                          f"fermi_velocity.q_max_inv_A={np.floor(d / 4 * 1000) / 1000:.3f} (half the way to where the cones cross)")
    return out


def fermi_velocity_vs_temperature(calc, unit: Atoms, settings: RenormalizationSettings,
                                  progress: bool = False) -> RenormalizationResult:
    """The whole chain for one calculator; see the module docstring."""
    s = settings
    s.check()
    t = {}
    t0 = time.perf_counter()
    if s.force_constants_from is not None:
        phonon, fc_info = loaded_force_constants(s.force_constants_from, unit, list(s.supercell))
    else:
        phonon, fc_info = mapped_force_constants(calc, unit, list(s.supercell), s.force_constants_supercell,
                                                 s.fc_displacement_A)
    sc = supercell_atoms(phonon, unit)
    modes = NormalModes.from_force_constants(phonon.force_constants, sc.get_masses())
    excluded = excluded_modes(modes, s.cutoff_frequency_THz, *supercell_lattice(phonon))
    zg_modes = CommensurateModes.from_phonopy(phonon) if s.sampler == "sdm" else None
    gamma = gamma_mode_summary(name_gamma_modes(phonon, unit))
    check_imaginary_modes(
        excluded, s.imaginary_threshold_THz, f"the {s.supercell[0]}×{s.supercell[1]} sampling cell (force constants "
        f"from {fc_info['force_constants_supercell'][0][0]}×{fc_info['force_constants_supercell'][1][1]})",
        fix="Fix: compute the force constants on a cell that does not fold K onto Γ, e.g. "
            "fermi_velocity.force_constants_supercell=[7,7] (5×5, 7×7, 8×8 for graphene with xTB), or, for a "
            "model, train it until these modes are stable; sampler.imaginary_threshold_THz raises the threshold "
            "(the modes stay unsampled).")
    t["phonons"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    need_deriv = "first" in s.orders or "second" in s.orders
    need_displaced = "all" in s.orders or "second" in s.orders
    deriv = calc.block_derivatives(sc, s.epi_displacement_A) if need_deriv else None
    blocks0 = deriv.blocks0 if deriv is not None else calc.predict_hamiltonian(sc)
    t["epi"] = time.perf_counter() - t0

    prim, mapped, prim_layers = unfolding_cell(sc, unit, s.unfold_layer)
    cmap = SupercellMap.build(sc, prim, atoms=mapped)
    layers = int(s.layers) if s.layers is not None else prim_layers
    t0 = time.perf_counter()
    e_ref = charge_neutrality_level(blocks0, cmap, sc.numbers)
    kw = dict(q_max=s.q_max_inv_A, n_q=s.n_q, window_eV=s.window_eV, workers=int(s.workers),
              precision=s.eigensolver_precision)
    static_lines = unfold_near_k(blocks0, cmap, e_ref, **kw)
    t["static_bands"] = t_unfold = time.perf_counter() - t0
    static = {name: fit_continuum([static_lines], name, layers, fixed_energy_eV=s.fixed_energy_eV)
              for name in ("KΓ", "KM")}
    static_mean = direction_mean(static)
    unfolded_layer = None if mapped is None else int(prim.arrays["layer"][0])
    unfolding = {"onto": "unit cell" if mapped is None else f"layer {unfolded_layer} primitive cell",
                 "continuum_model_layers": layers, "primitive_cell_A": np.asarray(prim.cell)[:2, :2].round(6).tolist()}
    if mapped is not None:
        unfolding.update(other_dirac_points(sc, prim, unfolded_layer, s.q_max_inv_A))
    result = RenormalizationResult({**static_mean, "fixed_energy_eV": s.fixed_energy_eV, "directions": static,
                                    "E_cnp_eV": e_ref, "unfolding": unfolding},
                                   phonon=phonon, excluded_modes=excluded, phonons={**fc_info, **gamma})
    result.lines[("static", 0.0)] = [static_lines]

    # seconds per order: building its Hamiltonians (the calculator's H(±u) are charged to `all` when it is
    # computed, else to `second`), unfolding them (summed over the worker processes) and fitting; each
    # temperature's wall time is then shared out over the orders in proportion, so the stages add up to the wall
    t_sample = {o: 0.0 for o in s.orders}
    t_fit = 0.0
    displaced_owner = "all" if "all" in s.orders else "second"
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(s.temperatures_K) * len(s.orders), desc="v_F(T)", unit="T×order")
    queue = UnfoldQueue(cmap, e_ref, **kw)
    for k, T in enumerate(s.temperatures_K):
        t_wall = time.perf_counter()
        t_work = {o: 0.0 for o in s.orders}
        us = sample_displacements(modes, float(T), s, seed=temperature_seed(s.seed, k), zg_modes=zg_modes)
        if "second" in s.orders:
            check_pairs(us)
        displaced_all = None
        if need_displaced:  # H(u) of every sample in one call (a model batches them)
            t0 = time.perf_counter()
            moved = []
            for u in us:
                atoms = sc.copy()
                atoms.positions += u
                moved.append(atoms)
            displaced_all = calc.predict_hamiltonians(moved)
            t_work[displaced_owner] += time.perf_counter() - t0
        for p in range(0, len(us), 2):
            pair = us[p : p + 2]
            first, displaced = [], []
            for j, u in enumerate(pair):
                if "first" in s.orders or (j == 0 and need_deriv):  # `second` needs Σ dH/du·u of +u only
                    t0 = time.perf_counter()
                    first.append(deriv.first_order(u))
                    t_work["first" if "first" in s.orders else "second"] += time.perf_counter() - t0
                if need_displaced:
                    displaced.append(displaced_all[p + j])
            if "first" in s.orders:
                for b in first:
                    queue.add("first", b)
            if "second" in s.orders:
                t0 = time.perf_counter()
                pair2 = second_order_pair(deriv, pair[0], *displaced, first_plus=first[0])
                t_work["second"] += time.perf_counter() - t0
                for b in pair2:
                    queue.add("second", b)
            if "all" in s.orders:
                for b in displaced:
                    queue.add("all", b)
        lines, seconds = queue.results()
        t_unfold += sum(seconds.values())
        for o in s.orders:
            t_work[o] += seconds.get(o, 0.0)
        for order in s.orders:
            t1 = time.perf_counter()
            fit = thermal_fermi_velocity(lines[order], s.n_bootstrap, s.seed, layers, group=2, guesses=static,
                                         fixed_energy_eV=s.fixed_energy_eV, error_method=s.error_method)
            dt = time.perf_counter() - t1
            t_fit += dt
            t_work[order] += dt
            _ratios(fit, static_mean)
            fit["ratio_err_method"] = fit["error_method"]
            fit["rms_u_A"] = float(np.sqrt(np.mean(us**2)))
            result.by_temperature.setdefault(order, {})[float(T)] = fit
            result.lines[(order, float(T))] = lines[order]
            if bar is not None:
                bar.update()
        t_wall = time.perf_counter() - t_wall
        for o in s.orders:
            t_sample[o] += t_wall * t_work[o] / max(sum(t_work.values()), 1e-12)
    if bar is not None:
        bar.close()
    t.update({f"samples_{o}": v for o, v in t_sample.items()})
    n = len(s.temperatures_K) * s.n_samples
    t.update({f"per_sample_{o}": v / n for o, v in t_sample.items()})
    t["total"] = sum(v for key, v in t.items() if not key.startswith("per_sample_"))
    # parts of the stages above: eigensolves + weights near E_CNP, and continuum fits with bootstrap
    t["unfold_part"], t["fit_part"] = t_unfold, t_fit
    result.timings_s = t
    return result


def spectral_maps(result: RenormalizationResult, settings: RenormalizationSettings, n_energies: int = 300,
                  sigma_eV: float = 0.03) -> list[dict]:
    """Sample-averaged unfolded spectral functions A(q, E) (states/eV) on K–Γ (q < 0, drawn as −|q|) and K–M
    (q > 0) for up to three temperatures, all orders if computed: one dict per temperature with ``T_K``,
    ``order``, ``q_inv_A`` (n_q), ``E_minus_Ecnp_eV`` (n_E) and ``A`` (n_q, n_E)."""
    from hedgenet.physics.unfold import spectral_function

    order = "all" if "all" in settings.orders else settings.orders[0]
    temps = sorted({T for (o, T) in result.lines if o == order})
    temps = [temps[0], temps[len(temps) // 2], temps[-1]] if len(temps) > 3 else temps
    e0 = result.static["E_cnp_eV"]
    E = np.linspace(e0 - settings.window_eV, e0 + settings.window_eV, n_energies)
    maps = []
    for T in temps:
        lines = result.lines[(order, T)]
        q = lines[0].q
        cols, xs = [], []
        for name, sign in (("KΓ", -1), ("KM", 1)):
            for iq in range(len(q)):
                cols.append(np.mean([spectral_function(*ln.states[name][iq], E, sigma_eV) for ln in lines], axis=0))
                xs.append(sign * q[iq])
        order_x = np.argsort(xs)
        maps.append({"T_K": T, "order": order, "q_inv_A": np.array(xs)[order_x], "E_minus_Ecnp_eV": E - e0,
                     "A": np.array(cols)[order_x]})
    return maps
