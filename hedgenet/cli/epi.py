"""``hedgenet-epi``: electron–phonon couplings of the Dirac-point states from the reference or a model.

    hedgenet-epi                                                        # xTB, AB bilayer graphene 7×7
    hedgenet-epi calculator=model model_path=outputs/train/runs/<run>/model.pt compare_with=<xTB epi run>
    hedgenet-epi calculator=model model_path=... epi.method=autograd   # exact derivatives of the model

Writes into the run directory: epi.npz (phonon frequencies in THz, |g_ν| in meV, Dirac-state energies,
and max |dH/du| per atom in eV/Å), summary.json (the strongly coupled modes, timings, and vs
``compare_with``: the |g| difference over those modes in meV) and couplings.png (|g_ν| against ω_ν).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from hedgenet.calculators import setup_calculation
from hedgenet.config import ConfigError, check_config, check_material, config_dir
from hedgenet.run_io import load_run_arrays, run_stage

def run_epi(cfg: DictConfig, run_dir: Path) -> dict:
    import numpy as np

    from hedgenet.physics.epi import compare_couplings, dirac_couplings_of
    from hedgenet.physics.phonons import gamma_mode_summary, name_gamma_modes
    from hedgenet.report.plots import plot_couplings

    check_config(cfg, "epi")
    check_material(cfg.material)
    e = cfg.epi
    if e.method not in ("finite_differences", "autograd"):
        raise ConfigError(f"epi.method={e.method!r} unknown; valid: finite_differences, autograd")
    if e.method == "autograd" and cfg.calculator != "model":
        raise ConfigError("epi.method=autograd differentiates a model: set calculator=model model_path=...")
    other = load_run_arrays(cfg.compare_with, "epi.npz", "hedgenet-epi") if cfg.compare_with else None
    _, calc, unit, params = setup_calculation(cfg, need_blocks=True, supercell=e.supercell)
    g = dirac_couplings_of(calc, unit, e.supercell, float(e.epi_displacement_A), float(e.fc_displacement_A), str(e.method),
                           int(e.n_states), e.force_constants_supercell)
    e_cnp, dh_atom = g["E_cnp_eV"], g["max_dH_du_eV_A"]
    np.savez(run_dir / "epi.npz", frequencies_THz=g["frequencies_THz"], g_abs_meV=g["g_abs_meV"],
             state_energies_eV=g["state_energies_eV"], max_dH_du_eV_A=dh_atom, E_cnp_eV=e_cnp,
             eigenvectors=g["eigenvectors"])
    strong = np.flatnonzero(g["g_abs_meV"] > float(e.report_threshold_meV))
    summary = {
        "calculator": cfg.calculator, "method": e.method, "material": cfg.material.name, "structure_params": params,
        "supercell": list(e.supercell), "E_cnp_eV": e_cnp, "phonons_time_s": g["phonons_time_s"], "epi_time_s": g["epi_time_s"],
        "max_dH_du_eV_A": float(dh_atom.max()), "max_dS_du_inv_A": g["max_dS_du_inv_A"],
        "force_constants_supercell": g["force_constants_supercell"],
        **gamma_mode_summary(name_gamma_modes(g["phonon"], unit)),
        "strong_modes": [{"frequency_THz": float(g["frequencies_THz"][k]), "g_meV": float(g["g_abs_meV"][k])}
                         for k in strong[np.argsort(-g["g_abs_meV"][strong])]],
    }
    if other is not None:
        if other["g_abs_meV"].shape != g["g_abs_meV"].shape:
            raise ConfigError("compare_with has another number of modes: use the same material and epi.supercell")
        summary["compare_with"] = str(cfg.compare_with)
        summary.update(compare_couplings(g, other, float(e.report_threshold_meV)))
    trust = calc.trust() if hasattr(calc, "trust") else None  # a model's (or committee's) spread on what it evaluated
    if trust is not None:
        summary["trust"] = trust
        summary["warnings"] = list(summary["trust"]["warnings"])
    plot_couplings(run_dir / "couplings.png", g, other)
    return summary


def _report(summary: dict, run) -> None:
    for m in summary["strong_modes"][:8]:
        print(f"ν = {m['frequency_THz']:7.2f} THz   |g| = {m['g_meV']:7.2f} meV")
    if "g_mae_strong_modes_meV" in summary:
        print(f"|g| MAE vs compare_with (its strong modes, per degenerate set, matched by "
              f"{summary['modes_matched_by']}): {summary['g_mae_strong_modes_meV']:.3g} meV; "
              f"coupling sum ratio {summary['g_sum_ratio_to_compare']:.3f}")
    for w in summary.get("warnings", []):
        print(f"warning: {w}")
    print(f"phonons {summary['phonons_time_s']:.1f} s, dH/du {summary['epi_time_s']:.1f} s; run directory {run.run_dir}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="epi")
def _main(cfg: DictConfig) -> None:
    run_stage("hedgenet-epi", cfg, run_epi, _report)


def main() -> None:
    from hedgenet.cli import run_hydra_app

    run_hydra_app(_main)


if __name__ == "__main__":
    main()
