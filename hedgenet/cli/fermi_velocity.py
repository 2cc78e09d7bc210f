"""``hedgenet-fermi-velocity``: v_F(T)/v_F(static lattice) to first order and to all orders in the
electron–phonon coupling, from the reference or a trained model (Hydra app).

    hedgenet-fermi-velocity                                          # xTB, AB bilayer graphene 6×6
    hedgenet-fermi-velocity calculator=model model_path=outputs/train/runs/<run>/model.pt
    hedgenet-fermi-velocity sampler=sdm fermi_velocity.temperatures_K=[0,300]

Writes into the run directory: summary.json (static v0 and γ1, per order and temperature v0 ± error in
10⁵ m/s and the ratio to the static lattice, timings), fermi_velocity.png (ratio vs T, both orders),
spectral_function.png (sample-averaged A(k, E) near K at up to three temperatures), phonopy_params.yaml.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from hedgenet.calculators import setup_calculation
from hedgenet.config import ConfigError, check_keys, check_material, config_dir
from hedgenet.run_io import run_stage

FV_KEYS = ("supercell", "temperatures_K", "orders", "fc_displacement_A", "epi_displacement_A", "q_max_inv_A",
           "n_q", "window_eV", "layers", "n_bootstrap")


def run_fermi_velocity(cfg: DictConfig, run_dir: Path) -> dict:
    from hedgenet.physics.fermi_velocity import (
        RenormalizationSettings,
        fermi_velocity_vs_temperature,
    )
    check_keys(cfg, ("paths", "material", "reference", "sampler", "logger", "task_name", "calculator", "model_path",
                     "seed", "progress", "fermi_velocity"), "<root>")
    check_material(cfg.material)
    check_keys(cfg.fermi_velocity, FV_KEYS, "fermi_velocity")
    check_keys(cfg.sampler, ("name", "n_samples", "quantum", "cutoff_frequency_THz"), "sampler")
    f = cfg.fermi_velocity
    settings = RenormalizationSettings(
        supercell=tuple(f.supercell), temperatures_K=tuple(float(t) for t in f.temperatures_K),
        sampler=cfg.sampler.name, n_samples=int(cfg.sampler.n_samples), quantum=bool(cfg.sampler.quantum),
        cutoff_frequency_THz=float(cfg.sampler.cutoff_frequency_THz), fc_displacement_A=float(f.fc_displacement_A),
        epi_displacement_A=float(f.epi_displacement_A), q_max_inv_A=float(f.q_max_inv_A), n_q=int(f.n_q),
        window_eV=float(f.window_eV), layers=int(f.layers), n_bootstrap=int(f.n_bootstrap), seed=int(cfg.seed),
        orders=tuple(f.orders),
    )
    try:
        settings.check()
    except ValueError as err:
        raise ConfigError(str(err)) from err
    _, calc, unit, params = setup_calculation(cfg, need_blocks=True, supercell=f.supercell)
    result = fermi_velocity_vs_temperature(calc, unit, settings, progress=bool(cfg.progress))
    result.phonon.save(str(run_dir / "phonopy_params.yaml"), settings={"force_constants": True})
    plot_ratios(run_dir / "fermi_velocity.png", result)
    plot_spectral_function(run_dir / "spectral_function.png", result, settings)
    return {
        "calculator": cfg.calculator, "material": cfg.material.name, "structure_params": params,
        "sampler": cfg.sampler.name, "supercell": list(f.supercell), "static": result.static,
        "by_temperature": {o: {str(T): v for T, v in d.items()} for o, d in result.by_temperature.items()},
        "timings_s": result.timings_s,
    }


def plot_ratios(path: Path, result) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for order, d in result.by_temperature.items():
        T = sorted(d)
        ax.errorbar(T, [d[t]["ratio_to_static"] for t in T], yerr=[d[t]["ratio_err"] for t in T], marker="o",
                    capsize=3, label=f"{order} order" if order == "first" else "all orders")
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_xlabel("T (K)")
    ax.set_ylabel("v_F(T) / v_F(static lattice)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_spectral_function(path: Path, result, settings) -> None:
    """Sample-averaged A(k, E) on K–Γ (left, q < 0 drawn as −|q|) and K–M (right), all orders if computed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hedgenet.physics.unfold import spectral_function

    order = "all" if "all" in settings.orders else settings.orders[0]
    temps = sorted({T for (o, T) in result.lines if o == order})
    temps = [temps[0], temps[len(temps) // 2], temps[-1]] if len(temps) > 3 else temps
    e0 = result.static["E_cnp_eV"]
    E = np.linspace(e0 - settings.window_eV, e0 + settings.window_eV, 300)
    fig, axes = plt.subplots(1, len(temps), figsize=(3.2 * len(temps), 3.5), squeeze=False)
    for ax, T in zip(axes[0], temps):
        lines = result.lines[(order, T)]
        q = lines[0].q
        cols, xs = [], []
        for name, sign in (("KΓ", -1), ("KM", 1)):
            for iq in range(len(q)):
                a = np.mean([spectral_function(*ln.states[name][iq], E, 0.03) for ln in lines], axis=0)
                cols.append(a)
                xs.append(sign * q[iq])
        order_x = np.argsort(xs)
        ax.pcolormesh(np.array(xs)[order_x], E - e0, np.array(cols)[order_x].T, shading="nearest", cmap="magma")
        ax.set_title(f"{T:.0f} K ({order} orders)" if order == "all" else f"{T:.0f} K (first order)", fontsize=9)
        ax.set_xlabel("q (1/Å)   Γ ← K → M")
    axes[0][0].set_ylabel("E − E_CNP (eV)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _report(summary: dict, run) -> None:
    print(f"static lattice v0 = {summary['static']['v0_1e5_m_s']:.4f} × 10^5 m/s")
    for order, d in summary["by_temperature"].items():
        for T, v in d.items():
            print(f"{order:5s} order  T = {float(T):6.1f} K   v0/v0(static) = {v['ratio_to_static']:.4f} ± {v['ratio_err']:.4f}")
    print(f"total {summary['timings_s']['total']:.1f} s; run directory {run.run_dir}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="fermi_velocity")
def _main(cfg: DictConfig) -> None:
    run_stage("hedgenet-fermi-velocity", cfg, run_fermi_velocity, _report)


def main() -> None:
    from hedgenet.cli import run_hydra_app

    run_hydra_app(_main)


if __name__ == "__main__":
    main()
