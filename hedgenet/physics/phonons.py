"""Phonons from any calculator's force constants (``calc.force_constants``: phonopy finite displacements with a
reference or a model, or the model's autograd Hessian): the reference's cached force constants, the
acoustic sum rule, bands along Γ–M–K–Γ (THz), DOS and named Γ modes of layered materials.

Units: force constants Φ_ij^{αβ} = ∂²E/∂u_iα∂u_jβ in eV/Å² (phonopy's layout (N, N, 3, 3) over the
supercell), frequencies in THz (phonopy's VASP units: eV, Å, amu).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from hedgenet.structures.layers import layer_index

HEXAGONAL_PATH = {"Γ": (0.0, 0.0, 0.0), "M": (0.5, 0.0, 0.0), "K": (1 / 3, 1 / 3, 0.0)}
"""High-symmetry points of a hexagonal cell (fractional reciprocal coordinates), a1·a2 at 60°/120°."""


def reference_force_constants(
    unit: Atoms,
    supercell_matrix,
    reference,
    distance_A: float = 0.01,
    cache_dir: str | Path | None = None,
    progress: bool = False,
):
    """Phonopy object with force constants (eV/Å²) from reference forces at ±``distance_A`` displacements,
    cached in ``cache_dir`` (:meth:`ReferenceCalculator.force_constants`), the acoustic sum rule imposed with
    phonopy's symmetrisation."""
    from hedgenet.calculators import ReferenceCalculator

    phonon = ReferenceCalculator(reference, cache_dir=cache_dir).force_constants(unit, supercell_matrix, distance_A,
                                                                                 progress=progress)
    enforce_acoustic_sum_rule(phonon)
    return phonon


def folds_k_onto_gamma(supercell_matrix) -> bool:
    """Whether the hexagonal zone corner K = (⅓, ⅓) is a Γ point of this supercell (n×n with n ≡ 0 mod 3).

    A Γ-only reference (xTB) then puts graphene's Dirac states at its only k-point: its forces carry a
    spurious long-range response and the force constants are wrong (imaginary or far too soft E2g and
    shear modes; docs/reference.md)."""
    from hedgenet.structures.supercell import supercell_matrix as as_matrix

    m = as_matrix(supercell_matrix)
    qk = m.T @ np.array([1 / 3, 1 / 3, 0.0])
    return bool(np.allclose(qk, np.round(qk), atol=1e-9))


def mapped_force_constants(calc, unit: Atoms, supercell, force_constants_supercell=None, distance_A: float = 0.01,
                           method: str = "finite_differences", progress: bool = False):
    """Phonopy object of ``supercell`` of ``unit`` whose force constants (eV/Å², sum rule imposed) come from
    ``calc.force_constants`` on ``force_constants_supercell`` (None: ``supercell`` itself).

    When the two differ the force constants are mapped by phonopy's Fourier interpolation
    (``Phonopy.ph2ph``): the dynamical matrices of the source cell at the wave vectors commensurate with
    ``supercell`` are transformed back to real space. Every phonon of the target cell is then the source's
    interpolated phonon at that q, exact at the q the two cells share (Γ always), which is what phonopy's own
    bands do between commensurate points. The alternative, copying real-space force constants by distance,
    needs a cut-off rule for pairs at the Wigner–Seitz boundary that phonopy's interpolation already handles
    (shortest vectors with their multiplicities). Returns ``(phonon, info)``, ``info`` with the source
    cell, how it was mapped and the sum-rule violation."""
    from hedgenet.structures.supercell import supercell_matrix as as_matrix

    source = as_matrix(supercell if force_constants_supercell is None else force_constants_supercell)
    phonon = calc.force_constants(unit, source.tolist(), float(distance_A), method=str(method), progress=progress)
    return _onto_supercell(phonon, supercell, {}, "none (computed on the sampling cell)")


def _onto_supercell(phonon, supercell, info: dict, unmapped: str, source_text: str = ""):
    """``phonon`` (force constants of its own supercell) with the sum rule imposed, as a phonopy object of
    ``supercell`` (phonopy's Fourier interpolation, ``Phonopy.ph2ph``, when the cells differ), and ``info``
    completed with the source cell, whether it folds K onto Γ, the sum-rule violation and how it was mapped."""
    from hedgenet.structures.supercell import supercell_matrix as as_matrix

    source = np.asarray(phonon.supercell_matrix).astype(int)
    info = {"force_constants_supercell": source.tolist(), **info, "folds_K_onto_gamma": folds_k_onto_gamma(source),
            **enforce_acoustic_sum_rule(phonon)}
    if np.array_equal(source, as_matrix(supercell)):
        info["mapped_by"] = unmapped
        return phonon, info
    mapped = phonon.ph2ph(as_matrix(supercell))
    enforce_acoustic_sum_rule(mapped)
    info["mapped_by"] = f"phonopy Fourier interpolation of dynamical matrices (Phonopy.ph2ph){source_text}"
    return mapped, info


