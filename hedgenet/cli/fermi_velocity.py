"""``hedgenet-fermi-velocity``: v_F(T)/v_F(static lattice) to first order, second order and all orders in
the electron–phonon coupling, from the reference or a trained model (Hydra app).

    hedgenet-fermi-velocity                                          # xTB, AB bilayer graphene 6×6
    hedgenet-fermi-velocity calculator=model model_path=outputs/train/runs/<run>/model.pt
    hedgenet-fermi-velocity sampler=sdm fermi_velocity.temperatures_K=[0,300]

Writes into the run directory: summary.json (static v0, γ1, gap and band velocity at
``fermi_velocity.fixed_energy_eV``; under ``by_temperature``, per order and temperature, the same with error
bars and their ratios to the static lattice: ``ratio_to_static``/``ratio_err`` (v0),
``gamma1_ratio_to_static``/``gamma1_ratio_err``, ``v_fixed_energy_ratio_to_static``/``v_fixed_energy_ratio_err``,
``gap_eV``/``gap_err_eV``, and ``ratio_err_method`` (bootstrap or jackknife) with ``error_warning`` below 8 ± pairs;
timings; the source cell of the force constants and the named Γ frequencies under ``phonons``; every mode the
sampler left out under ``excluded_modes``), fermi_velocity.png (the three ratios vs T, every order),
spectral_function.png (sample-averaged A(k, E) near K at up to three temperatures), phonopy_params.yaml.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from hedgenet.calculators import setup_calculation
from hedgenet.config import (
    ConfigError,
    check_config,
    check_material,
    check_temperatures,
    config_dir,
)
from hedgenet.run_io import run_stage
from hedgenet.structures.layers import layer_index


def run_fermi_velocity(cfg: DictConfig, run_dir: Path) -> dict:
    from hedgenet.physics.fermi_velocity import (
        fermi_velocity_vs_temperature,
        renormalization_settings,
        spectral_maps,
    )
    from hedgenet.report.plots import plot_ratios, plot_spectral_maps
    check_config(cfg, "fermi_velocity")
    check_material(cfg.material)
    f = cfg.fermi_velocity
    check_temperatures(f.temperatures_K, "fermi_velocity.temperatures_K")
    settings = renormalization_settings(cfg)
    try:
        settings.check()
    except ValueError as err:
        raise ConfigError(str(err)) from err
    _, calc, unit, params = setup_calculation(cfg, need_blocks=True, supercell=f.supercell)
    layers = sorted(set(layer_index(unit).tolist()))
    if settings.unfold_layer not in ("auto", None) and settings.unfold_layer not in layers:
        raise ConfigError(f"fermi_velocity.unfold_layer={settings.unfold_layer}: {cfg.material.name} has layers "
                          f"{layers}. Fix: one of them, auto (the unit cell, or layer 0 of a twisted cell) or null "
                          "(the unit cell)")
    result = fermi_velocity_vs_temperature(calc, unit, settings, progress=bool(cfg.progress))
    result.phonon.save(str(run_dir / "phonopy_params.yaml"), settings={"force_constants": True})
    plot_ratios(run_dir / "fermi_velocity.png", result.by_temperature)
    plot_spectral_maps(run_dir / "spectral_function.png", spectral_maps(result, settings))
    summary = {
        "calculator": cfg.calculator, "material": cfg.material.name, "structure_params": params,
        "sampler": cfg.sampler.name, "supercell": list(f.supercell), "phonons": result.phonons,
        "excluded_modes": result.excluded_modes, "static": result.static,
        "by_temperature": {o: {str(T): v for T, v in d.items()} for o, d in result.by_temperature.items()},
        "timings_s": result.timings_s,
    }
    trust = calc.trust() if hasattr(calc, "trust") else None  # a model's (or committee's) spread on the Monte
    if trust is not None:                                      # Carlo samples and the force-constant cells
        summary["trust"] = trust
    return summary


def _pm(v: dict, name: str) -> str:
    r, e = v.get(f"{name}_to_static"), v.get(f"{name}_err")
    return "—" if r is None else f"{r:.4f} ± {float(e):.4f}"


def _report(summary: dict, run) -> None:
    ph = summary["phonons"]
    print(f"force constants from {ph['force_constants_supercell']} ({ph['mapped_by']}); Γ: in-plane optical "
          f"{ph.get('gamma_inplane_optical_max_THz', float('nan')):.2f} THz, lowest non-acoustic "
          f"{ph.get('gamma_lowest_non_acoustic_THz', float('nan')):.3f} THz")
    kinds = {}
    for m in summary["excluded_modes"]:
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
    print("modes not sampled: " + (", ".join(f"{n} {k}" for k, n in kinds.items()) or "none")
          + " (summary.json: excluded_modes)")
    st = summary["static"]
    unf = st.get("unfolding", {})
    if unf:
        print(f"bands unfolded onto the {unf['onto']} (continuum model: {unf['continuum_model_layers']} layer"
              f"{'s' if unf['continuum_model_layers'] > 1 else ''})")
        if unf.get("warning"):
            print(f"warning: {unf['warning']}")
    # float(): a band that does not reach the fixed energy gives NaN, which summary.json stores as "nan"
    print(f"static lattice v0 = {st['v0_1e5_m_s']:.4f} × 10^5 m/s, γ1 = {st['gamma1_eV']:.4f} eV, gap "
          f"{st['gap_eV']:.4f} eV, v({st['fixed_energy_eV']:g} eV) = {float(st['v_fixed_energy_1e5_m_s']):.4f} × 10^5 m/s")
    warnings = set()
    for order, d in summary["by_temperature"].items():
        for T, v in d.items():
            print(f"{order:6s} order  T = {float(T):6.1f} K   v0/v0(static) = {_pm(v, 'ratio')}   "
                  f"γ1/γ1(static) = {_pm(v, 'gamma1_ratio')}   v(E)/v(E, static) = {_pm(v, 'v_fixed_energy_ratio')}"
                  f"   gap = {v['gap_eV']:.4f} ± {float(v['gap_err_eV']):.4f} eV   ({v['ratio_err_method']})")
            if v.get("error_warning"):
                warnings.add(v["error_warning"])
    warnings |= set(summary.get("trust", {}).get("warnings", []))
    for w in sorted(warnings):
        print(f"warning: {w}")
    print(f"total {summary['timings_s']['total']:.1f} s; run directory {run.run_dir}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="fermi_velocity")
def _main(cfg: DictConfig) -> None:
    from hedgenet.physics.sampling import ImaginaryModesError

    run_stage("hedgenet-fermi-velocity", cfg, run_fermi_velocity, _report, (ImaginaryModesError,))


def main() -> None:
    from hedgenet.cli import run_hydra_app

    run_hydra_app(_main)


if __name__ == "__main__":
    main()
