"""Write a comparison (:mod:`hedgenet.report.compare`) as markdown, CSV, plots and one static HTML page.

The HTML page is self-contained (inline CSS, images as data URIs, no network): it opens from a file or an
e-mail attachment. A small inline script records script errors and images that fail to decode into the
page (``data-render-errors``, ``data-images-loaded``), which the headless-browser test reads.
"""

from __future__ import annotations

import base64
import csv
import html
import re
import shutil
from pathlib import Path

import numpy as np

from hedgenet.report.compare import COLUMNS, MaterialTable

MARGIN_NAMES = {"phonon_mae_THz": "phonon MAE", "forces_mae": "force MAE", "bands_mae": "eigenvalue MAE",
                "H_intra_mae": "H intra MAE", "H_inter_mae": "H inter MAE"}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def fmt_stat(stat, key: str) -> str:
    """``mean ± std`` (std over seeds, ddof 1; both to the mean's decimals), ``mean`` for one seed, ``—``
    when no run has the value."""
    if stat is None:
        return "—"
    mean, std, _ = stat
    if key == "n_parameters":
        return f"{mean:,.0f}"
    size = abs(mean)
    decimals = 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 1 or size == 0 else 2 - int(np.floor(np.log10(size)))
    decimals = min(decimals, 6)
    return f"{mean:.{decimals}f}" if std is None else f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def table_rows(t: MaterialTable) -> tuple[list[str], list[list[str]]]:
    header = ["model (relations)", "seeds"] + [h for _, h in COLUMNS]
    rows = []
    for a in t.arms:
        cells = []
        for k, _ in COLUMNS:
            st = a.stats(k)
            partial = st is not None and st[2] < len(a.runs)  # e.g. v_F(T) computed for some seeds only
            cells.append(fmt_stat(st, k) + (f" (n={st[2]})" if partial else ""))
        rows.append([a.name, ",".join(str(r.seed) for r in a.runs)] + cells)
    return header, rows


def split_note(t: MaterialTable) -> str:
    where = "held-out test set" if t.split == "test" else "validation set (no held-out test set in every run)"
    return f"errors on the {where} ({t.n_eval} structures); mean ± std (sample, ddof 1) over seeds"


def margin_lines(t: MaterialTable) -> list[str]:
    """One line per (other arm, error): the margin 100·(e_versus/e_other − 1) %, < 0 when the versus arm
    (HedgeNet) is lower, from the means and seed by seed (mean ± std over the seeds both arms have)."""
    out = []
    for m in t.margins:
        line = (f"{MARGIN_NAMES[m['key']]}, {m['versus']} vs {m['other']}: {m['margin_pct']:+.1f} % "
                f"(100·(mean/mean_other − 1); < 0: {m['versus']} lower)")
        if m["paired_mean_pct"] is not None:
            spread = f" ± {m['paired_std_pct']:.1f}" if m["paired_std_pct"] is not None else ""
            line += f"; seed by seed {m['paired_mean_pct']:+.1f}{spread} % over {m['n_pairs']} seed(s)"
        out.append(line)
    return out


