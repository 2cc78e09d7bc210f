"""The pipeline report: one markdown file and one self-contained HTML page (figures embedded) with the
phonon bands (model vs reference), couplings, the unfolded spectral function, v_F(T) for every order,
model accuracy, timings against the reference and the resolved config."""

from __future__ import annotations

import html
import json
import math
import shutil
from pathlib import Path

from hedgenet.report.render import CSS, SCRIPT, _data_uri


def _fmt(v, digits: int = 4) -> str:
    """A table cell (never containing '|', which would split the cell)."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.{digits}g}"
    return str(v).replace("|", "¦")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return lines + [""]


def headline(outputs: dict) -> dict:
    """The few numbers the console summary and the report lead with."""
    h = {}
    train = outputs.get("train", {}).get("metrics", {})
    for key in ("test/forces_mae", "val/forces_mae", "test/H_all_mae", "val/H_all_mae"):
        if key in train:
            h.setdefault("forces_mae_meV_A" if "forces" in key else "H_mae_meV", train[key])
    ph = outputs.get("phonons_model", {}).get("summary", {})
    if "frequency_mae_vs_compare_THz" in ph:
        h["phonon_mae_THz"] = ph["frequency_mae_vs_compare_THz"]
    ph_ref = outputs.get("phonons_reference", {}).get("summary", {})
    for mode in ("shear", "breathing"):  # Γ interlayer modes (THz), model and reference side by side
        key = f"gamma_{'interlayer_shear' if mode == 'shear' else 'layer_breathing'}_THz"
        if key in ph or key in ph_ref:
            h[f"gamma_{mode}_THz"] = {"model": ph.get(key), "reference": ph_ref.get(key)}
    if "residual_force_max_meV_A" in ph:  # is the reference's relaxed structure the model's equilibrium too?
        h["residual_force_max_meV_A"] = {"model": ph["residual_force_max_meV_A"],
                                         "reference": ph_ref.get("residual_force_max_meV_A")}
    if "own_minimum_interlayer_distance_change_A" in ph:  # the model's own minimum (xTB's relaxed cell = 0)
        h["model_minimum_interlayer_distance_change_A"] = ph["own_minimum_interlayer_distance_change_A"]
        h["model_minimum_residual_force_max_meV_A"] = ph["own_minimum_residual_force_max_meV_A"]
    if "residual_virial_in_plane_meV_atom" in ph:
        def worst(s):
            return max(abs(w) for w in s["residual_virial_in_plane_meV_atom"]) if "residual_virial_in_plane_meV_atom" in s else None
        h["residual_virial_max_meV_atom"] = {"model": worst(ph), "reference": worst(ph_ref)}
    epi = outputs.get("epi_model", {}).get("summary", {})
    if "g_sum_ratio_to_compare" in epi:  # Σ|g| of the model's Dirac-point couplings over the reference's
        h["coupling_sum_ratio"] = epi["g_sum_ratio_to_compare"]
    for stage, q, unit in (("phonons_model", "forces", "meV_A"), ("fermi_velocity_model", "H", "meV")):
        t = (outputs.get(stage, {}).get("summary", {}).get("trust") or {}).get(q)
        if t:  # the model's (or committee's) largest spread on what the stage evaluated, against its threshold
            h[f"trust_{q}_spread_max_{unit}"] = {"spread": 1e3 * t["max"],
                                                 "threshold": None if t["threshold"] is None else 1e3 * t["threshold"]}
    fv = outputs.get("fermi_velocity_model", {}).get("summary", {})
    if fv:
        h["v0_static_1e5_m_s"] = fv["static"]["v0_1e5_m_s"]
        for order, d in fv["by_temperature"].items():
            T = max(d, key=float)
            h[f"v_ratio_{order}_{float(T):.0f}K"] = d[T]["ratio_to_static"]
    return h


def _pm(v: dict, name: str) -> str:
    """``name_to_static ± name_err`` of a v_F(T) entry, or — where absent."""
    r = v.get(f"{name}_to_static")
    return "—" if r is None else f"{r:.4f} ± {float(v[f'{name}_err']):.4f}"


def excluded_mode_warnings(outputs: dict) -> list[str]:
    """One warning per stage that sampled thermal displacements (labelling, v_F(T)) and left out modes other
    than the three Γ translations, from ``excluded_modes`` in its summary; every such mode is a degree of
    freedom the thermal average did not contain."""
    out = []
    for name, o in outputs.items():
        modes = o.get("summary", {}).get("excluded_modes") or []
        other = [m for m in modes if m.get("kind") != "acoustic"]
        if not other:
            continue
        kinds = {}
        for m in other:
            kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
        lowest = min(other, key=lambda m: m["frequency_THz"])
        out.append(f"{name}: {len(other)} mode(s) besides the Γ translations were not sampled ("
                   + ", ".join(f"{n} {k}" for k, n in kinds.items())
                   + f"; lowest {lowest['frequency_THz']:.3f} THz at q = {lowest['q']}): the thermal average "
                   "misses them (see excluded_modes in the stage's summary.json)")
    return out


def trust_warnings(outputs: dict) -> list[str]:
    """The trust warnings of every physics stage whose model had an uncertainty estimate (``trust`` in its summary)."""
    return [f"{name}: {w}" for name, o in outputs.items()
            for w in (o.get("summary", {}).get("trust") or {}).get("warnings", [])]


def _accuracy_section(train: dict) -> list[str]:
    m = train.get("metrics", {})
    split = "test" if any(k.startswith("test/") for k in m) else "val"
    rows = []
    for q, unit in (("energy", "meV/atom"), ("forces", "meV/Å"), ("H_all", "meV"), ("H_onsite", "meV"),
                    ("H_intra", "meV"), ("H_inter", "meV"), ("S_all", "10⁻³")):
        k = f"{split}/{q}_mae"
        if k in m:
            rows.append([q, unit, m[k]])
    if f"{split}/bands_mae" in m:
        rows.append(["band energies near E_F", "meV", m[f"{split}/bands_mae"]])
    out = ["## Model accuracy", "", f"Mean absolute errors on the {split} set against the reference "
           f"({m.get('n_train', '?')} training cells, {m.get('n_parameters', '?')} parameters, "
           f"{_fmt(m.get('train_time_s'), 3)} s training).", ""]
    return out + _table(["quantity", "unit", "MAE"], rows)


def _timing_rows(outputs: dict) -> list[list]:
    rows = []
    for kind, key in (("phonons", "force_constants_time_s"), ("epi", "epi_time_s"), ("fermi_velocity", None)):
        ref = outputs.get(f"{kind}_reference", {})
        mod = outputs.get(f"{kind}_model", {})
        if not mod:
            continue
        def t(o):
            s = o.get("summary", {})
            return s.get(key) if key else s.get("timings_s", {}).get("total")
        tr, tm = (t(ref) if ref else None), t(mod)
        rows.append([kind, tr, tm, (tr / tm) if tr and tm else None])
    return rows


def write_report(run_dir: Path, outputs: dict, resolved_config: str, stage_seconds: dict) -> dict:
    """Write report.md, report.html and figures/ into ``run_dir``; returns the paths and headline numbers."""
    run_dir = Path(run_dir)
    figs = run_dir / "figures"
    figs.mkdir(exist_ok=True)
    md = ["# hedgenet pipeline report", ""]
    h = headline(outputs)
    rows = [[k, ", ".join(f"{side} {_fmt(x)}" for side, x in v.items()) if isinstance(v, dict) else v]
            for k, v in h.items()]
    md += ["## Headline", ""] + _table(["quantity", "value"], rows)
    warnings = excluded_mode_warnings(outputs) + trust_warnings(outputs)
    if warnings:
        md += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    images: list[tuple[str, Path]] = []

    def figure(stage: str, name: str, caption: str) -> None:
        src = Path(outputs.get(stage, {}).get("dir", "")) / name
        if src.exists():
            dst = figs / f"{stage}_{name}"
            shutil.copyfile(src, dst)
            md.extend([f"![{caption}](figures/{dst.name})", "", f"*{caption}*", ""])
            images.append((caption, dst))

    if "train" in outputs:
        md += _accuracy_section(outputs["train"])
        figure("train", "parity_forces.png", "forces: model vs reference (eV/Å)")
        figure("train", "learning_curves.png", "learning curves")
    if "active" in outputs:
        s = outputs["active"].get("summary", {})
        table = Path(outputs["active"]["dir"]) / "rounds.md"
        md += ["## Active learning", "", f"{s.get('n_rounds', '?')} rounds, {s.get('n_picked', '?')} of "
               f"{s.get('pool_size', '?')} candidates labelled by the reference ({s.get('strategy', '?')} picks, score "
               f"{s.get('score', '?')}) on top of {s.get('n_seed', '?')} seed cells; stopped: {s.get('stop', '?')}. "
               "The physics stages use the last round's committee (mean predictions).", ""]
        if table.exists():
            md += table.read_text().splitlines() + [""]
        figure("active", "rounds.png", "active learning: error and pool spread against labelled cells")
    if "phonons_model" in outputs:
        s = outputs["phonons_model"]["summary"]
        md += ["## Phonons", "", f"Model phonons in a {s['supercell']} supercell, acoustic sum rule enforced "
               f"(violation before: {_fmt(s.get('asr_violation_before_eV_A2'))} eV/Å²).", ""]
        rows = [["frequency MAE model vs reference (THz)", s.get("frequency_mae_vs_compare_THz")],
                ["max abs Δf (THz)", s.get("frequency_max_abs_diff_vs_compare_THz")],
                ["Γ interlayer shear, model (THz)", s.get("gamma_interlayer_shear_THz")],
                ["Γ layer breathing, model (THz)", s.get("gamma_layer_breathing_THz")]]
        r = outputs.get("phonons_reference", {}).get("summary", {})
        rows += [["Γ interlayer shear, reference (THz)", r.get("gamma_interlayer_shear_THz")],
                 ["Γ layer breathing, reference (THz)", r.get("gamma_layer_breathing_THz")],
                 ["largest force at the relaxed structure, model / reference (meV/Å)",
                  f"{_fmt(s.get('residual_force_max_meV_A'))} / {_fmt(r.get('residual_force_max_meV_A'))}"],
                 ["in-plane virial there [xx, yy, xy], model (meV/atom)",
                  ", ".join(_fmt(w) for w in s.get("residual_virial_in_plane_meV_atom", [])) or "—"],
                 ["in-plane virial there, reference (meV/atom)",
                  ", ".join(_fmt(w) for w in r.get("residual_virial_in_plane_meV_atom", [])) or "—"]]
        md += [f"- {w}" for w in s.get("warnings", [])] + ([""] if s.get("warnings") else [])
        md += _table(["quantity", "value"], rows)
        figure("phonons_model", "phonon_bands.png", "phonon bands: model (lines) and reference (overlay)")
    if "epi_model" in outputs:
        s = outputs["epi_model"]["summary"]
        md += ["## Electron–phonon couplings", "", "Dirac-point coupling strengths g_ν (meV, absolute values) of the supercell phonons.", ""]
        rows = [[m["frequency_THz"], m["g_meV"]] for m in s.get("strong_modes", [])[:8]]
        md += _table(["mode frequency (THz)", "g model (meV)"], rows)
        if "g_mae_strong_modes_meV" in s:
            md += [f"Coupling MAE over the reference's strong modes: {_fmt(s['g_mae_strong_modes_meV'])} meV; "
                   f"sum of couplings model/reference {_fmt(s['g_sum_ratio_to_compare'])}.", ""]
        figure("epi_model", "couplings.png", "coupling strengths, model vs reference")
    if "fermi_velocity_model" in outputs:
        s = outputs["fermi_velocity_model"]["summary"]
        st = s["static"]
        e_fixed = st.get("fixed_energy_eV")
        md += ["## Fermi velocity v_F(T)", "", f"Static lattice (model): v₀ = {_fmt(st['v0_1e5_m_s'])} × 10⁵ m/s,"
               f" γ₁ = {_fmt(st.get('gamma1_eV', st['directions']['KΓ']['gamma1_eV']))} eV"
               + (f", gap at K {_fmt(st['gap_eV'])} eV, band velocity {e_fixed:g} eV above the charge-neutrality "
                  f"point {_fmt(st['v_fixed_energy_1e5_m_s'])} × 10⁵ m/s" if e_fixed is not None else "")
               + f"; {s['supercell']} supercell, sampler {s['sampler']}. Ratios to the static lattice per order "
               "(first: H₀ + Σ dH/du·u; second: ½[H(u)+H(−u)] ± Σ dH/du·u; all: H(u)); error bars from "
               "resampled ± pairs (method in the last column).", ""]
        rows = []
        fv_notes = set()
        ref = outputs.get("fermi_velocity_reference", {}).get("summary", {}).get("by_temperature", {})
        for order, d in s["by_temperature"].items():
            for T, v in d.items():
                r = ref.get(order, {}).get(T)
                rows.append([order, float(T), _pm(v, "ratio"), _pm(r, "ratio") if r else "—",
                             _pm(v, "v_fixed_energy_ratio"), _pm(v, "gamma1_ratio"),
                             f"{v['gap_eV']:.3f} ± {float(v['gap_err_eV']):.3f}" if "gap_eV" in v else "—",
                             v.get("ratio_err_method", "bootstrap")])
                if v.get("error_warning"):
                    fv_notes.add(v["error_warning"])
        md += _table(["order", "T (K)", "v₀/v₀(static), model", "reference",
                      f"v(E*)/v(E*, static), E* = {e_fixed:g} eV" if e_fixed is not None else "v(E*)/v(E*, static)",
                      "γ₁/γ₁(static)", "gap at K (eV)", "error bars"], rows)
        md += [f"Note: {w}." for w in sorted(fv_notes)] + ([""] if fv_notes else [])
        figure("fermi_velocity_model", "fermi_velocity.png", "ratios to the static lattice vs T (v₀, v(E*), γ₁), every order")
        figure("fermi_velocity_model", "spectral_function.png", "unfolded spectral function A(k, E) near K at three temperatures")
    trows = _timing_rows(outputs)
    md += ["## Timing", "", "Physics stages driven by the model vs by the reference (s; training is counted "
           "separately below).", ""] + _table(["stage", "reference", "model", "ratio"], trows)
    md += _table(["pipeline stage", "wall time this run (s; 0 = cached)", "CPU time when it ran (s)"],
                 [[k, v, outputs.get(k, {}).get("cpu_seconds")] for k, v in stage_seconds.items()])
    md += ["## Stage directories", ""] + [f"- {k}: `{v['dir']}`" for k, v in outputs.items()] + [""]
    md += ["## Resolved config", "", "```yaml", resolved_config.rstrip(), "```", ""]
    text = "\n".join(md)
    (run_dir / "report.md").write_text(text)
    (run_dir / "report.html").write_text(markdown_to_html(text, run_dir))
    (run_dir / "headline.json").write_text(json.dumps(h, indent=1))
    return {"report_md": str(run_dir / "report.md"), "report_html": str(run_dir / "report.html"), "headline": h,
            "warnings": warnings}


def markdown_to_html(text: str, base: Path, title: str = "hedgenet report") -> str:
    """The subset of markdown the reports use (headings, tables, images, code blocks, lists, paragraphs) as
    one self-contained HTML page: images are embedded as data URIs, so the file renders anywhere; the page
    records script errors and undecodable images like hedgenet-compare's (``data-render-errors``)."""
    out, in_code, table = [], False, []

    def flush_table():
        if table:
            head, *body = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = lambda r: [html.escape(c.strip()) for c in r.strip().strip("|").split("|")]  # noqa: E731
            out.append("<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in cells(head)) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in cells(r)) + "</tr>" for r in body)
                       + "</tbody></table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("```"):
            flush_table()
            out.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            out.append(html.escape(line))
            continue
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("![") and "](" in line:
            alt, src = line[2:].split("](", 1)
            out.append(f'<figure><img alt="{html.escape(alt)}" src="{_data_uri(base / src.rstrip(")"))}"></figure>')
        elif line.startswith("- "):
            out.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = CSS + "pre{background:#f6f6f6;padding:0.6em;overflow:auto;font-size:0.8em}"
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style><script>{SCRIPT}</script></head><body>\n" + "\n".join(out) + "\n</body></html>\n")
