"""Phonons of trained models against the reference's, for the model comparison (``hedgenet-compare``).

The reference's force constants come from :func:`hedgenet.physics.phonons.reference_force_constants`
(finite differences, acoustic sum rule imposed, cached by structure, supercell, solver settings and
displacement); each model's by the same phonopy finite differences through its calculator, sum rule imposed
likewise. Frequencies in THz along the band path of the material's relaxed unit cell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hedgenet.physics.phonons import (
    band_structure,
    enforce_acoustic_sum_rule,
    reference_force_constants,
)
from hedgenet.structures.supercell import make_phonopy


@dataclass
class PhononSettings:
    """Phonons of the comparison: ``mode`` auto (on for cells of ≤ ``max_atoms`` atoms and ≤
    ``max_displacements`` displacements), on or off; the supercell (default: the material's
    ``label_supercell``), the ± displacement (Å) and the band path."""

    mode: str = "auto"
    supercell: tuple[int, int] | None = None
    displacement_A: float = 0.01
    path: str = "GMKG"
    npoints: int = 21
    max_atoms: int = 200
    max_displacements: int = 60


def phonon_cell(run_config: dict, settings: PhononSettings, cache_dir: Path):
    """(reference solver, relaxed unit cell, supercell) of a training run's material (from its resolved
    config), or (None, None, reason) when phonons are off or, in auto mode, the cell is too large."""
    from hedgenet.calculators import reference_unit_cell

    if settings.mode == "off":
        return None, None, "phonons off (--phonons off)"
    material = run_config["material"]
    supercell = list(settings.supercell or material.get("label_supercell") or [1, 1])
    reference, unit, _ = reference_unit_cell(material, run_config["reference"], cache_dir, log=lambda *a: None)
    ph = make_phonopy(unit, supercell)
    ph.generate_displacements(distance=settings.displacement_A, is_plusminus=True)
    n_atoms, n_disp = len(ph.supercell), len(ph.supercells_with_displacements)
    if settings.mode == "auto" and (n_atoms > settings.max_atoms or n_disp > settings.max_displacements):
        return None, None, (f"phonons skipped: the {supercell[0]}×{supercell[1]} cell has {n_atoms} atoms and {n_disp} "
                            f"displacements (auto limit {settings.max_atoms} atoms, {settings.max_displacements} "
                            "displacements). Fix: --phonons on, or a smaller --phonon-supercell")
    return reference, unit, supercell


def reference_phonons(material: dict, reference, unit, supercell, settings: PhononSettings, cache_dir: Path,
                      log=print) -> dict:
    """Reference finite-difference phonon bands (THz) of the material: distances, frequencies_THz, ticks,
    labels, time_s (of this call). The force constants are computed once and cached."""
    from hedgenet.calculators import ReferenceCalculator

    name = material.get("name", "material")
    cache = ReferenceCalculator(reference, cache_dir=cache_dir).force_constants_cache_file(unit, supercell,
                                                                                          settings.displacement_A)
    if cache.exists():
        log(f"{name}: reference phonons from the cache of force constants in {cache_dir}")
    else:
        log(f"{name}: computing reference phonons ({reference.name}, {supercell[0]}×{supercell[1]} supercell)")
    t0 = time.perf_counter()
    phonon = reference_force_constants(unit, supercell, reference, settings.displacement_A, cache_dir)
    bands = band_structure(phonon, settings.path, settings.npoints)
    return {"distances": bands.distances, "frequencies_THz": bands.frequencies, "ticks": bands.ticks,
            "labels": np.array(bands.labels), "time_s": np.array(time.perf_counter() - t0)}


def model_phonons(model_path, unit, supercell, settings: PhononSettings) -> np.ndarray | None:
    """Phonon frequencies (THz) of the model at ``model_path`` by the reference's finite differences; None for
    a model without forces (task=hamiltonian). ValueError for a file that is no model or a model of other
    elements."""
    from hedgenet.calculators import check_calculator_for, make_calculator

    calc = make_calculator("model", None, model_path)
    if "forces" not in calc.model.outputs:
        return None
    check_calculator_for(calc, unit)
    phonon = calc.force_constants(unit, supercell, settings.displacement_A)
    enforce_acoustic_sum_rule(phonon)
    return band_structure(phonon, settings.path, settings.npoints).frequencies
