"""``hedgenet-label``: label displaced supercells of a material with a reference solver (Hydra app).

    hedgenet-label                                   # AB bilayer graphene, GFN1-xTB, small default set
    hedgenet-label material=bilayer_hbn dataset.n_workers=2
    hedgenet-label --multirun hydra/launcher=submitit_slurm dataset.num_shards=8 'dataset.shard_index=range(8)'
"""

from __future__ import annotations

import hashlib
import json
import sys
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
    check_temperatures(d.thermal.temperatures_K, "dataset.thermal.temperatures_K", allow_empty=True)
    if not (0 <= d.shard_index < d.num_shards):
        raise ConfigError(
            f"dataset.shard_index={d.shard_index} must lie in [0, dataset.num_shards={d.num_shards})"
        )
    if d.rattle.n_per_amplitude < 0 or d.thermal.n_per_temperature < 0:
        raise ConfigError("dataset.rattle.n_per_amplitude and dataset.thermal.n_per_temperature must be ≥ 0")
    if d.rattle.n_per_amplitude * len(d.rattle.amplitudes_A) + d.thermal.n_per_temperature * len(
        d.thermal.temperatures_K
    ) == 0:
        raise ConfigError("the dataset has no samples: set dataset.rattle.n_per_amplitude or dataset.thermal.n_per_temperature > 0")


def dataset_fingerprint(material_params: dict, cfg: DictConfig, reference) -> str:
    payload = {
        "material": {"builder": cfg.material.builder, "params": material_params},
        "supercell": list(cfg.dataset.supercell),
        "rattle": resolved_dict(cfg.dataset.rattle),
        "thermal": resolved_dict(cfg.dataset.thermal),
        "seed": cfg.seed,
        "reference": reference.settings(),
    }
    payload["reference"].pop("tblite_version", None)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_label(cfg: DictConfig) -> dict:
    """Build, label and summarise the dataset described by ``cfg``; returns the summary dict."""
    from hedgenet.data.displacements import rattle_specs, thermal_specs
    from hedgenet.physics.phonons import reference_force_constants
    from hedgenet.structures.supercell import make_phonopy, supercell_atoms
    from hedgenet.data.labelling import label_dataset
    from hedgenet.data.store import DatasetStore
    from hedgenet.reference import make_reference
    from hedgenet.reference.relax import relaxed_structure

    check_label_config(cfg)
    ref_kwargs = reference_settings(cfg)
    reference = make_reference(cfg.reference.name, **ref_kwargs)
    cache_dir = Path(cfg.paths.cache_dir)
    d = cfg.dataset

    # Structure: relaxed unit cell, then phonopy's supercell (checked before any expensive work).
    unit, params = relaxed_structure(resolved_dict(cfg.material), reference, cache_dir)
    phonon = make_phonopy(unit, list(d.supercell))
    base = supercell_atoms(phonon, unit)
    reference.check_elements(base)
    reference.check_cell(base)

    specs = rattle_specs(len(base), list(d.rattle.amplitudes_A), d.rattle.n_per_amplitude, cfg.seed)
    if d.thermal.n_per_temperature > 0 and len(d.thermal.temperatures_K) > 0:
        phonon = reference_force_constants(
            unit, list(d.supercell), reference, d.thermal.fc_displacement_A, cache_dir, progress=cfg.progress
        )
        specs += thermal_specs(
            phonon, list(d.thermal.temperatures_K), d.thermal.n_per_temperature, cfg.seed,
            start_id=len(specs), quantum=d.thermal.quantum, cutoff_frequency_THz=d.thermal.cutoff_frequency_THz,
        )
    path = Path(d.path)
    if d.num_shards > 1:
        specs = [s for s in specs if s.sample_id % d.num_shards == d.shard_index]
        path = path.with_name(f"{path.stem}.shard{d.shard_index}-of-{d.num_shards}{path.suffix}")

    store = DatasetStore(path)
    fingerprint = dataset_fingerprint(params, cfg, reference)
    if store.exists():
        store.check_fingerprint(fingerprint)
    else:
        store.create(
            {
                "fingerprint": fingerprint,
                "solver_settings": reference.settings(),
                "orbital_layout": reference.layout.to_json(),
                "material": {"name": cfg.material.name, "builder": cfg.material.builder, "params": params},
                "supercell": list(d.supercell),
                "config": OmegaConf.to_yaml(cfg, resolve=True),
                "provenance": provenance(),
            },
            base,
        )
    counts = label_dataset(
        store, base, specs, make_reference, {"name": cfg.reference.name, **ref_kwargs},
        n_workers=d.n_workers, consolidate_every_s=d.consolidate_every_s, progress=cfg.progress,
        reference=reference,
    )
    summary = store.summary()
    summary.update(
        material=cfg.material.name, reference=cfg.reference.name, structure_params=params,
        block_cutoff_A=reference.block_cutoff, this_run=counts,
    )
    if summary["n_failed"]:
        summary["failures"] = {str(k): v for k, v in store.failures().items()}
    return summary


def provenance() -> dict:
    import datetime
    import platform
    import subprocess

    import hedgenet

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "hedgenet_version": hedgenet.__version__,
        "git_commit": commit,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "argv": sys.argv,
    }


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dataset {summary['file']}")
    table.add_column("quantity")
    table.add_column("value")
    for key in (
        "material", "reference", "structure_params", "block_cutoff_A", "n_samples", "n_failed", "by_kind",
        "atoms_per_sample", "edges_per_sample", "energy_per_atom_eV", "force_rms_eV_per_A",
        "force_max_eV_per_A", "label_time_s_median", "label_time_s_total", "size_MB", "this_run",
    ):
        value = summary.get(key)
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
        table.add_row(key, str(value))
    Console().print(table)


def _user_errors() -> tuple[type[BaseException], ...]:
    from hedgenet.data.store import DatasetError
    from hedgenet.reference import CellTooSmallError, UnsupportedElementError

    return (ConfigError, DatasetError, CellTooSmallError, UnsupportedElementError)


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
