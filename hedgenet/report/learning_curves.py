"""Learning curves: test errors against the number of labelled cells, per model family (table and log–log plot).

Reads the rows JSON that ``benchmarks/learning_curves.py`` writes (one row per family × cells × seed) and
presents it: a table of mean ± std over seeds per (family, cells) and a figure of error against cells on
log–log axes. It computes no physics. Row keys (units in the names): ``family``, ``n_cells`` (labelled cells
in the training file, validation cells included), ``n_train``, ``seed``, ``forces_mae_meV_A``,
``H_mae_meV``, ``phonon_mae_THz``, ``gamma_shear_THz``, ``gamma_breathing_THz``, ``train_cpu_s``,
``phonons_cpu_s``; the file's ``reference`` holds the reference's ``gamma_shear_THz`` and
``gamma_breathing_THz``. A missing value (a family without a Hamiltonian head has no H MAE) is ``null``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hedgenet.report.render import _plt, fmt_stat
from hedgenet.report.runs import CompareError

COLUMNS = [("forces_mae_meV_A", "force MAE (meV/Å)"), ("H_mae_meV", "H MAE (meV)"),
           ("phonon_mae_THz", "phonon MAE Γ–M–K–Γ (THz)"), ("gamma_shear_THz", "Γ shear (THz)"),
           ("gamma_breathing_THz", "Γ breathing (THz)"), ("train_cpu_s", "train CPU (s)")]
"""Table columns (row key, header)."""

PANELS = [("forces_mae_meV_A", "force MAE (meV/Å)"), ("phonon_mae_THz", "phonon MAE vs reference (THz)"),
          ("H_mae_meV", "H MAE (meV)")]
"""Plot panels (row key, axis label), one log–log panel each."""


def load(path: str | Path) -> dict:
    """The rows JSON: ``{"settings": ..., "reference": ..., "rows": [...]}``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise CompareError(f"cannot read the learning curves {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise CompareError(f"{path} is not a learning-curves JSON (no 'rows' list)")
    return data


def _value(row: dict, key: str) -> float | None:
    v = row.get(key)
    return None if v is None or not math.isfinite(float(v)) else float(v)


def aggregate(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """(family, n_cells) → ``{"seeds": [...], "n_train": [...], key: (mean, std | None, n) | None}`` over seeds
    (std with ddof 1, None for one seed). Families keep their first-seen order, cells ascend."""
    groups: dict[tuple[str, int], list[dict]] = {}
    order = {}
    for r in rows:
        order.setdefault(r["family"], len(order))
        groups.setdefault((r["family"], int(r["n_cells"])), []).append(r)
    out = {}
    for key in sorted(groups, key=lambda k: (order[k[0]], k[1])):
        rs = groups[key]
        entry = {"seeds": sorted(int(r["seed"]) for r in rs), "n_train": sorted({int(r.get("n_train", -1)) for r in rs})}
        for k in {c for c, _ in COLUMNS} | {c for c, _ in PANELS}:
            vals = [v for v in (_value(r, k) for r in rs) if v is not None]
            entry[k] = None if not vals else (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                                              len(vals))
        out[key] = entry
    return out


def table(data: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings): one row per (family, cells), mean ± std over seeds, then the reference's
    Γ modes."""
    header = ["family", "cells (train)", "seeds"] + [h for _, h in COLUMNS]
    rows = []
    for (family, n), e in aggregate(data["rows"]).items():
        n_train = ",".join(str(x) for x in e["n_train"] if x >= 0)
        rows.append([family, f"{n} ({n_train})" if n_train else str(n), ",".join(map(str, e["seeds"]))]
                    + [fmt_stat(e[k], k) for k, _ in COLUMNS])
    ref = data.get("reference") or {}
    if ref:
        rows.append(["reference (xTB)", "—", "—"] + [fmt_stat((ref[k], None, 1), k) if ref.get(k) is not None else "—"
                                                      for k, _ in COLUMNS])
    return header, rows


def plot(data: dict, path: str | Path) -> Path | None:
    """Error against labelled cells on log–log axes, one panel per quantity with data (forces, phonons, H),
    one line per family (mean over seeds, std as error bars). None when no row has any of them."""
    agg = aggregate(data["rows"])
    panels = [(k, label) for k, label in PANELS if any(e[k] for e in agg.values())]
    if not panels:
        return None
    plt = _plt()
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    families = list(dict.fromkeys(f for f, _ in agg))
    for ax, (k, label) in zip(axes[0], panels):
        for i, family in enumerate(families):
            pts = [(n, e[k]) for (f, n), e in agg.items() if f == family and e[k] is not None and e[k][0] > 0]
            if not pts:
                continue
            ax.errorbar([n for n, _ in pts], [s[0] for _, s in pts], yerr=[s[1] or 0.0 for _, s in pts],
                        fmt="-o", ms=4, lw=1.2, capsize=3, color=f"C{i}", label=family)
        ax.set_xscale("log")
        ax.set_yscale("log")
        sizes = sorted({n for f, n in agg})
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        for which in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            which(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("labelled cells")
        ax.set_ylabel(label)
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


@dataclass
class Section:
    """What a comparison report shows of a learning-curves JSON: the table, a note and the figure."""

    table: tuple[list[str], list[list[str]]]
    note: str
    figure: Path | None
    caption: str = "test errors against labelled cells (log–log; mean, std over seeds as error bars)"


def section(data: dict, figure_path: Path, source: Path) -> Section:
    s = data.get("settings", {})
    note = (f"From {source}: test errors against the number of labelled cells in the training file "
            f"(validation cells included, training cells in parentheses), {s.get('epochs', '?')} epochs, "
            f"phonons on the {'×'.join(map(str, s.get('phonon_supercell', ['?'])))} supercell; "
            "mean ± std (ddof 1) over seeds")
    return Section(table(data), note, plot(data, figure_path))
