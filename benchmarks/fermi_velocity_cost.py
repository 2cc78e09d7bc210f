"""The whole v_F(T) run driven by a trained model vs by the reference, side by side.

Runs ``hedgenet-fermi-velocity`` twice with the same settings, ``calculator=reference`` and
``calculator=model``, one OpenMP thread each, one after the other, and prints three tables:

1. wall time per stage (phonons, dH/du, static bands, samples per order; the unfolding and fit parts) and
   the reference/model ratio — training cost is not included (see docs/training.md);
2. v_F(T)/v_F(static) per order and temperature from both, with their difference in % and in σ;
3. the phonon-frequency MAE of the model's force constants against the reference's on Γ–M–K–Γ (THz).

    .venv/bin/python benchmarks/fermi_velocity_cost.py --model <train run>/model.pt --supercell 6 \\
        --override reference.electronic_temperature_K=3000

Run directories: outputs/<--name>/{reference,model}; ``--reuse`` skips a side whose summary.json exists.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("phonons", "epi", "static_bands", "samples_first", "samples_all", "total", "unfold_part", "fit_part")


def run_side(kind: str, out: Path, args) -> dict:
    summary = out / "summary.json"
    if args.reuse and summary.exists():
        return json.loads(summary.read_text())
    cmd = [str(Path(sys.executable).parent / "hedgenet-fermi-velocity"), f"calculator={kind}",
           f"fermi_velocity.supercell=[{args.supercell},{args.supercell}]", f"sampler.n_samples={args.n_samples}",
           f"fermi_velocity.temperatures_K=[{','.join(str(t) for t in args.temperatures)}]", "progress=false",
           f"hydra.run.dir={out}", *args.override]
    if kind == "model":
        cmd.append(f"model_path={Path(args.model).resolve()}")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return json.loads(summary.read_text())


def phonon_mae_THz(ref_dir: Path, model_dir: Path) -> tuple[float, float]:
    """MAE and max |Δf| (THz) of the model's phonon bands against the reference's on Γ–M–K–Γ."""
    import phonopy

    from hedgenet.physics.phonons import band_structure

    bands = [band_structure(phonopy.load(str(d / "phonopy_params.yaml")), "ΓMKΓ", 31).frequencies
             for d in (ref_dir, model_dir)]
    diff = np.abs(bands[1] - bands[0])
    return float(diff.mean()), float(diff.max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt of a hedgenet-train run")
    p.add_argument("--supercell", type=int, default=6)
    p.add_argument("--n-samples", type=int, default=8)
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 100.0, 300.0, 600.0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default=None, help="outputs/<name>/ (default: fermi_velocity_cost_<n>x<n>)")
    p.add_argument("--override", nargs="*", default=[],
                   help="Hydra overrides for both sides (the model side uses the reference only to relax the cell)")
    p.add_argument("--reuse", action="store_true", help="reuse a side whose summary.json exists")
    args = p.parse_args()
    if not Path(args.model).exists():
        p.error(f"--model {args.model}: no such file. Fix: give the model.pt of a hedgenet-train run")
    base = ROOT / "outputs" / (args.name or f"fermi_velocity_cost_{args.supercell}x{args.supercell}")
    ref = run_side("reference", base / "reference", args)
    mod = run_side("model", base / "model", args)

    tr, tm = ref["timings_s"], mod["timings_s"]
    rows = [[k, tr.get(k, 0.0), tm.get(k, 0.0), tr.get(k, 0.0) / max(tm.get(k, 0.0), 1e-9)] for k in STAGES if k in tr]
    print_table(["stage", "reference (s)", "model (s)", "ratio"], rows,
                f"v_F(T) run, {args.supercell}×{args.supercell} AB bilayer, {args.n_samples} samples/T, "
                f"{args.threads} thread(s)")
    rows = []
    for order in ref["by_temperature"]:
        for T, r in ref["by_temperature"][order].items():
            m = mod["by_temperature"][order][T]
            d = m["ratio_to_static"] - r["ratio_to_static"]
            rows.append([order, float(T), f"{r['ratio_to_static']:.4f} ± {r['ratio_err']:.4f}",
                         f"{m['ratio_to_static']:.4f} ± {m['ratio_err']:.4f}", 100 * d,
                         d / max(np.hypot(r["ratio_err"], m["ratio_err"]), 1e-12)])
    print_table(["order", "T (K)", "reference v/v_static", "model v/v_static", "Δ (%)", "Δ/σ"], rows,
                f"static v0: reference {ref['static']['v0_1e5_m_s']:.4f}, model {mod['static']['v0_1e5_m_s']:.4f} "
                "× 10^5 m/s")
    mae, mx = phonon_mae_THz(base / "reference", base / "model")
    print_table(["quantity", "value"], [["phonon MAE Γ–M–K–Γ (THz)", mae], ["phonon max |Δf| (THz)", mx]])


if __name__ == "__main__":
    main()
