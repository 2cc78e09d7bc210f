"""``hedgenet-label``: label displaced supercells of a material with a reference solver (Hydra app).

    hedgenet-label                                   # AB bilayer graphene, GFN1-xTB, small default set
    hedgenet-label material=bilayer_hbn dataset.n_workers=2
    hedgenet-label --multirun hydra/launcher=submitit_slurm dataset.num_shards=8 'dataset.shard_index=range(8)'
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from hedgenet.config import (
    ConfigError,
    check_config,
    check_material,
    check_temperatures,
    config_dir,
    resolved_dict,
)
from hedgenet.reference import reference_settings
from hedgenet.run_io import run_stage


def check_label_config(cfg: DictConfig) -> None:
    check_config(cfg, "label")
    check_material(cfg.material)
    d = cfg.dataset
    if "temperatures" in cfg:
        check_temperatures(cfg.temperatures.K, "temperatures.K", allow_empty=True)
    thermal_T = check_temperatures(d.thermal.temperatures_K, "dataset.thermal.temperatures_K", allow_empty=True)
    if not d.thermal.quantum and d.thermal.n_per_temperature > 0 and 0.0 in thermal_T:
        raise ConfigError("dataset.thermal.temperatures_K has 0 K with dataset.thermal.quantum=false: classical "
                          "sampling displaces nothing at 0 K, so every such sample would be the undisplaced cell. "
                          "Fix: drop 0 from the temperatures or set dataset.thermal.quantum=true (zero-point motion)")
    amplitudes = [float(a) for a in d.rattle.amplitudes_A]
    if any(not math.isfinite(a) or a <= 0 for a in amplitudes):
        raise ConfigError(f"dataset.rattle.amplitudes_A={amplitudes}: rattle amplitudes are standard deviations "
                          "in Å and must be > 0. Fix: e.g. dataset.rattle.amplitudes_A=[0.02,0.05]")
    for shift in d.rigid.shifts_A:
        if len(shift) != 3 or any(not math.isfinite(float(x)) for x in shift):
            raise ConfigError(f"dataset.rigid.shifts_A: {list(shift)} is not a shift [dx, dy, dz] in Å. "
                              "Fix: give three finite numbers per shift")
    for e in d.strain.strains:
        if len(e) != 3 or any(not math.isfinite(float(x)) or abs(float(x)) > 0.1 for x in e):
            raise ConfigError(f"dataset.strain.strains: {list(e)} is not an in-plane strain [exx, eyy, exy] with "
                              "|ε| ≤ 0.1 (fractions: 0.01 = 1 %). Fix: e.g. dataset.strain.strains=[[0.01,0.01,0.0]]")
    fc_cell = d.get("force_constants_supercell")
    if d.force_constants and fc_cell is not None and cfg.reference.name == "xtb":
        from hedgenet.physics.phonons import folds_k_onto_gamma

        if folds_k_onto_gamma(list(fc_cell)):
            raise ConfigError(f"dataset.force_constants_supercell={list(fc_cell)} folds K onto Γ, the only k-point of "
                              "xTB: graphene's force constants are wrong there (docs/reference.md), and they would be "
                              "the training target. Fix: dataset.force_constants_supercell=[7,7] (or [5,5], [8,8])")
    if not (0 <= d.shard_index < d.num_shards):
        raise ConfigError(
            f"dataset.shard_index={d.shard_index} must lie in [0, dataset.num_shards={d.num_shards})"
        )
    so = d.second_order
    if so.n_pairs < 0 or not (math.isfinite(float(so.temperature_K)) and so.temperature_K > 0):
        raise ConfigError(f"dataset.second_order: n_pairs={so.n_pairs}, temperature_K={so.temperature_K}: the pairs "
                          "must be ≥ 0 and their temperature > 0 K. Fix: e.g. dataset.second_order.n_pairs=8 "
                          "dataset.second_order.temperature_K=300, or n_pairs=0 for none")
    if d.rattle.n_per_amplitude < 0 or d.thermal.n_per_temperature < 0:
        raise ConfigError("dataset.rattle.n_per_amplitude and dataset.thermal.n_per_temperature must be ≥ 0")
    if d.rattle.n_per_amplitude * len(d.rattle.amplitudes_A) + d.thermal.n_per_temperature * len(
        d.thermal.temperatures_K
    ) + len(d.rigid.shifts_A) + len(d.strain.strains) == 0:
        raise ConfigError("the dataset has no samples: set dataset.rattle.n_per_amplitude or "
                          "dataset.thermal.n_per_temperature > 0, or give dataset.rigid.shifts_A")


def run_label(cfg: DictConfig) -> dict:
    """Check the config, relax the material with the reference, then build and label the dataset
    (:func:`hedgenet.data.build.label_material`; thermal samples from the reference's cached force constants)."""
    from hedgenet.data.build import dataset_path
    from hedgenet.data.store import DatasetStore

    check_label_config(cfg)
    # the dataset's lock before any expensive step: a second run on the same file stops here, not after the
    # relaxation and the force constants
    with DatasetStore(dataset_path(resolved_dict(cfg.dataset))).locked():
        return _label(cfg)


def labelling_context(cfg: DictConfig, d: DictConfig):
    """What labelling the recipe ``d`` (a ``dataset`` section) needs: the reference, the material's unit cell
    relaxed by it (cached) and its parameters, and ``thermal_force_constants()``, which computes (cached) the
    reference's force constants of the labelling cell, lists the modes the thermal sampler leaves out in
    ``excluded`` (the fourth item) and stops on imaginary ones, before any thermal sample is drawn."""
    from hedgenet.physics.phonons import reference_force_constants
    from hedgenet.physics.sampling import (
        NormalModes,
        check_imaginary_modes,
        excluded_modes,
        supercell_lattice,
    )
    from hedgenet.reference import make_reference
    from hedgenet.reference.relax import relaxed_structure

    reference = make_reference(cfg.reference.name, **reference_settings(cfg))
    cache_dir = Path(cfg.paths.cache_dir)
    unit, params = relaxed_structure(resolved_dict(cfg.material), reference, cache_dir)
    excluded: list = []

    def thermal_force_constants():
        phonon = reference_force_constants(unit, list(d.supercell), reference, d.thermal.fc_displacement_A, cache_dir,
                                           progress=cfg.progress)
        modes = NormalModes.from_force_constants(phonon.force_constants, phonon.supercell.masses)
        excluded[:] = excluded_modes(modes, float(d.thermal.cutoff_frequency_THz), *supercell_lattice(phonon))
        check_imaginary_modes(
            excluded, float(d.thermal.imaginary_threshold_THz),
            f"the {d.supercell[0]}×{d.supercell[1]} labelling cell (thermal samples)",
            fix="Fix: a labelling cell that does not fold K onto Γ for graphene with xTB (dataset.supercell=[5,5] or "
                "[7,7]), or no thermal samples (dataset.thermal.n_per_temperature=0); "
                "dataset.thermal.imaginary_threshold_THz raises the threshold (the modes stay unsampled).")
        return phonon

    return reference, unit, params, thermal_force_constants, excluded


def _label(cfg: DictConfig) -> dict:
    from hedgenet.calculators import ReferenceCalculator
    from hedgenet.data.build import label_material
    from hedgenet.physics.phonons import reference_force_constants

    d = cfg.dataset
    reference, unit, params, thermal_force_constants, excluded = labelling_context(cfg, d)
    summary = label_material(unit, params, reference, {"name": cfg.reference.name, **reference_settings(cfg)},
                             resolved_dict(cfg.dataset), cfg.seed, resolved_dict(cfg.material), thermal_force_constants,
                             OmegaConf.to_yaml(cfg, resolve=True), progress=bool(cfg.progress),
                             force_constants_of=lambda supercell: reference_force_constants(
                                 unit, supercell, reference, d.thermal.fc_displacement_A, Path(cfg.paths.cache_dir),
                                 progress=cfg.progress),
                             couplings_of=lambda cell, delta_A: ReferenceCalculator(reference).block_derivatives(
                                 cell, delta_A, progress=bool(cfg.progress)),
                             blocks_of=ReferenceCalculator(reference).predict_hamiltonian)
    summary["excluded_modes"] = list(excluded)  # empty when the dataset has no thermal samples
    return summary


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dataset {summary['file']}")
    table.add_column("quantity")
    table.add_column("value")
    for key in (
        "material", "reference", "structure_params", "block_cutoff_A", "n_samples", "n_failed", "by_kind",
        "atoms_per_sample", "edges_per_sample", "energy_per_atom_eV", "force_rms_eV_per_A",
        "force_max_eV_per_A", "label_time_s_median", "label_time_s_total", "force_constants",
        "force_constants_atoms", "size_MB", "this_run",
    ):
        value = summary.get(key)
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
        table.add_row(key, str(value))
    if "excluded_modes" in summary:  # modes the thermal sampler left out, by kind
        kinds = {}
        for m in summary["excluded_modes"]:
            kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
        table.add_row("modes not sampled", ", ".join(f"{n} {k}" for k, n in kinds.items()) or "none")
    Console().print(table)


def _user_errors() -> tuple[type[BaseException], ...]:
    from hedgenet.data.store import DatasetError
    from hedgenet.physics.sampling import ImaginaryModesError
    from hedgenet.reference import CellTooSmallError, UnsupportedElementError

    return (ConfigError, DatasetError, CellTooSmallError, UnsupportedElementError, ImaginaryModesError)


USER_ERRORS = _user_errors()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="label")
def _main(cfg: DictConfig) -> None:
    run_stage("hedgenet-label", cfg, lambda cfg, run_dir: run_label(cfg), lambda summary, run: print_summary(summary),
              USER_ERRORS)


def main() -> None:
    from hedgenet.cli import run_hydra_app

    run_hydra_app(_main)


if __name__ == "__main__":
    main()
