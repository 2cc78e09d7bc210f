"""``hedgenet-phonons``: phonons of a material from the reference solver or a trained model (Hydra app).

    hedgenet-phonons                                              # xTB, AB bilayer graphene 7×7
    hedgenet-phonons calculator=model model_path=outputs/train/runs/<run>/model.pt \\
        compare_with=outputs/phonons/runs/<xTB run>               # overlay + frequency MAE
    hedgenet-phonons calculator=model model_path=... phonons.method=autograd

Writes into the run directory: phonons.npz (path distances, frequencies in THz, DOS, force constants in
eV/Å²), phonopy_params.yaml (phonopy's own format, force constants included), gamma_modes.json (Γ
frequencies in THz and cm⁻¹ with names: acoustic, interlayer shear, layer breathing, intralayer optical),
phonon_bands.png and summary.json (sum-rule violation, times, and vs ``compare_with``: MAE in THz).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hedgenet.calculators import setup_calculation
from hedgenet.config import ConfigError, check_config, check_material, config_dir
from hedgenet.run_io import load_run_arrays, run_stage


def check_phonons_config(cfg: DictConfig) -> None:
    check_config(cfg, "phonons")
    check_material(cfg.material)
    if cfg.calculator not in ("reference", "model"):
        raise ConfigError(f"calculator={cfg.calculator!r} unknown; valid: reference, model")
    if cfg.phonons.method not in ("finite_differences", "autograd"):
        raise ConfigError(f"phonons.method={cfg.phonons.method!r} unknown; valid: finite_differences, autograd")
    if cfg.phonons.method == "autograd" and cfg.calculator != "model":
        raise ConfigError("phonons.method=autograd differentiates a model: set calculator=model model_path=...")


RESIDUAL_FORCE_WARN_meV_A = 5.0
"""A calculator whose largest force at the relaxed structure exceeds this (meV/Å) is warned about."""
RESIDUAL_VIRIAL_WARN_meV_atom = 100.0
"""Likewise for the in-plane virial per atom (meV/atom). A tension W (per atom of area A) adds a linear term
ω = q·√(W/(A·ρ)) to graphene's ZA branch: 100 meV/atom gives 0.2 THz a tenth of the way from Γ to M, where
the branch itself is ~0.5 THz (xTB's own virial at the relaxed structure is ~30–50 meV/atom in the 5×5 and
7×7 cells: a and d are relaxed in other cells)."""


def run_phonons(cfg: DictConfig, run_dir: Path) -> dict:
    import numpy as np

    from hedgenet.physics.phonons import folds_k_onto_gamma, own_minimum, phonons_of
    from hedgenet.report.plots import plot_phonon_bands

    check_phonons_config(cfg)
    p = cfg.phonons
    compare = load_run_arrays(cfg.compare_with, "phonons.npz", "hedgenet-phonons") if cfg.compare_with else None
    _, calc, unit, params = setup_calculation(cfg)

    r = phonons_of(calc, unit, p.supercell, float(p.fc_displacement_A), str(p.method), str(p.path), int(p.npoints),
                   tuple(p.dos_mesh), float(p.dos_sigma_THz))
    bands = r.bands
    np.savez(run_dir / "phonons.npz", distances=bands.distances, frequencies_THz=bands.frequencies,
             ticks=bands.ticks, labels=np.array(bands.labels), dos_frequency_THz=r.dos_frequency_THz, dos=r.dos,
             force_constants_eV_A2=r.phonon.force_constants)
    r.phonon.save(str(run_dir / "phonopy_params.yaml"), settings={"force_constants": True})
    (run_dir / "gamma_modes.json").write_text(json.dumps(r.gamma_modes, indent=1))
    summary = {"calculator": cfg.calculator, "method": p.method, "material": cfg.material.name,
               "structure_params": params, "supercell": list(p.supercell), **r.summary()}
    if cfg.calculator == "model":  # where the model's own minimum lies (a model has no k-point sampling to get wrong)
        summary.update(own_minimum(calc, unit))
    warnings = []
    if cfg.calculator == "reference" and cfg.reference.name == "xtb" and folds_k_onto_gamma(p.supercell):
        warnings.append(f"the {p.supercell[0]}×{p.supercell[1]} cell folds K onto Γ, the only k-point of xTB: graphene's "
                        "force constants are wrong there (docs/reference.md). Fix: phonons.supercell=[7,7] (or 5×5, 8×8)")
    if summary["gamma_imaginary_non_acoustic_THz"]:
        warnings.append(f"imaginary non-acoustic Γ modes {summary['gamma_imaginary_non_acoustic_THz']} THz: these "
                        "force constants are not a stable lattice")
    if summary.get("residual_force_max_meV_A", 0.0) > RESIDUAL_FORCE_WARN_meV_A:
        warnings.append(f"the {cfg.calculator}'s forces at the relaxed structure reach "
                        f"{summary['residual_force_max_meV_A']:.1f} meV/Å: its energy minimum lies elsewhere"
                        + (f" (interlayer distance {summary['own_minimum_interlayer_distance_change_A']:+.3f} Å)"
                           if "own_minimum_interlayer_distance_change_A" in summary else "")
                        + ", so these are phonons of a strained lattice (a model: train longer or on more data)")
    virial = summary.get("residual_virial_in_plane_meV_atom")
    if virial and max(abs(w) for w in virial) > RESIDUAL_VIRIAL_WARN_meV_atom:
        warnings.append(f"the {cfg.calculator}'s in-plane virial at the relaxed structure is "
                        f"{[round(w, 1) for w in virial]} meV/atom: a tension (W < 0) stiffens the flexural ZA branch "
                        "(linear near Γ), a compression makes it imaginary (a model: train with virial labels, "
                        "train.loss_weights.virial > 0, on data labelled by a reference that gives them)")
    trust = calc.trust() if hasattr(calc, "trust") else None  # a model's (or committee's) spread on what it evaluated
    if trust is not None:
        summary["trust"] = trust
        warnings += summary["trust"]["warnings"]
    summary["warnings"] = warnings
    if compare is not None:
        other = compare["frequencies_THz"]
        if other.shape != bands.frequencies.shape:
            raise ConfigError(
                f"compare_with has bands of shape {other.shape}, this run {bands.frequencies.shape}: use the same "
                "material, phonons.path and phonons.npoints"
            )
        summary["frequency_mae_vs_compare_THz"] = float(np.abs(bands.frequencies - other).mean())
        summary["frequency_max_abs_diff_vs_compare_THz"] = float(np.abs(bands.frequencies - other).max())
        summary["compare_with"] = str(cfg.compare_with)
    plot_phonon_bands(run_dir / "phonon_bands.png", bands, r.dos_frequency_THz, r.dos, compare, cfg.calculator)
    return summary


def _report(summary: dict, run) -> None:
    for k in ("asr_violation_before_eV_A2", "gamma_interlayer_shear_THz", "gamma_layer_breathing_THz",
              "gamma_inplane_optical_max_THz", "gamma_lowest_non_acoustic_THz", "max_frequency_THz",
              "frequency_mae_vs_compare_THz", "force_constants_time_s", "residual_force_max_meV_A",
              "own_minimum_residual_force_max_meV_A", "own_minimum_interlayer_distance_change_A"):
        if k in summary:
            print(f"{k:36s} {summary[k]:.4g}")
    for w in summary.get("warnings", []):
        print(f"warning: {w}")
    print(f"run directory {run.run_dir}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="phonons")
def _main(cfg: DictConfig) -> None:
    run_stage("hedgenet-phonons", cfg, run_phonons, _report)


def main() -> None:
    from hedgenet.cli import run_hydra_app

    run_hydra_app(_main)


if __name__ == "__main__":
    main()
