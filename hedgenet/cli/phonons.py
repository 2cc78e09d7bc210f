"""``hedgenet-phonons``: phonons of a material from the reference solver or a trained model (Hydra app).

    hedgenet-phonons                                              # xTB, AB bilayer graphene 6×6
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
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hedgenet.calculators import setup_calculation
from hedgenet.config import ConfigError, check_keys, check_material, config_dir
from hedgenet.run_io import load_run_arrays, run_stage

PHONON_KEYS = ("supercell", "method", "displacement_A", "path", "npoints", "dos_mesh", "dos_sigma_THz")


def check_phonons_config(cfg: DictConfig) -> None:
    check_keys(cfg, ("paths", "material", "reference", "logger", "task_name", "calculator", "model_path",
                     "compare_with", "phonons"), "<root>")
    check_material(cfg.material)
    check_keys(cfg.phonons, PHONON_KEYS, "phonons")
    if cfg.calculator not in ("reference", "model"):
        raise ConfigError(f"calculator={cfg.calculator!r} unknown; valid: reference, model")
    if cfg.phonons.method not in ("finite_differences", "autograd"):
        raise ConfigError(f"phonons.method={cfg.phonons.method!r} unknown; valid: finite_differences, autograd")
    if cfg.phonons.method == "autograd" and cfg.calculator != "model":
        raise ConfigError("phonons.method=autograd differentiates a model: set calculator=model model_path=...")


def run_phonons(cfg: DictConfig, run_dir: Path) -> dict:
    import numpy as np

    from hedgenet.physics.phonons import band_structure, density_of_states, enforce_acoustic_sum_rule, name_gamma_modes

    check_phonons_config(cfg)
    p = cfg.phonons
    compare = load_run_arrays(cfg.compare_with, "phonons.npz", "hedgenet-phonons") if cfg.compare_with else None
    _, calc, unit, params = setup_calculation(cfg)

    t0 = time.perf_counter()
    phonon = calc.force_constants(unit, list(p.supercell), float(p.displacement_A), method=str(p.method))
    t_fc = time.perf_counter() - t0
    asr = enforce_acoustic_sum_rule(phonon)
    bands = band_structure(phonon, str(p.path), int(p.npoints))
    dos_f, dos = density_of_states(phonon, tuple(p.dos_mesh), float(p.dos_sigma_THz))
    modes = name_gamma_modes(phonon, unit)

    np.savez(run_dir / "phonons.npz", distances=bands.distances, frequencies_THz=bands.frequencies,
             ticks=bands.ticks, labels=np.array(bands.labels), dos_frequency_THz=dos_f, dos=dos,
             force_constants_eV_A2=phonon.force_constants)
    phonon.save(str(run_dir / "phonopy_params.yaml"), settings={"force_constants": True})
    (run_dir / "gamma_modes.json").write_text(json.dumps(modes, indent=1))
    summary = {"calculator": cfg.calculator, "method": p.method, "material": cfg.material.name,
               "structure_params": params, "supercell": list(p.supercell), "force_constants_time_s": t_fc,
               "n_displacements": len(phonon.displacements) if p.method != "autograd" else 0, **asr,
               "max_frequency_THz": float(bands.frequencies.max()),
               "min_frequency_THz": float(bands.frequencies.min())}
    for name in ("interlayer shear", "layer breathing"):
        f = [m["frequency_THz"] for m in modes if m["name"] == name]
        if f:
            summary[f"gamma_{name.replace(' ', '_')}_THz"] = float(np.mean(f))
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
    plot_bands(run_dir / "phonon_bands.png", bands, dos_f, dos, compare, cfg.calculator)
    return summary


def plot_bands(path: Path, bands, dos_f, dos, compare: dict | None, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axd) = plt.subplots(1, 2, figsize=(7, 4), sharey=True, gridspec_kw={"width_ratios": [3, 1]})
    if compare is not None:
        ax.plot(compare["distances"], compare["frequencies_THz"], color="0.6", lw=2.5)
        ax.plot([], [], color="0.6", lw=2.5, label="compare_with")
        axd.plot(compare["dos"], compare["dos_frequency_THz"], color="0.6", lw=2.5)
    ax.plot(bands.distances, bands.frequencies, color="C0", lw=1)
    ax.plot([], [], color="C0", label=label)
    axd.plot(dos, dos_f, color="C0", lw=1)
    for t in bands.ticks:
        ax.axvline(t, color="k", lw=0.5)
    ax.set_xticks(bands.ticks, bands.labels)
    ax.set_xlim(bands.distances[0], bands.distances[-1])
    ax.set_ylabel("frequency (THz)")
    axd.set_xlabel("DOS (1/THz)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _report(summary: dict, run) -> None:
    for k in ("asr_violation_before_eV_A2", "gamma_interlayer_shear_THz", "gamma_layer_breathing_THz",
              "max_frequency_THz", "frequency_mae_vs_compare_THz", "force_constants_time_s"):
        if k in summary:
            print(f"{k:36s} {summary[k]:.4g}")
    print(f"run directory {run.run_dir}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="phonons")
def _main(cfg: DictConfig) -> None:
    run_stage("hedgenet-phonons", cfg, run_phonons, _report)


def main() -> None:
    from hedgenet.cli import run_hydra_app

    run_hydra_app(_main)


if __name__ == "__main__":
    main()