# ----------------------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_errors(t: MaterialTable, path: Path) -> Path | None:
    """Bars of the main errors per arm (mean, std over seeds as error bars)."""
    keys = [k for k in ("forces_mae", "H_intra_mae", "H_inter_mae", "bands_mae", "phonon_mae_THz")
            if any(a.stats(k) for a in t.arms)]
    if not keys:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 3.2), squeeze=False)
    names = [a.name for a in t.arms]
    for ax, k in zip(axes[0], keys):
        stats = [a.stats(k) for a in t.arms]
        means = [s[0] if s else np.nan for s in stats]
        errs = [(s[1] or 0.0) if s else 0.0 for s in stats]
        ax.bar(range(len(names)), means, yerr=errs, color=[f"C{i}" for i in range(len(names))], capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(dict(COLUMNS)[k], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_phonons(t: MaterialTable, path: Path) -> Path | None:
    """Phonon bands of every arm (one panel each, all seeds) over the reference's (grey)."""
    if t.reference_phonons is None or not any(f is not None for a in t.arms for f in a.phonons):
        return None
    plt = _plt()
    ref = t.reference_phonons
    arms = [a for a in t.arms if any(f is not None for f in a.phonons)]
    fig, axes = plt.subplots(1, len(arms), figsize=(3.4 * len(arms), 3.6), squeeze=False, sharey=True)
    for i, (ax, arm) in enumerate(zip(axes[0], arms)):
        ax.plot(ref["distances"], ref["frequencies_THz"], color="0.65", lw=2.2)
        ax.plot([], [], color="0.65", lw=2.2, label="reference")
        for run, f in zip(arm.runs, arm.phonons):
            if f is not None:
                ax.plot(ref["distances"], f, color=f"C{i}", lw=0.8, alpha=0.8)
        ax.plot([], [], color=f"C{i}", lw=0.8, label=f"{arm.name}, seeds {[r.seed for r in arm.runs]}")
        for x in ref["ticks"]:
            ax.axvline(x, color="k", lw=0.4)
        ax.set_xticks(ref["ticks"], [str(s) for s in ref["labels"]])
        ax.set_xlim(ref["distances"][0], ref["distances"][-1])
        ax.legend(fontsize=6, loc="lower right")
    axes[0][0].set_ylabel("frequency (THz)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fermi_velocity(t: MaterialTable, path: Path) -> Path | None:
    """v_F(T) (10⁵ m/s) of every arm's runs and of the reference."""
    if t.vf_reference is None:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    T = sorted(t.vf_reference)
    ax.plot(T, [t.vf_reference[x] for x in T], "k-o", lw=2, label="reference")
    for i, arm in enumerate(t.arms):
        first = True
        for curve in arm.vf_curves:
            if curve:
                ts = sorted(curve)
                ax.plot(ts, [curve[x] for x in ts], "-s", color=f"C{i}", ms=3, lw=0.9,
                        label=arm.name if first else None)
                first = False
    ax.set_xlabel("T (K)")
    ax.set_ylabel(f"v_F ({t.vf_order} order{'s' if t.vf_order == 'all' else ''}, 10⁵ m/s)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def collect_figures(t: MaterialTable, out: Path) -> list[tuple[str, Path]]:
    """Every figure of a material's section, as (caption, file), written or copied into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    figs = []
    for caption, fn, name in (("errors per model (mean ± std over seeds)", plot_errors, "errors.png"),
                              ("phonon bands: each model's seeds over the reference", plot_phonons, "phonon_bands.png"),
                              ("v_F(T) of each model and of the reference", plot_fermi_velocity, "fermi_velocity.png")):
        p = fn(t, out / name)
        if p is not None:
            figs.append((caption, p))
    for arm in t.arms:  # parity plots written by training, of each arm's first seed
        run = arm.runs[0]
        for q in ("forces", "H"):
            src = run.dir / f"parity_{q}.png"
            if src.exists():
                dst = out / f"parity_{q}_{slug(arm.name)}.png"
                shutil.copyfile(src, dst)
                figs.append((f"parity {q}: {arm.name}, seed {run.seed} ({t.split} set)", dst))
    return figs


# ----------------------------------------------------------------------------------------------- writers
def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table of strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table of strings (escaped)."""
    e = html.escape
    return ("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</tbody></table>")


def write_markdown(tables: list[MaterialTable], figures: dict, notes: list[str], source: Path, path: Path,
                   curves=None) -> Path:
    lines = ["# Model comparison", "", f"Runs: `{source}`", ""]
    for t in tables:
        header, rows = table_rows(t)
        lines += [f"## {t.material}", "", split_note(t) + ".", t.phonon_note + ".", "", md_table(header, rows), ""]
        lines += [f"- {m}" for m in margin_lines(t)]
        lines.append("")
        for caption, p in figures[t.material]:
            lines += [f"![{caption}]({p.relative_to(path.parent).as_posix()})", ""]
    if curves is not None:
        header, rows = curves.table
        lines += ["## Learning curves", "", curves.note + ".", "", md_table(header, rows), ""]
        if curves.figure is not None:
            lines += [f"![{curves.caption}]({curves.figure.relative_to(path.parent).as_posix()})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    path.write_text("\n".join(lines))
    return path


def write_csv(tables: list[MaterialTable], summary_path: Path, runs_path: Path) -> tuple[Path, Path]:
    """``summary_path``: one row per material × arm with ``<key>_mean``, ``_std``, ``_n``;
    ``runs_path``: one row per run (seed) with the raw values and its directory."""
    keys = [k for k, _ in COLUMNS]
    with open(summary_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["material", "arm", "split", "seeds"] + [f"{k}_{s}" for k in keys for s in ("mean", "std", "n")])
        for t in tables:
            for a in t.arms:
                row = [t.material, a.name, t.split, " ".join(str(r.seed) for r in a.runs)]
                for k in keys:
                    st = a.stats(k)
                    row += ["", "", 0] if st is None else [st[0], "" if st[1] is None else st[1], st[2]]
                w.writerow(row)
    with open(runs_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["material", "arm", "seed", "split"] + keys + ["run_dir"])
        for t in tables:
            for a in t.arms:
                for r, v in zip(a.runs, a.values):
                    w.writerow([t.material, a.name, r.seed, t.split] + ["" if v[k] is None else v[k] for k in keys]
                               + [str(r.dir)])
    return summary_path, runs_path


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:0.5em;vertical-align:top}figcaption{font-size:0.8em;color:#555}
img{max-width:100%}p.note{font-size:0.85em;color:#444}
"""

SCRIPT = """
(function () {
  var errors = [];
  // capture phase: script errors and elements (images) that fail to load both count
  window.addEventListener('error', function (e) { errors.push(String(e.message || (e.target && e.target.tagName))); record(); }, true);
  function record() { if (document.body) document.body.setAttribute('data-render-errors', String(errors.length)); }
  window.addEventListener('load', function () {
    var imgs = Array.prototype.slice.call(document.images);
    var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
    document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
    record();
  });
})();
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _figure_html(caption: str, path: Path) -> str:
    """A figure with the PNG at ``path`` embedded and its caption (escaped)."""
    e = html.escape
    return f'<figure><img alt="{e(caption)}" src="{_data_uri(path)}"><figcaption>{e(caption)}</figcaption></figure>'


def write_html(tables: list[MaterialTable], figures: dict, notes: list[str], source: Path, path: Path,
               curves=None) -> Path:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>hedgenet model comparison</title>", f"<style>{CSS}</style>",
             f"<script>{SCRIPT}</script></head><body>",
             "<h1>Model comparison</h1>", f"<p class=note>Runs: <code>{e(str(source))}</code></p>"]
    for t in tables:
        header, rows = table_rows(t)
        parts += [f"<h2>{e(t.material)}</h2>", f"<p class=note>{e(split_note(t))}.<br>{e(t.phonon_note)}.</p>",
                  html_table(header, rows)]
        if t.margins:
            parts.append("<ul>" + "".join(f"<li>{e(m)}</li>" for m in margin_lines(t)) + "</ul>")
        parts += [_figure_html(caption, p) for caption, p in figures[t.material]]
    if curves is not None:
        header, rows = curves.table
        parts += ["<h2>Learning curves</h2>", f"<p class=note>{e(curves.note)}.</p>", html_table(header, rows)]
        if curves.figure is not None:
            parts.append(_figure_html(curves.caption, curves.figure))
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_report(tables: list[MaterialTable], notes: list[str], source: Path, out: Path,
                 curves=None) -> dict[str, Path]:
    """``comparison.md``, ``comparison.csv`` (mean/std/n per arm), ``runs.csv`` (per seed),
    ``comparison.html`` and the figures under ``<material>/`` in ``out``; with ``curves``
    (:func:`hedgenet.report.learning_curves.section`) a learning-curves section: its table and figure."""
    out.mkdir(parents=True, exist_ok=True)
    figures = {t.material: collect_figures(t, out / slug(t.material)) for t in tables}
    md = write_markdown(tables, figures, notes, source, out / "comparison.md", curves)
    summary, runs = write_csv(tables, out / "comparison.csv", out / "runs.csv")
    page = write_html(tables, figures, notes, source, out / "comparison.html", curves)
    return {"markdown": md, "csv": summary, "runs_csv": runs, "html": page}
