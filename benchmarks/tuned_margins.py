"""HedgeNet against MACE and the DeepH-E3-like model, each tuned by an Optuna search of the same CPU budget.

The paper's margins (phonon MAE −15 % against MACE, −8 % against DeepH-E3) compare tuned models. This benchmark
gives every family the same budget of training CPU seconds for a ``hedgenet-sweep`` study on one subset of the
learning-curve pool, then trains each family's best trial (``tuned=<study>``) on the learning-curve subsets of
``--cells`` cells for every seed and measures it on the held-out cells, exactly as ``learning_curves.py`` measures
the defaults:

1. tuning, per family: ``hedgenet-sweep hparams_search=<family>`` one trial at a time on the seed-0 subset of
   ``--tune-cells`` cells (``--tune-epochs``, ``data.val_fraction=--tune-val-fraction``, objective the validation
   force MAE — common to all three families; the median pruner stops trials that fall behind) until the trials'
   CPU seconds reach ``--budget-cpu-s``. Every family searches its optimiser, EMA and energy weight (its
   ``conf/hparams_search`` space: the energy weight sets the balance of energy against the forces and the physics
   terms made of them, which keep their proportions) and its width, depth and radial basis (``SEARCH`` below), so
   no family is tuned on more knobs than another. Trial 0 of every study is the family's defaults (the untuned
   rows' config), so a study can only pick something its own objective rates better; where the best is that
   baseline, the family's tuned rows are its untuned rows (the same training, not run twice). A family whose
   trials cost more gets fewer of them: that is the equal budget.
2. evaluation: ``learning_curves.py --families <family> --extra tuned=<study> --tag <study>`` (and, with
   ``--defaults``, the untuned rows of the same cells and seeds; ``--defaults-only``: those alone, written to
   ``tuned_margins_defaults.json``), under the same ``--root``, pool and test cells.

    OMP_NUM_THREADS=1 python benchmarks/tuned_margins.py --root <learning-curve root> --cells 96 --seeds 0 1 2 \\
        --tune-cells 48 --tune-epochs 15 --budget-cpu-s 3600 [--defaults] [--reuse docs/figures/learning_curves.json]

The root must hold the learning-curve pool (run ``learning_curves.py`` there first, or pass its ``--pool-cells``
and ``--label-extra``, which are handed on). Writes ``<root>/tuned_margins.json`` and ``tuned_margins.md``: per
family the trials (state, validation force MAE, CPU s, parameters), the CPU spent and the best parameters; the
rows (test forces, H, phonon MAE, Γ shear and breathing) as mean ± std over seeds, tuned and default; and the
margins of HedgeNet against each baseline (relative difference of the seed means, tuned against tuned).
Resumable: the studies live in ``<root>/sweeps`` with a ledger of each trial's CPU seconds
(``<root>/tuned_margins/<study>.json``; a trial killed before it finished is marked failed by the sweep and its
seconds are not counted), and learning_curves.py keeps its finished rows; rerun the same command to continue.
Every study is also recorded under ``--record`` after each trial (default ``docs/figures/tuned_margins/<study>.json``:
its launches, trials and best trial's config): on a root without that study it is rebuilt from there and goes on
where it stopped (a finished one is not tuned again). The
evaluation runs one seed at a time and adds each finished row to ``<record>/<study>_rows.json`` (the untuned rows:
``defaults_<family>_n<cells>_e<epochs>_rows.json``), which every later run reuses: no seed is trained twice.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from hedgenet.report.compare import margin_pct
from hedgenet.pipeline.stages import run_logged
from hedgenet.report.learning_curves import aggregate

sys.path.insert(0, str(Path(__file__).parent))
from _common import portable_json, print_table  # noqa: E402
from learning_curves import TRAIN, nested_subsets, options, pool_scale, timed, write_subset  # noqa: E402

SEARCH = {
    "hedgenet": ["hparams_search=hedgenet", "task=joint"],  # its space already holds width, depth, basis, r_inter
    "mace": ["hparams_search=mace", "task=forces", "model.size.channels=choice(16,32,64)",
             "model.size.num_layers=choice(1,2,3)", "model.num_basis=choice(6,8,12)"],
    "deeph_e3": ["hparams_search=deeph_e3", "task=joint", "model.size.channels=choice(8,16,32)",
                 "model.size.num_layers=choice(1,2,3)", "model.num_basis=choice(6,8,12)"],
}
"""Each family's search: its conf/hparams_search space plus width, depth and radial basis."""