def loaded_force_constants(path, unit: Atoms, supercell, tolerance_A: float = 1e-3):
    """Phonopy object of ``supercell`` of ``unit`` with the force constants stored in ``path`` (the
    ``phonopy_params.yaml`` a phonons, epi or fermi-velocity run writes), mapped by phonopy's Fourier
    interpolation when that run's supercell differs. ConfigError naming the fix when the file is missing, holds no
    force constants, or belongs to another unit cell (lattice or positions off by more than ``tolerance_A``)."""
    import phonopy

    from hedgenet.config import ConfigError

    path = Path(str(path))
    if path.is_dir():
        path = path / "phonopy_params.yaml"
    if not path.is_file():
        raise ConfigError(f"fermi_velocity.force_constants_from={path}: no such file. Fix: the phonopy_params.yaml of a "
                         "hedgenet-phonons, -epi or -fermi-velocity run (or its run directory)")
    phonon = phonopy.load(str(path), produce_fc=False, is_compact_fc=False, log_level=0)  # full (N, N, 3, 3)
    if phonon.force_constants is None:
        raise ConfigError(f"{path} holds no force constants. Fix: a run's phonopy_params.yaml (written with them)")
    other = phonon.unitcell
    frac = np.asarray(other.scaled_positions) - unit.get_scaled_positions()
    frac -= np.round(frac)
    same = (len(other.numbers) == len(unit) and np.array_equal(other.numbers, unit.numbers)
            and np.abs(np.asarray(other.cell) - unit.cell.array).max() < tolerance_A
            and np.abs(frac @ unit.cell.array).max() < tolerance_A)
    if not same:
        raise ConfigError(f"{path} is the phonons of another unit cell than this run's (atoms, lattice or positions "
                         f"differ by more than {tolerance_A} Å). Fix: force constants of a run of the same material "
                         "with the same relaxed structure (same reference and material settings)")
    return _onto_supercell(phonon, supercell, {"force_constants_from": str(path)}, f"none (read from {path})",
                           f" of {path}")


def sum_rule_violation(force_constants: np.ndarray) -> float:
    """max_{i,α,β} |Σ_j Φ_ij^{αβ}| (eV/Å²): zero when a rigid translation costs no force."""
    return float(np.abs(force_constants.sum(axis=1)).max())


def enforce_acoustic_sum_rule(phonon) -> dict:
    """Impose translational invariance (and Φ_ij = Φ_ji^T) on ``phonon.force_constants`` in place with
    phonopy's symmetrisation; returns the violation (eV/Å²) before and after."""
    before = sum_rule_violation(phonon.force_constants)
    phonon.symmetrize_force_constants(show_drift=False)
    return {"asr_violation_before_eV_A2": before, "asr_violation_after_eV_A2": sum_rule_violation(phonon.force_constants)}


def path_qpoints(labels: str = "ΓMKΓ", npoints: int = 51):
    """q-points along a path of :data:`HEXAGONAL_PATH` labels (``G`` is accepted for Γ)."""
    from phonopy.phonon.band_structure import get_band_qpoints_and_path_connections

    names = [("Γ" if c == "G" else c) for c in labels]
    unknown = [c for c in names if c not in HEXAGONAL_PATH]
    if unknown or len(names) < 2:
        raise ValueError(f"band path {labels!r}: use ≥ 2 of {sorted(HEXAGONAL_PATH)} (G for Γ), e.g. 'GMKG'")
    path = [[HEXAGONAL_PATH[c] for c in names]]
    qpoints, connections = get_band_qpoints_and_path_connections(path, npoints=npoints)
    return qpoints, connections, names


@dataclass
class PhononBands:
    """Frequencies (THz) along a path: ``distances`` (n_q,) 1/Å, ``frequencies`` (n_q, n_modes),
    ``ticks`` distances of the labelled points and their ``labels``."""

    distances: np.ndarray
    frequencies: np.ndarray
    ticks: np.ndarray
    labels: list[str]


def band_structure(phonon, labels: str = "ΓMKΓ", npoints: int = 51) -> PhononBands:
    qpoints, connections, names = path_qpoints(labels, npoints)
    phonon.run_band_structure(qpoints, path_connections=connections, labels=names)
    bs = phonon.band_structure
    dist = np.concatenate(bs.distances)
    freqs = np.concatenate(bs.frequencies)
    ticks = np.array([bs.distances[0][0]] + [seg[-1] for seg in bs.distances])
    return PhononBands(dist, freqs, ticks, names)


