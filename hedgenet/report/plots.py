"""Figures of the physics CLIs (PNG, matplotlib's Agg backend): they draw arrays the physics computed and
compute nothing themselves. Frequencies in THz, couplings in meV, energies in eV."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, legend_ax=None) -> None:
    if legend_ax is not None:
        legend_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def plot_phonon_bands(path: Path, bands, dos_f, dos, compare: dict | None, label: str) -> None:
    """Bands along the path (left) and DOS (right); ``compare`` (another run's phonons.npz arrays) in grey."""
    plt = _pyplot()
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
    _save(fig, path, ax)


def plot_couplings(path: Path, g: dict, other: dict | None) -> None:
    """|g_ν| (meV) of the Dirac-point states against ω_ν (THz); ``other`` (a compared run) as open circles."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if other is not None:
        ax.scatter(other["frequencies_THz"], other["g_abs_meV"], s=30, facecolors="none", edgecolors="0.5",
                   label="compare_with")
    ax.scatter(g["frequencies_THz"], g["g_abs_meV"], s=8, color="C0", label="this run")
    ax.set_xlabel("phonon frequency (THz)")
    ax.set_ylabel("|g| Dirac states (meV, supercell)")
    _save(fig, path, ax)


ORDER_LABELS = {"first": "first order", "second": "second order", "all": "all orders"}

RATIO_PANELS = (("ratio", "v₀(T) / v₀(static)"), ("v_fixed_energy_ratio", "v(E*, T) / v(E*, static)"),
                ("gamma1_ratio", "γ₁(T) / γ₁(static)"))
"""(key prefix in a ``by_temperature`` entry, axis label): the panels of :func:`plot_ratios`."""


def plot_ratios(path: Path, by_temperature: dict) -> None:
    """Ratios to the static lattice vs T with error bars, one line per order: v₀, the band velocity at the
    fixed energy E* and γ₁ (one panel each; panels whose ratios are absent, e.g. γ₁ of a monolayer, are
    left out). ``{order: {T: {ratio_to_static, ratio_err, …}}}``."""
    plt = _pyplot()
    panels = [(key, label) for key, label in RATIO_PANELS
              if any(v.get(f"{key}_to_static") is not None for d in by_temperature.values() for v in d.values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        temps = [float(t) for d in by_temperature.values() for t in d]
        dx = 0.012 * ((max(temps) - min(temps)) or 100.0)  # K: a small offset per order keeps error bars apart
        for n, (order, d) in enumerate(by_temperature.items()):
            T = sorted(d, key=float)
            ok = [t for t in T if d[t].get(f"{key}_to_static") is not None]
            x = [float(t) + dx * (n - 0.5 * (len(by_temperature) - 1)) for t in ok]
            ax.errorbar(x, [d[t][f"{key}_to_static"] for t in ok], yerr=[d[t][f"{key}_err"] for t in ok],
                        marker="o", capsize=3, label=ORDER_LABELS.get(order, order))
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_xlabel("T (K)")
        ax.set_ylabel(label)
    if panels:
        axes[0][0].legend(fontsize=8)
    _save(fig, path)


def plot_spectral_maps(path: Path, maps: list[dict]) -> None:
    """A(q, E) maps of :func:`hedgenet.physics.fermi_velocity.spectral_maps`, one panel per temperature."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(3.2 * len(maps), 3.5), squeeze=False)
    for ax, m in zip(axes[0], maps):
        ax.pcolormesh(m["q_inv_A"], m["E_minus_Ecnp_eV"], m["A"].T, shading="nearest", cmap="magma")
        ax.set_title(f"{m['T_K']:.0f} K ({ORDER_LABELS.get(m['order'], m['order'])})",
                     fontsize=9)
        ax.set_xlabel("q (1/Å)   Γ ← K → M")
    axes[0][0].set_ylabel("E − E_CNP (eV)")
    _save(fig, path)


def plot_electronic_bands(path: Path, bands, window_eV: float = 4.0) -> None:
    """Bands (eV, relative to the charge-neutrality level) within ± ``window_eV`` along the path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(bands.distances, bands.energies_eV - bands.e_cnp_eV, color="C0", lw=0.8)
    for t in bands.ticks:
        ax.axvline(t, color="k", lw=0.5)
    ax.axhline(0.0, color="0.5", lw=0.5, ls="--")
    ax.set_xticks(bands.ticks, bands.labels)
    ax.set_xlim(bands.distances[0], bands.distances[-1])
    ax.set_ylim(-window_eV, window_eV)
    ax.set_ylabel("E − E_CNP (eV)")
    _save(fig, path)