OBJECTIVE = "val/forces_mae"
METRICS = {"phonon_mae_THz": "phonon MAE (THz)", "forces_mae_meV_A": "force MAE (meV/Å)", "H_mae_meV": "H MAE (meV)",
           "gamma_shear_THz": "Γ shear (THz)", "gamma_breathing_THz": "Γ breathing (THz)"}
MARGIN_METRICS = ("phonon_mae_THz", "forces_mae_meV_A", "H_mae_meV")
PAPER_MARGINS = {"mace": -15.0, "deeph_e3": -8.0}
"""The paper's phonon-MAE margins of HedgeNet (%)."""


def study_name(family: str, cells: int, epochs: int) -> str:
    """The study of ``family``'s search. ``margins2_``: the space above with the defaults as trial 0; the first
    studies (``margins_``: the force weight searched alone, no baseline trial) stay in the record as the
    measurement of what that search did."""
    return f"margins2_{family}_n{cells}_e{epochs}"


def load_ledger(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"launches": []}


def spent_cpu_s(ledger: dict) -> float:
    """Training CPU seconds of the study's launches so far."""
    return float(sum(launch["cpu_s"] for launch in ledger["launches"]))


def tune(family: str, root: Path, subset: Path, args, extra: list[str]) -> dict:
    """Trials of ``family`` on ``subset``, one ``hedgenet-sweep`` launch each, until the budget is spent; returns the
    study's trials with their CPU seconds and the best one. The study is recorded under ``--record`` after every
    launch, and a root without it (a new machine) rebuilds it from that record and goes on from there."""
    import optuna

    name = study_name(family, args.tune_cells, args.tune_epochs)
    ledger_path = root / "tuned_margins" / f"{name}.json"
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    (root / "sweeps").mkdir(parents=True, exist_ok=True)
    record = args.record / f"{name}.json"
    storage = f"sqlite:///{root}/sweeps/{name}.db"
    if record.exists() and not ledger_path.exists():
        rebuild(record, root, subset, args, storage, ledger_path)
    ledger = load_ledger(ledger_path)
    overrides = [*SEARCH[family], *TRAIN, f"data.paths=[{subset}]", f"data.val_fraction={args.tune_val_fraction}",
                 f"train.max_epochs={args.tune_epochs}", "seed=0", "trainer.enable_progress_bar=false",
                 f"sweep.study_name={name}", "sweep.n_trials=1", f"sweep.objectives=[{OBJECTIVE}]",
                 "sweep.directions=[minimize]", *extra]
    log = ledger_path.with_suffix(".log")
    while spent_cpu_s(ledger) < args.budget_cpu_s:
        before = {t.number for t in optuna.load_study(study_name=name, storage=storage).trials} \
            if (root / "sweeps" / f"{name}.db").exists() else set()
        cmd = [sys.executable, "-m", "hedgenet.cli.sweep", *overrides]
        status, cpu, wall = timed(run_logged, cmd, log, {"HEDGENET_ROOT": str(root)})
        if status != 0:
            raise SystemExit(f"{' '.join(map(shlex.quote, cmd))} failed (log {log}):\n{log.read_text()[-3000:]}")
        study = optuna.load_study(study_name=name, storage=storage)
        new = sorted(t.number for t in study.trials if t.number not in before)
        ledger["launches"].append({"trials": new, "cpu_s": cpu, "wall_s": wall})
        ledger_path.write_text(json.dumps(ledger, indent=1))
        write_record(record, root, study_record(study, ledger, args, subset))
        print(f"  {name}: trial {new} {cpu:.0f} CPU s; spent {spent_cpu_s(ledger):.0f} of {args.budget_cpu_s:.0f}",
              flush=True)
    result = study_record(optuna.load_study(study_name=name, storage=storage), ledger, args, subset)
    if result["best"] is None:
        raise SystemExit(f"study {name}: no trial completed within {args.budget_cpu_s:.0f} CPU s (see "
                         f"{log}). Fix: a larger --budget-cpu-s or fewer --tune-epochs")
    write_record(record, root, result)
    return result