def density_of_states(phonon, mesh=(24, 24, 1), sigma_THz: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Total DOS (states/THz per unit cell) on a Γ-centred ``mesh`` with Gaussian smearing ``sigma_THz``."""
    phonon.run_mesh(list(mesh), is_gamma_center=True)
    phonon.run_total_dos(sigma=sigma_THz, use_tetrahedron_method=False)
    d = phonon.total_dos
    return np.asarray(d.frequency_points), np.asarray(d.dos)


def name_gamma_modes(phonon, unit: Atoms, rigid_threshold: float = 0.9) -> list[dict]:
    """Γ-point modes of a layered unit cell with names from their eigenvectors.

    A mode is a rigid-layer mode when ≥ ``rigid_threshold`` of its mass-weighted displacement is a
    rigid translation of each layer: ``acoustic`` when all layers move together, else ``interlayer
    shear`` (in plane) or ``layer breathing`` (out of plane); every other mode is ``intralayer optical``
    (in plane or out of plane). Returns one dict per mode: frequency (THz, cm⁻¹), name, rigid fraction.
    """
    layer = layer_index(unit)
    masses = unit.get_masses()
    phonon.run_qpoints([[0.0, 0.0, 0.0]], with_eigenvectors=True)
    freqs = phonon.qpoints.frequencies[0]
    vecs = phonon.qpoints.eigenvectors[0]  # (3N, modes), mass-weighted
    out = []
    for m in range(len(freqs)):
        e = vecs[:, m].reshape(-1, 3).real
        u = e / np.sqrt(masses)[:, None]
        rigid = np.zeros_like(e)
        for lay in np.unique(layer):
            sel = layer == lay
            rigid[sel] = np.sqrt(masses[sel])[:, None] * u[sel].mean(axis=0)  # back to mass weighting
        frac = float(np.sum(rigid * e) ** 2 / max(np.sum(rigid**2) * np.sum(e**2), 1e-30)) if np.any(rigid) else 0.0
        inplane = float(np.sum(e[:, :2] ** 2) / np.sum(e**2))
        if frac >= rigid_threshold:
            mean_per_layer = np.array([u[layer == lay].mean(axis=0) for lay in np.unique(layer)])
            together = np.all(np.einsum("la,a->l", mean_per_layer, mean_per_layer[0]) > 0)
            name = "acoustic" if together else ("interlayer shear" if inplane > 0.5 else "layer breathing")
        else:
            name = "intralayer optical, " + ("in plane" if inplane > 0.5 else "out of plane")
        out.append({"frequency_THz": float(freqs[m]), "frequency_cm1": float(freqs[m]) * 33.35641,
                    "name": name, "rigid_layer_fraction": frac})
    return out


def equilibrium_residuals(calc, atoms: Atoms) -> dict:
    """How far ``atoms`` (the reference's relaxed structure) is from the calculator's own equilibrium: the
    largest and RMS force (meV/Å), the largest mean force per atom of a layer (meV/Å: what pulls the layers
    together or slides them) and, where the calculator gives a stress, the in-plane virial per atom
    [W_xx, W_yy, W_xy] (meV/atom, W = −∂E/∂ε; a model that is not stress-free here has a spurious tension
    that makes the flexural ZA branch linear near Γ). A faithful model gives ≈ 0 for all of them."""
    from ase.calculators.calculator import PropertyNotImplementedError

    a = atoms.copy()
    a.calc = calc
    try:  # first: a calculator that gives the stress computes the forces with it (one evaluation)
        sigma = a.get_stress(voigt=False)
    except (PropertyNotImplementedError, ValueError):
        sigma = None
    f = a.get_forces()
    out = {"residual_force_max_meV_A": 1e3 * float(np.linalg.norm(f, axis=1).max()),
           "residual_force_rms_meV_A": 1e3 * float(np.sqrt((f**2).sum(axis=1).mean()))}
    layer = layer_index(atoms)
    if len(np.unique(layer)) > 1:
        means = [f[layer == k].mean(axis=0) for k in np.unique(layer)]
        out["residual_layer_force_max_meV_A"] = 1e3 * float(max(np.linalg.norm(m) for m in means))
    if sigma is not None:
        w = -sigma * a.get_volume() / len(a)
        out["residual_virial_in_plane_meV_atom"] = [1e3 * float(w[0, 0]), 1e3 * float(w[1, 1]), 1e3 * float(w[0, 1])]
    return out


def own_minimum(calc, unit: Atoms, fmax_meV_A: float = 0.1, steps: int = 200) -> dict:
    """Where a calculator's own energy minimum lies, from the reference's relaxed unit cell ``unit``: the atomic
    positions relaxed with ``calc`` at fixed cell (BFGS to ``fmax_meV_A``). Returns the largest force there
    (meV/Å: ~0 when the relaxation converged, i.e. the energy has a minimum), the largest displacement from
    ``unit`` (Å), the change of the interlayer distance (Å, layer 1 minus layer 0 mean height; absent for one
    layer) and the steps taken. Meant for a model, which has no k-point sampling: a Γ-only reference on a
    primitive cell would give wrong forces."""
    from ase.optimize import BFGS

    a = unit.copy()
    a.calc = calc
    opt = BFGS(a, logfile=None)
    opt.run(fmax=fmax_meV_A * 1e-3, steps=int(steps))
    out = {"own_minimum_residual_force_max_meV_A": 1e3 * float(np.linalg.norm(a.get_forces(), axis=1).max()),
           "own_minimum_shift_max_A": float(np.linalg.norm(a.positions - unit.positions, axis=1).max()),
           "own_minimum_steps": int(opt.nsteps)}
    layer = layer_index(unit)
    if len(np.unique(layer)) > 1:
        def gap(x):
            return float(x.positions[layer == 1, 2].mean() - x.positions[layer == 0, 2].mean())
        out["own_minimum_interlayer_distance_change_A"] = gap(a) - gap(unit)
    return out


@dataclass
class PhononResult:
    """Phonons of one calculator on one supercell: the phonopy object (force constants Φ in eV/Å², sum rule
    imposed), bands along the path (THz), total DOS (1/THz per unit cell) and the named Γ modes."""

    phonon: object
    bands: PhononBands
    dos_frequency_THz: np.ndarray
    dos: np.ndarray
    gamma_modes: list
    asr: dict
    force_constants_time_s: float
    n_displacements: int
    residuals: dict = field(default_factory=dict)  # equilibrium_residuals at the undisplaced supercell

    def summary(self) -> dict:
        """Sum-rule violation (eV/Å²), time (s), extreme frequencies, the Γ interlayer modes (THz) and the
        forces and virial left at the undisplaced structure (meV/Å, meV/atom)."""
        out = {"force_constants_time_s": self.force_constants_time_s, "n_displacements": self.n_displacements,
               **self.asr, "max_frequency_THz": float(self.bands.frequencies.max()),
               "min_frequency_THz": float(self.bands.frequencies.min()), **self.residuals}
        out.update(gamma_mode_summary(self.gamma_modes))
        return out


def gamma_mode_summary(gamma_modes: list[dict], acoustic_tolerance_THz: float = 0.1) -> dict:
    """Γ frequencies (THz) a reader checks first, from :func:`name_gamma_modes`: the interlayer shear and
    breathing (means), the highest in-plane intralayer optical mode (graphene's E2g/G) and the lowest mode
    that is not acoustic (negative: imaginary), with the list of imaginary non-acoustic modes beyond
    ``acoustic_tolerance_THz``."""
    out = {}
    for name in ("interlayer shear", "layer breathing"):
        f = [m["frequency_THz"] for m in gamma_modes if m["name"] == name]
        if f:
            out[f"gamma_{name.replace(' ', '_')}_THz"] = float(np.mean(f))
    inplane = [m["frequency_THz"] for m in gamma_modes if m["name"] == "intralayer optical, in plane"]
    if inplane:
        out["gamma_inplane_optical_max_THz"] = float(max(inplane))
    optical = [m["frequency_THz"] for m in gamma_modes if m["name"] != "acoustic"]
    if optical:
        out["gamma_lowest_non_acoustic_THz"] = float(min(optical))
    out["gamma_imaginary_non_acoustic_THz"] = [f for f in optical if f < -acoustic_tolerance_THz]
    return out


def phonons_of(calc, unit: Atoms, supercell, distance_A: float = 0.01, method: str = "finite_differences",
               path: str = "GMKG", npoints: int = 51, dos_mesh=(24, 24, 1), dos_sigma_THz: float = 0.1) -> PhononResult:
    """The phonon chain for any calculator: force constants (``calc.force_constants``: finite differences at
    ± ``distance_A`` Å, or a model's autograd Hessian), acoustic sum rule, bands, DOS, named Γ modes."""
    import time

    t0 = time.perf_counter()
    phonon = calc.force_constants(unit, list(supercell), float(distance_A), method=str(method))
    t_fc = time.perf_counter() - t0
    asr = enforce_acoustic_sum_rule(phonon)
    bands = band_structure(phonon, str(path), int(npoints))
    dos_f, dos = density_of_states(phonon, tuple(dos_mesh), float(dos_sigma_THz))
    n_disp = len(phonon.displacements) if method != "autograd" else 0
    from hedgenet.structures.supercell import supercell_atoms

    residuals = equilibrium_residuals(calc, supercell_atoms(phonon, unit))
    return PhononResult(phonon, bands, dos_f, dos, name_gamma_modes(phonon, unit), asr, t_fc, n_disp, residuals)
