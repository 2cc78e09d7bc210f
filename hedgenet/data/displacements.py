"""Displaced supercells for training sets: random rattles, harmonic thermal displacements, rigid layer shifts
and homogeneously strained cells.

The labelling supercell is always phonopy's supercell of the material's unit cell
(:func:`hedgenet.structures.supercell.make_phonopy`; atom order: for each unit-cell atom all its images), so
rattled and thermal samples share one reference structure and the reference force constants
(:func:`hedgenet.physics.phonons.reference_force_constants`) apply to it directly. Thermal displacements come
from phonopy's canonical sampler of harmonic phonons (quantum widths ħ/(2Mω)·coth(ħω/2k_BT), zero point
included, or classical).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SampleSpec:
    """What one dataset sample is: its displacement (Å) from the reference supercell and how it was drawn."""

    sample_id: int
    kind: str  # 'rattle' | 'thermal' | 'rigid' | 'strain'
    seed: int
    displacement: np.ndarray  # (N, 3) Å
    amplitude_A: float | None = None
    temperature_K: float | None = None
    shift_A: tuple[float, float, float] | None = None  # rigid samples: the moving layer's shift (Å)
    strain: tuple[float, float, float] | None = None  # strain samples: in-plane (ε_xx, ε_yy, ε_xy), dimensionless

    def strain_tensor(self) -> np.ndarray | None:
        """The symmetric (3, 3) strain of a strain sample: cell → cell·(1 + ε), positions likewise."""
        if self.strain is None:
            return None
        exx, eyy, exy = self.strain
        return np.array([[exx, exy, 0.0], [exy, eyy, 0.0], [0.0, 0.0, 0.0]])

    def structure(self, base):
        """This sample's structure: ``base`` displaced by :attr:`displacement` (Å), then strained by its strain
        (cell → cell·(1 + ε), positions scaled with it)."""
        atoms = base.copy()
        atoms.positions = base.positions + self.displacement
        strain = self.strain_tensor()
        if strain is not None:
            atoms.set_cell(base.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        return atoms

    def attrs(self) -> dict:
        out = {"sample_id": self.sample_id, "kind": self.kind, "seed": self.seed}
        if self.amplitude_A is not None:
            out["amplitude_A"] = self.amplitude_A
        if self.temperature_K is not None:
            out["temperature_K"] = self.temperature_K
        if self.shift_A is not None:
            out["shift_A"] = list(self.shift_A)
        if self.strain is not None:
            out["strain"] = list(self.strain)
        return out


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


def rigid_layer_specs(layer, shifts_A, seed: int, start_id: int = 0):
    """Rigid shifts of the top layer against the others: for each ``[dx, dy, dz]`` (Å) every atom of the top
    layer moves by it, then the mean displacement is removed (no net translation), so the layers' relative
    position changes by exactly the shift. A scan in dz samples the interlayer binding curve E(d) (breathing
    mode), one in dx, dy the sliding surface (shear mode): the interlayer forces of these cells are the whole
    signal, while in rattled cells they are a few meV/Å under intralayer forces of ~0.5 eV/Å.

    Returns no samples for a structure with one layer (no interlayer physics to sample)."""
    layer = np.asarray(layer)
    if len(np.unique(layer)) < 2 or not len(shifts_A):
        return []
    top = layer == layer.max()
    specs = []
    for k, shift in enumerate(shifts_A):
        shift = np.asarray(shift, dtype=float)
        if shift.shape != (3,):
            raise ValueError(f"dataset.rigid.shifts_A[{k}]={list(shift)} must be [dx, dy, dz] in Å")
        u = np.zeros((len(layer), 3))
        u[top] = shift
        u -= u.mean(axis=0)
        sid = start_id + k
        s = int(np.random.SeedSequence([seed, sid]).generate_state(1)[0])
        specs.append(SampleSpec(sid, "rigid", s, u, shift_A=tuple(float(x) for x in shift)))
    return specs


def strain_specs(n_atoms: int, strains, rattle_A: float, seed: int, start_id: int = 0):
    """Homogeneously strained cells: for each in-plane ``[ε_xx, ε_yy, ε_xy]`` (dimensionless) the cell and the
    positions are scaled by (1 + ε), on top of a Gaussian rattle of ``rattle_A`` (Å per component, net
    translation removed; 0 for none). With the reference's virial they teach the model E(strain): its stress
    at the relaxed cell (the flexural ZA branch turns linear under a spurious tension) and the elastic
    constants (the acoustic sound velocities)."""
    specs = []
    if rattle_A < 0:
        raise ValueError(f"dataset.strain.rattle_A must be ≥ 0 Å, got {rattle_A}")
    for k, e in enumerate(strains):
        e = np.asarray(e, dtype=float)
        if e.shape != (3,):
            raise ValueError(f"dataset.strain.strains[{k}]={list(e)} must be [exx, eyy, exy] (dimensionless, e.g. 0.01)")
        if np.abs(e).max() > 0.1:
            raise ValueError(f"dataset.strain.strains[{k}]={list(e)}: strains are fractions (0.01 = 1 %); "
                             "|ε| > 0.1 is not a harmonic-region sample. Fix: give e.g. [0.01, 0.01, 0.0]")
        sid = start_id + k
        s = int(np.random.SeedSequence([seed, sid]).generate_state(1)[0])
        u = np.random.default_rng(s).normal(0.0, rattle_A, size=(n_atoms, 3)) if rattle_A > 0 else np.zeros((n_atoms, 3))
        u -= u.mean(axis=0)
        specs.append(SampleSpec(sid, "strain", s, u, amplitude_A=float(rattle_A) if rattle_A > 0 else None,
                                strain=tuple(float(x) for x in e)))
    return specs