def is_baseline(trial: dict) -> bool:
    """Whether a recorded trial is its study's baseline trial (``sweep.baseline_trial``: the family's defaults)."""
    return bool(trial["user_attrs"].get("baseline"))


def study_record(study, ledger: dict, args, subset: Path) -> dict:
    """The study as it is recorded: the budget and CPU seconds spent, its launches, every trial as Optuna can create
    it again (state, value, parameters and their distributions, intermediate values, user attributes) with its CPU
    seconds, and the best complete trial (None before one completes)."""
    from optuna.distributions import distribution_to_json

    cpu_of = {n: launch["cpu_s"] for launch in ledger["launches"] for n in launch["trials"]}
    trials = [{"number": t.number, "state": t.state.name, "value": t.values[0] if t.values else None,
               "params": t.params, "cpu_s": cpu_of.get(t.number),
               "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
               "intermediate_values": {str(k): v for k, v in t.intermediate_values.items()},
               "user_attrs": t.user_attrs} for t in study.trials]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    return {"study": study.study_name, "budget_cpu_s": args.budget_cpu_s, "spent_cpu_s": spent_cpu_s(ledger),
            "launches": ledger["launches"], "trials": trials,
            "best": min(complete, key=lambda t: t["value"]) if complete else None, "tune_subset": subset.name}


def write_record(record: Path, root: Path, result: dict) -> None:
    """The study's record (``--record``) with the best trial's ``tuned`` config, the run root written as ``<root>``."""
    tuned = root / "sweeps" / "tuned" / f"{result['study']}.yaml"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(portable_json({**result, "tuned_yaml": tuned.read_text() if tuned.exists() else None}, root))


def rebuild(record: Path, root: Path, subset: Path, args, storage: str, ledger_path: Path) -> None:
    """A study from its record (``--record``) on a root that lacks it (a new machine): its trials added to a new
    study in ``storage`` (numbers, parameters, values and states as they were — a pruned trial's value, its last
    intermediate value, included —, so the sampler goes on as it would have), its launches as the ledger and the
    best trial's ``tuned`` config under ``<root>/sweeps/tuned``. Refused, naming the fix, where the record is not
    this tuning's (another tuning subset, or a larger budget than this run's)."""
    import optuna
    from optuna.distributions import json_to_distribution

    saved = json.loads(record.read_text())
    if saved.get("tune_subset") != subset.name or saved["budget_cpu_s"] > args.budget_cpu_s:
        raise SystemExit(f"{record} holds study {saved['study']} tuned with {saved['budget_cpu_s']:.0f} CPU s on "
                         f"{saved.get('tune_subset')}, not {args.budget_cpu_s:.0f} CPU s on {subset.name}, and "
                         f"{root} has no study of its own. Fix: rerun with that record's subset and at least its "
                         "budget, or move the record aside to tune anew")
    study = optuna.create_study(study_name=saved["study"], storage=storage, direction="minimize")
    study.set_user_attr("objectives", [OBJECTIVE])
    study.add_trials([optuna.trial.create_trial(
        state=optuna.trial.TrialState[t["state"]], value=t["value"],
        params=t["params"], distributions={k: json_to_distribution(d) for k, d in t["distributions"].items()},
        user_attrs=t["user_attrs"], intermediate_values={int(k): v for k, v in t["intermediate_values"].items()})
        for t in sorted(saved["trials"], key=lambda t: t["number"])])
    if saved.get("tuned_yaml"):
        tuned = root / "sweeps" / "tuned" / f"{saved['study']}.yaml"
        tuned.parent.mkdir(parents=True, exist_ok=True)
        tuned.write_text(saved["tuned_yaml"])
    ledger_path.write_text(json.dumps({"launches": saved["launches"]}, indent=1))
    print(f"  {saved['study']}: rebuilt from {record} ({len(saved['trials'])} trials, {saved['spent_cpu_s']:.0f} "
          f"of {args.budget_cpu_s:.0f} CPU s spent)", flush=True)


