"""v_F(T)/v_F(static) converged in cell size and sample count: the table of every order and temperature.

Runs ``hedgenet-fermi-velocity`` once per (calculator, n×n cell, temperature, samples per temperature) into
``<root>/runs/`` — one temperature per run, so a stopped benchmark loses at most the run in progress and a
rerun of the same command continues (a run whose summary.json exists is not rerun) — then prints and writes
the table (``<root>/fermi_velocity_convergence.md`` and ``.json``): per run and order, v₀, γ₁ and the band
velocity at ``fermi_velocity.fixed_energy_eV`` as ratios to the static lattice with their error bars, and
the run's CPU time.

    OMP_NUM_THREADS=1 python benchmarks/fermi_velocity_convergence.py --model <train run>/model.pt \\
        --root outputs/fv_convergence --runs model:6:64 model:9:32 reference:6:32 --temperatures 0 100 300 600

Each ``--runs`` entry is calculator:n:samples (calculator ``model`` or ``reference``, the n×n sampling cell,
samples per temperature); every run has the command's defaults otherwise (force constants from 7×7, mapped).
``--extra`` passes further overrides to every run (e.g. ``sampler=sdm``).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table  # noqa: E402
from interlayer_ablation import cli  # noqa: E402

OBSERVABLES = (("v0", "ratio_to_static", "ratio_err"), ("γ1", "gamma1_ratio_to_static", "gamma1_ratio_err"),
               ("v(E*)", "v_fixed_energy_ratio_to_static", "v_fixed_energy_ratio_err"))


def run_name(calculator: str, n: int, T: float, samples: int, tag: str) -> str:
    return f"{calculator}_{n}x{n}_T{T:g}_N{samples}{('_' + tag) if tag else ''}"


def one_run(args, calculator: str, n: int, T: float, samples: int) -> dict:
    name = run_name(calculator, n, T, samples, args.tag)
    run_dir = args.root / "runs" / name
    overrides = [f"calculator={calculator}", f"fermi_velocity.supercell=[{n},{n}]",
                 f"fermi_velocity.temperatures_K=[{T}]", f"sampler.n_samples={samples}", "progress=false",
                 *args.extra]
    if calculator == "model":
        overrides.append(f"model_path={args.model}")
    summary = cli("fermi_velocity", args.root, run_dir, *overrides)
    seconds = float(summary["timings_s"]["total"])  # the run's own time (one thread: its CPU time)
    rows = []
    for order, by_T in summary["by_temperature"].items():
        fit = next(iter(by_T.values()))
        row = {"calculator": calculator, "cell": n, "atoms": 4 * n * n, "T_K": T, "samples": samples,
               "order": order, "error_method": fit.get("ratio_err_method"), "seconds": seconds,
               "static_v0_1e5_m_s": summary["static"]["v0_1e5_m_s"], "run": str(run_dir)}
        for label, key, err in OBSERVABLES:
            row[label] = (float(fit.get(key, math.nan)), float(fit.get(err, math.nan)))
        rows.append(row)
    return rows


def command_line(args) -> str:
    parts = ["OMP_NUM_THREADS=1", "python", "benchmarks/fermi_velocity_convergence.py", "--root", str(args.root),
             "--runs", *args.runs, "--temperatures", *map(str, args.temperatures)]
    if args.model:
        parts += ["--model", str(args.model)]
    if args.extra:
        parts += ["--extra", *args.extra]
    if args.tag:
        parts += ["--tag", args.tag]
    return " ".join(parts[:3] + [shlex.quote(p) for p in parts[3:]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="model.pt of a hedgenet-train run (the model-driven runs)")
    p.add_argument("--root", type=Path, default=Path("outputs/fv_convergence"))
    p.add_argument("--runs", nargs="+", default=["model:6:64", "model:9:32", "reference:6:32"],
                   help="calculator:n:samples (model|reference, n×n cell, samples per temperature: even, ≥ 4)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 100.0, 300.0, 600.0])
    p.add_argument("--extra", nargs="*", default=[], metavar="KEY=VALUE", help="further overrides of every run")
    p.add_argument("--tag", default="", help="suffix of the run names (runs with other --extra)")
    p.add_argument("--collect-only", action="store_true",
                   help="run nothing: the table of the planned runs that have finished")
    args = p.parse_args()
    runs = []
    for spec in args.runs:
        parts = spec.split(":")
        if len(parts) != 3 or parts[0] not in ("model", "reference") or not all(x.isdigit() for x in parts[1:]):
            p.error(f"--runs {spec!r}: write calculator:n:samples, e.g. model:9:32 or reference:6:32")
        n, samples = int(parts[1]), int(parts[2])
        if samples < 4 or samples % 2:
            p.error(f"--runs {spec!r}: samples per temperature must be even and ≥ 4 (± pairs)")
        runs.append((parts[0], n, samples))
    if any(c == "model" for c, _, _ in runs) and args.model is None:
        p.error("--model is needed for model-driven runs")
    args.root = args.root.resolve()
    if args.model:
        args.model = args.model.resolve()
    print(f"reproduce: {command_line(args)}", flush=True)
    plan = [(c, n, T, N) for c, n, N in runs for T in args.temperatures]
    rows = []
    for calculator, n, T, N in plan:
        if args.collect_only and not (args.root / "runs" / run_name(calculator, n, T, N, args.tag) / "summary.json").exists():
            continue
        print(f"{calculator}, {n}×{n}, {T:g} K, {N} samples", flush=True)
        rows += one_run(args, calculator, n, T, N)
    table = [[r["calculator"], f"{r['cell']}×{r['cell']}", r["samples"], f"{r['T_K']:g}", r["order"],
              *[f"{r[label][0]:.4f} ± {r[label][1]:.4f}" for label, _, _ in OBSERVABLES], f"{r['seconds']:.0f}"]
             for r in rows]
    text = print_table(["calculator", "cell", "samples", "T (K)", "order", "v0/static", "γ1/static",
                        "v(E*)/static", "s (run, one thread)"], table,
                       "v_F(T) ratios to the static lattice (error bars: bootstrap or jackknife over ± pairs)")
    args.root.mkdir(parents=True, exist_ok=True)
    (args.root / "fermi_velocity_convergence.md").write_text(f"reproduce: {command_line(args)}\n{text}\n")
    (args.root / "fermi_velocity_convergence.json").write_text(
        json.dumps({"command": command_line(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
