"""Displaced supercells for training sets: random rattles and harmonic thermal displacements.

The labelling supercell is always phonopy's supercell of the material's unit cell (atom order: for each
unit-cell atom all its images), so rattled and thermal samples share one reference structure and the
reference force constants apply to it directly. Thermal displacements come from phonopy's canonical
sampler of harmonic phonons (quantum widths ħ/(2Mω)·coth(ħω/2k_BT), zero point included, or classical)
with force constants computed by finite differences with the reference solver (cached).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms


@dataclass
class SampleSpec:
    """What one dataset sample is: its displacement (Å) from the reference supercell and how it was drawn."""

    sample_id: int
    kind: str  # 'rattle' | 'thermal'
    seed: int
    displacement: np.ndarray  # (N, 3) Å
    amplitude_A: float | None = None
    temperature_K: float | None = None

    def attrs(self) -> dict:
        out = {"sample_id": self.sample_id, "kind": self.kind, "seed": self.seed}
        if self.amplitude_A is not None:
            out["amplitude_A"] = self.amplitude_A
        if self.temperature_K is not None:
            out["temperature_K"] = self.temperature_K
        return out


def to_phonopy_atoms(atoms: Atoms):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell.array,
        positions=atoms.positions,
        masses=atoms.get_masses(),
    )


def make_phonopy(unit: Atoms, supercell_matrix, symprec: float = 1e-4):
    """Phonopy object for ``unit`` (primitive = unit cell) and an integer supercell matrix (2×2 or 3×3)."""
    from phonopy import Phonopy

    m = np.asarray(supercell_matrix, dtype=int)
    if m.shape == (2,):
        m = np.diag([m[0], m[1], 1])
    elif m.shape == (2, 2):
        m = np.block([[m, np.zeros((2, 1), int)], [np.zeros((1, 2), int), np.ones((1, 1), int)]])
    if m.shape != (3, 3) or round(abs(np.linalg.det(m))) == 0:
        raise ValueError(
            f"supercell matrix {supercell_matrix!r} must be [n1, n2], a 2×2 or a 3×3 non-singular "
            "integer matrix"
        )
    return Phonopy(to_phonopy_atoms(unit), supercell_matrix=m, primitive_matrix=None, symprec=symprec)


def supercell_atoms(phonon, unit: Atoms) -> Atoms:
    """The labelling supercell as ``ase.Atoms`` with the layer index carried over from ``unit``."""
    sc = phonon.supercell
    atoms = Atoms(
        numbers=sc.numbers, positions=sc.positions, cell=sc.cell, pbc=unit.pbc, masses=sc.masses
    )
    u2u = sc.u2u_map  # supercell index of a unit-cell atom's first image -> unit-cell index
    unit_index = np.array([u2u[int(s)] for s in sc.s2u_map])
    atoms.arrays["layer"] = np.asarray(unit.arrays["layer"])[unit_index].astype(np.int64)
    return atoms


def _fc_key(unit: Atoms, supercell_matrix, reference, distance_A: float) -> str:
    payload = {
        "numbers": unit.numbers.tolist(),
        "positions": np.round(unit.positions, 8).tolist(),
        "cell": np.round(unit.cell.array, 8).tolist(),
        "supercell": np.asarray(supercell_matrix).tolist(),
        "reference": reference.settings_hash(),
        "distance_A": distance_A,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def reference_force_constants(
    unit: Atoms,
    supercell_matrix,
    reference,
    distance_A: float = 0.01,
    cache_dir: str | Path | None = None,
    progress: bool = False,
):
    """Phonopy object with force constants (eV/Å²) from reference forces at ±``distance_A`` displacements.

    Cached in ``cache_dir/force_constants/<key>.npz`` (key: structure, supercell, solver settings,
    distance); the acoustic sum rule is imposed with phonopy's symmetrisation.
    """
    phonon = make_phonopy(unit, supercell_matrix)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / "force_constants" / f"{_fc_key(unit, supercell_matrix, reference, distance_A)}.npz"
        if cache.exists():
            phonon.force_constants = np.load(cache)["force_constants"]
            return phonon
    from hedgenet.calculators import ReferenceCalculator
    from hedgenet.physics.phonons import enforce_acoustic_sum_rule, finite_difference_force_constants

    phonon = finite_difference_force_constants(
        ReferenceCalculator(reference), unit, supercell_matrix, distance_A, progress=progress
    )
    enforce_acoustic_sum_rule(phonon)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, force_constants=phonon.force_constants)
        tmp.replace(cache)
    return phonon


def rattle_specs(n_atoms: int, amplitudes_A, n_per_amplitude: int, seed: int, start_id: int = 0):
    """Gaussian rattles: every Cartesian component ~ N(0, amplitude²), net translation removed."""
    specs = []
    sid = start_id
    for amp in amplitudes_A:
        if amp <= 0:
            raise ValueError(f"dataset.rattle.amplitudes_A must be > 0 Å, got {amp}")
        for _ in range(n_per_amplitude):
            s = int(np.random.SeedSequence([seed, sid]).generate_state(1)[0])
            u = np.random.default_rng(s).normal(0.0, amp, size=(n_atoms, 3))
            u -= u.mean(axis=0)
            specs.append(SampleSpec(sid, "rattle", s, u, amplitude_A=float(amp)))
            sid += 1
    return specs


def thermal_specs(
    phonon,
    temperatures_K,
    n_per_temperature: int,
    seed: int,
    start_id: int = 0,
    quantum: bool = True,
    cutoff_frequency_THz: float = 0.1,
):
    """Harmonic canonical-ensemble displacements (Å) from phonopy at each temperature.

    Modes below ``cutoff_frequency_THz`` (acoustic modes at Γ and any imaginary modes) are not sampled.
    """
    phonon.init_random_displacements(
        dist_func="quantum" if quantum else "classical", cutoff_frequency=cutoff_frequency_THz
    )
    specs = []
    sid = start_id
    for T in temperatures_K:
        if T < 0:
            raise ValueError(f"dataset.thermal.temperatures_K must be ≥ 0 K, got {T}")
        s = int(np.random.SeedSequence([seed, sid]).generate_state(1)[0])
        disp = phonon.get_random_displacements_at_temperature(
            float(T), n_per_temperature, random_seed=s
        )
        for u in disp:
            specs.append(SampleSpec(sid, "thermal", s, np.asarray(u), temperature_K=float(T)))
            sid += 1
    return specs