def seed_stats(rows: list[dict], key: str) -> tuple[float, float, int]:
    """Mean and standard deviation over the seeds of one family's rows (the learning curves' aggregate; the
    deviation 0 for one seed), nan where no row has the metric."""
    stats = next(iter(aggregate(rows).values()), {}).get(key)
    if stats is None:
        return float("nan"), float("nan"), 0
    mean, std, n = stats
    return mean, std or 0.0, n


def margins(rows: dict[str, list[dict]], ours: str = "hedgenet") -> dict:
    """Per baseline family and metric: the :func:`margin_pct` of the seed means (negative: ours lower), with
    the seeds' standard error of that ratio (the two means' errors combined)."""
    out = {}
    for family, theirs in rows.items():
        if family == ours or ours not in rows:
            continue
        out[family] = {}
        for key in MARGIN_METRICS:
            (a, sa, na), (b, sb, nb) = seed_stats(rows[ours], key), seed_stats(theirs, key)
            if not (na and nb) or not np.isfinite(a) or not np.isfinite(b) or b == 0:
                continue
            err = abs(a / b) * np.hypot(sa / np.sqrt(na) / a if a else 0.0, sb / np.sqrt(nb) / b)
            out[family][key] = {"percent": margin_pct(a, b), "err_percent": 100.0 * err, "n_seeds": [na, nb]}
    return out


def merge_rows(record: Path, run: Path, root: Path) -> list[dict]:
    """Add the rows of a learning_curves.py output ``run`` to the rows file ``record`` (one row per family, cells and
    seed: a newer row replaces an older one; the settings of the newest run that added a row kept, which
    ``--reuse`` checks, its seeds those of all rows) and return the record's rows. A run whose rows the record
    holds already (all reused) leaves the record as it was."""
    new = json.loads(run.read_text())
    old = json.loads(record.read_text()) if record.exists() else {"rows": []}
    key = lambda r: (r["family"], r["n_cells"], r["seed"])  # noqa: E731
    before = {key(r): r for r in old["rows"]}
    same = lambda r: {k: v for k, v in json.loads(portable_json(r, root)).items() if k != "reused_from"}  # noqa: E731
    added = {key(r): r for r in new["rows"] if key(r) not in before or same(before[key(r)]) != same(r)}
    if record.exists() and not added:
        return old["rows"]
    rows = before | added
    record.parent.mkdir(parents=True, exist_ok=True)
    merged = {**new, "settings": {**new["settings"], "seeds": sorted({k[2] for k in rows})},
              "rows": [rows[k] for k in sorted(rows)]}
    record.write_text(portable_json(merged, root))
    return merged["rows"]


def learning_curve_rows(args, family: str, extra: list[str], tag: str) -> list[dict]:
    """Rows of ``family`` at ``--cells`` for every seed from learning_curves.py (run or reused) under ``--root``,
    one seed at a time: each finished seed's row goes to the rows record (``--record``), which later runs reuse, so
    a seed trained is never trained again, on this machine or another."""
    record = args.record / f"{tag or f'defaults_{family}_n{args.cells}_e{args.epochs}'}_rows.json"
    out = args.root / f"learning_curves{'_' + tag if tag else ''}.json"
    for seed in args.seeds:
        lc_args = argparse.Namespace(**{**vars(args), "sizes": [args.cells], "families": [family], "extra": extra,
                                        "tag": tag, "seeds": [seed]})
        cmd = [sys.executable, str(Path(__file__).parent / "learning_curves.py"), *options(lc_args)]
        reuse = [*(map(str, args.reuse) if not extra else ()), *([str(record)] if record.exists() else [])]
        if reuse:
            cmd += ["--reuse", *reuse]
        print(f"{family}{' (' + tag + ')' if tag else ' (defaults)'}, seed {seed}: "
              f"{' '.join(map(shlex.quote, cmd[1:]))}", flush=True)
        proc = subprocess.run(cmd, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"learning_curves.py for {family}, seed {seed} failed (exit {proc.returncode}); rerun "
                             "to retry")
        rows = merge_rows(record, out, args.root)
    return [r for r in rows if r["family"] == family and r["n_cells"] == args.cells and r["seed"] in args.seeds]


def report(results: dict) -> str:
    header = ["family", "rows", *METRICS.values(), "trials (complete / pruned / failed)", "tuning CPU s"]
    table = []
    for family, entry in results["families"].items():
        for which in ("tuned", "default"):
            rows = entry.get(f"{which}_rows")
            if not rows:
                continue
            cells = []
            for key in METRICS:
                m, s, n = seed_stats(rows, key)
                cells.append("—" if not n else f"{m:.3g} ± {s:.2g}")
            if which == "tuned":
                states = [t["state"] for t in entry["tuning"]["trials"]]
                trials = f"{states.count('COMPLETE')} / {states.count('PRUNED')} / {states.count('FAIL')}"
                cpu = f"{entry['tuning']['spent_cpu_s']:.0f}"
            else:
                trials = cpu = ""
            label = "tuned (= defaults)" if which == "tuned" and entry.get("tuned_is_defaults") else which
            table.append([family, f"{label}, {len(rows)} seeds", *cells, trials, cpu])
    s = results["settings"]
    text = print_table(header, table, title=f"{s['cells']} cells, {s['epochs']} epochs; tuned on {s['tune_cells']} "
                                            f"cells, {s['tune_epochs']} epochs, {s['budget_cpu_s']:.0f} CPU s per family")
    rows = [[f"HedgeNet vs {family}", *(f"{v['percent']:+.1f} ± {v['err_percent']:.1f} %" if (v := m.get(k)) else "—"
                                       for k in MARGIN_METRICS),
             f"{PAPER_MARGINS[family]:+.0f} %" if family in PAPER_MARGINS else "—"]
            for family, m in results["margins"].items()]
    if rows:
        text += print_table(["tuned against tuned", *(METRICS[k] for k in MARGIN_METRICS), "paper (phonons)"], rows,
                            title="margins (negative: HedgeNet's error lower)")
    return text


def main(argv=None) -> int:
    from hedgenet.data.store import DatasetStore

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("outputs/learning_curves"),
                   help="the learning-curve root: its pool, test cells, reference phonons; studies and rows go there")
    p.add_argument("--families", nargs="+", default=list(SEARCH), choices=list(SEARCH))
    p.add_argument("--cells", type=int, default=96, help="labelled cells of the evaluation rows")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30, help="epochs of the evaluation rows")
    p.add_argument("--val-fraction", type=float, default=0.05, help="data.val_fraction of the evaluation rows")
    p.add_argument("--tune-cells", type=int, default=48, help="cells of the tuning subset (the seed-0 subset)")
    p.add_argument("--tune-epochs", type=int, default=15)
    p.add_argument("--tune-val-fraction", type=float, default=0.2,
                   help="validation share of the tuning subset: the objective is measured on it")
    p.add_argument("--budget-cpu-s", type=float, default=3600.0, help="training CPU seconds of each family's study")
    p.add_argument("--tune-extra", nargs="*", default=[], metavar="KEY=VALUE",
                   help="further hedgenet-sweep overrides for every family's trials")
    p.add_argument("--defaults", action="store_true", help="also the untuned rows of the same cells and seeds")
    p.add_argument("--reuse", type=Path, nargs="*", default=[], metavar="JSON",
                   help="with --defaults: learning_curves.json of an earlier run with the same settings")
    p.add_argument("--workers", type=int, default=2, help="labelling processes (learning_curves.py)")
    p.add_argument("--pool-cells", type=int, default=None, help="handed on to learning_curves.py")
    p.add_argument("--label-extra", nargs="*", default=[], metavar="KEY=VALUE", help="handed on to learning_curves.py")
    p.add_argument("--phonon-supercell", type=int, nargs=2, default=[7, 7], metavar=("N1", "N2"))
    p.add_argument("--tune-only", action="store_true", help="stop after the studies (no evaluation rows)")
    p.add_argument("--defaults-only", action="store_true",
                   help="only the untuned rows (no studies, no tuned rows): they do not depend on the studies")
    p.add_argument("--record", type=Path, default=Path(__file__).parents[1] / "docs" / "figures" / "tuned_margins",
                   help="where each finished study (trials, CPU s, the best trial's tuned config) and each finished "
                        "evaluation row are recorded, and taken from on a root without them: the work outlives its "
                        "machine")
    args = p.parse_args(argv)
    args.root = args.root.resolve()
    if args.tune_only and args.defaults_only:
        raise SystemExit("--tune-only and --defaults-only exclude each other. Fix: give one of them")
    args.defaults = args.defaults or args.defaults_only
    if args.tune_cells > args.cells:
        raise SystemExit(f"--tune-cells {args.tune_cells} > --cells {args.cells}: tune on at most the evaluation "
                         "cells (the tuning subset is the seed-0 one of that size, nested in the evaluation subset)")
    scale = pool_scale(max(args.cells, args.pool_cells or 0))
    pool = args.root / "data" / f"ab_bilayer_graphene_pool_x{scale}.h5"
    if not pool.exists():
        raise SystemExit(f"no learning-curve pool {pool}. Fix: run benchmarks/learning_curves.py --root {args.root} "
                         f"--sizes {args.cells} (with the same --pool-cells / --label-extra) first")
    ids = DatasetStore(pool).ids()
    subset = write_subset(pool, args.root / "data" / "subsets" / f"{pool.stem}_seed0_n{args.tune_cells}.h5",
                          nested_subsets(ids, [args.tune_cells], 0)[args.tune_cells])

    results = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                            if k not in ("reuse",)} | {"pool": str(pool), "tune_subset": str(subset),
                                                       "objective": OBJECTIVE, "search": {f: SEARCH[f] for f in args.families},
                                                       "command": " ".join(map(shlex.quote, sys.argv))},
               "families": {}, "margins": {}}
    for family in args.families:
        results["families"][family] = {}
        if args.defaults_only:
            continue
        print(f"tuning {family}", flush=True)
        results["families"][family]["tuning"] = tune(family, args.root, subset, args, args.tune_extra)
        best = results["families"][family]["tuning"]["best"]
        print(f"  best trial {best['number']}: {OBJECTIVE} {best['value']:.2f} meV/Å, {best['params']}", flush=True)
    if not args.tune_only:
        for family, entry in results["families"].items():
            if not args.defaults_only:
                name = entry["tuning"]["study"]
                entry["tuned_is_defaults"] = is_baseline(entry["tuning"]["best"])
                if entry["tuned_is_defaults"]:  # the same config, the same seeds: the same training, not run twice
                    print(f"{family}: the study's best is its baseline trial, the defaults; its tuned rows are the "
                          "untuned rows", flush=True)
                    entry["tuned_rows"] = learning_curve_rows(args, family, [], "")
                else:
                    entry["tuned_rows"] = learning_curve_rows(args, family, [f"tuned={name}"], name)
            if args.defaults:  # the tuned rows where they are the untuned ones: not gathered twice
                entry["default_rows"] = (entry["tuned_rows"] if entry.get("tuned_is_defaults")
                                         else learning_curve_rows(args, family, [], ""))
        results["margins"] = margins({f: e["tuned_rows"] for f, e in results["families"].items() if "tuned_rows" in e})
    out = args.root / f"tuned_margins{'_defaults' if args.defaults_only else ''}.json"
    out.write_text(portable_json(results, args.root))
    out.with_suffix(".md").write_text(report(results).strip() + "\n")
    print(f"wrote {out}, {out.with_suffix('.md')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
