"""How much reference data does a target accuracy cost? Test errors against the number of labelled cells, per model family.

Labels (once, cached under ``--root``) one pool of 5×5 AB bilayer graphene cells with the default recipe of
``hedgenet-label`` scaled up (more rattles per amplitude and thermal samples per temperature, so that the
pool holds at least the largest size; the rigid-layer and strained cells as they are), a held-out test set
(rattles and thermal samples, another ``seed=``) and the reference's phonons on the ``--phonon-supercell``.
Then, per seed s, draws nested subsets of the pool (the first N ids of a permutation seeded by s; written as
dataset files: the pool less the other samples) and trains each family on each subset with the main job's
train settings (batch 1, plateau patience 4, float32; ``--epochs``, ``data.val_fraction`` small, model
initialised with seed s), then measures on the held-out test set:

- force MAE (meV/Å) and H MAE (meV, families with a Hamiltonian head), from the training run's test metrics;
- phonon MAE against the reference on Γ–M–K–Γ (THz) and the Γ interlayer shear and breathing modes (THz),
  model and reference (``hedgenet-phonons compare_with=`` the reference run).

Families (``--families``; the arms of ``experiment=compare_baselines``, conf/variant/): ``hedgenet``
(HedgeNet small, intra/interlayer relations, task joint; ``hedgenet_no_pair_sum`` and ``hedgenet_2body`` the
same without the on-site pair sum, and also without the per-atom square), ``mace`` (MACE, task forces), ``deeph_e3``
(DeepH-E3-like network, task joint).

    OMP_NUM_THREADS=1 python benchmarks/learning_curves.py --root outputs/learning_curves

Writes ``<root>/learning_curves.json`` (settings, reference, one row per family × cells × seed),
``learning_curves.md`` (the table, also printed) and ``learning_curves.png`` (log–log, error against cells).
Resumable: a finished (family, cells, seed, epochs) row is kept in ``<root>/rows/`` and not rerun, and every
hedgenet-* run directory under ``<root>/runs`` whose summary.json exists is reused (a training only if it ran the
epochs asked: a finished run given more epochs continues from its checkpoint); a stopped benchmark
continues where it stopped; ``--reuse <an earlier learning_curves.json>`` takes the rows of a run with the same
settings on another machine (docs/figures/ keeps the measured one). ``hedgenet-compare --learning-curves
<root>/learning_curves.json`` puts the table and the figure into a comparison report.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import portable_json, print_table  # noqa: E402
from interlayer_ablation import cli, gamma_modes  # noqa: E402

FAMILIES = {
    "hedgenet": ["variant=hedgenet", "task=joint"],
    # on-site energies from the node features only (no sum over neighbours): HedgeNet before the pair sum
    "hedgenet_no_pair_sum": ["variant=hedgenet", "task=joint", "model.size.onsite_pair_sum=false"],
    # and messages only (no square per atom): HedgeNet before the body order
    "hedgenet_2body": ["variant=hedgenet", "task=joint", "model.size.correlation=1", "model.size.onsite_pair_sum=false"],
    "mace": ["variant=mace"],  # the variant sets task=forces (no Hamiltonian head)
    "deeph_e3": ["variant=deeph_e3", "task=joint"],
}
"""Model families: hedgenet-train overrides (the variants of ``experiment=compare_baselines``)."""

TRAIN = ["trainer.precision=32-true", "data.batch_size=1", "train.scheduler.patience=4", "logger=csv"]
"""The main job's train settings (conf/pipeline.yaml ``overrides.train``) besides the model and epochs."""

RECIPE_UNIT = {"rattle_per_amplitude": 6, "thermal_per_temperature": 4, "cells": 24, "fixed_cells": 24}
"""The default recipe of conf/label.yaml: 6 rattles at each of 2 amplitudes and 4 thermal samples at each of
3 temperatures (24 cells, scaled by ``pool_scale``), plus 20 rigid-layer and 4 strained cells (24, fixed)."""

PHONONS = ["reference.block_cutoff=5.0"]
"""The material's block cutoff (Å; the labelling cell's): a 5×5 phonon cell is too narrow for xTB's default."""

TEST_SET = ["dataset.rattle.n_per_amplitude=3", "dataset.thermal.n_per_temperature=3", "dataset.rigid.shifts_A=[]",
            "dataset.strain.strains=[]"]
"""Held-out test cells: 3 rattles per amplitude and 3 thermal samples per temperature (15 cells)."""


def pool_scale(max_cells: int) -> int:
    """Factor on the default recipe's rattles and thermal samples for a pool of at least ``max_cells`` cells."""
    return max(1, math.ceil((max_cells - RECIPE_UNIT["fixed_cells"]) / RECIPE_UNIT["cells"]))


def nested_subsets(ids, sizes, seed: int) -> dict[int, list[int]]:
    """N → the sorted first N ids of a permutation of ``ids`` seeded by ``seed``: every smaller subset lies
    inside every larger one, and the same (ids, seed) always gives the same subsets."""
    ids = sorted(int(i) for i in ids)
    if max(sizes) > len(ids):
        raise ValueError(f"subset of {max(sizes)} cells asked from a pool of {len(ids)}")
    perm = [ids[k] for k in np.random.default_rng(seed).permutation(len(ids))]
    return {int(n): sorted(perm[:n]) for n in sizes}


def write_subset(pool: Path, path: Path, keep: list[int]) -> Path:
    """``path``: a copy of the ``pool`` dataset without the samples outside ``keep`` (reused when it holds
    exactly those; a copy left half-made by a stop is redone)."""
    from hedgenet.data.store import DatasetStore

    if path.exists() and DatasetStore(path).ids() == sorted(keep):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pool, path)
    store = DatasetStore(path)
    store.drop(sorted(set(store.ids()) - set(keep)))
    return path


def reuse_rows(earlier: Path, settings: dict, rows_dir: Path, suffix: str) -> int:
    """Copy the rows of an earlier run's ``learning_curves.json`` into ``rows_dir`` as finished rows (the pool is
    labelled deterministically, so the same settings give the same cells); refused when its settings differ.
    Returns the number of rows taken (a row already in ``rows_dir`` is kept)."""
    data = json.loads(Path(earlier).read_text())
    theirs = data.get("settings", {})
    for key, value in settings.items():
        mine, other = value, theirs.get(key)
        if key == "train_overrides":  # their families may be more or fewer than this run's
            mine = {f: v for f, v in value.items() if f in (other or {})}
            other = {f: v for f, v in (other or {}).items() if f in value}
        if mine != other:
            raise SystemExit(f"--reuse {earlier}: its {key} is {other!r}, this run's {mine!r}; its rows are not rows "
                             "of this benchmark. Fix: rerun with that file's settings or drop --reuse")
    n = 0
    for row in data.get("rows", []):
        name = f"{row['family']}_n{row['n_cells']}_seed{row['seed']}{suffix}"
        target = rows_dir / f"{name}.json"
        if row.get("epochs") == settings["epochs"] and not target.exists():
            target.write_text(json.dumps({**row, "reused_from": str(earlier)}, indent=1))
            n += 1
    return n


def timed(fn, *args):
    """``fn(*args)`` and the CPU seconds (user + system) of the child processes it waited for."""
    def children():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    c0, t0 = children(), time.perf_counter()
    out = fn(*args)
    return out, children() - c0, time.perf_counter() - t0


def options(args) -> list[str]:
    """The command-line options that reproduce ``args``, every one explicit."""
    parts = ["--root", str(args.root), "--sizes", *map(str, args.sizes), "--families", *args.families,
             "--seeds", *map(str, args.seeds), "--epochs", str(args.epochs), "--val-fraction", str(args.val_fraction),
             "--workers", str(args.workers), "--phonon-supercell", *map(str, args.phonon_supercell)]
    if args.pool_cells:
        parts += ["--pool-cells", str(args.pool_cells)]
    if args.label_extra:
        parts += ["--label-extra", *args.label_extra]
    if args.extra:
        parts += ["--extra", *args.extra]
    if args.tag:
        parts += ["--tag", args.tag]
    return parts


def command_line(args) -> str:
    """The command that reproduces this benchmark, every option explicit."""
    return "OMP_NUM_THREADS=1 python benchmarks/learning_curves.py " + " ".join(map(shlex.quote, options(args)))


def run_one(args, root: Path, runs: Path, family: str, subset: Path, test: Path, ref_ph: Path, name: str) -> dict:
    """Train one family on one subset, then its phonons against the reference: the row."""
    train_dir = runs / f"train_{name}"
    metrics, train_cpu, train_wall = timed(
        cli, "train", root, train_dir, *FAMILIES[family], *TRAIN, f"data.paths=[{subset}]", f"data.test_paths=[{test}]",
        f"data.val_fraction={args.val_fraction}", f"seed={args.seed}", f"train.max_epochs={args.epochs}", *args.extra)
    row = {"family": family, "n_cells": args.n, "seed": args.seed, "epochs": args.epochs,
           "n_train": metrics.get("n_train"), "n_val": metrics.get("n_val"), "n_test": metrics.get("n_test"),
           "forces_mae_meV_A": metrics.get("test/forces_mae"), "H_mae_meV": metrics.get("test/H_all_mae"),
           "train_cpu_s": train_cpu, "train_wall_s": train_wall, "train_dir": str(train_dir),
           "phonon_mae_THz": None, "gamma_shear_THz": None, "gamma_breathing_THz": None, "phonons_cpu_s": 0.0}
    if row["forces_mae_meV_A"] is not None:  # the family predicts forces: phonons
        ph_dir = runs / f"phonons_{name}"
        ph, row["phonons_cpu_s"], _ = timed(
            cli, "phonons", root, ph_dir, f"phonons.supercell=[{','.join(map(str, args.phonon_supercell))}]", *PHONONS,
            "calculator=model", f"model_path={train_dir / 'model.pt'}", f"compare_with={ref_ph}")
        modes = gamma_modes(ph_dir)
        row.update(phonon_mae_THz=ph["frequency_mae_vs_compare_THz"], gamma_shear_THz=modes["interlayer shear"],
                   gamma_breathing_THz=modes["layer breathing"])
    return row


def main(argv=None) -> int:
    from hedgenet.data.store import DatasetStore
    from hedgenet.report import learning_curves as lc

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("outputs/learning_curves"),
                   help="HEDGENET_ROOT of every run: data, caches, run directories and the results")
    p.add_argument("--sizes", type=int, nargs="+", default=[12, 24, 48, 96, 192],
                   help="labelled cells per training file (validation cells included)")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="each seed draws its own nested subsets and initialises the models")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--val-fraction", type=float, default=0.05,
                   help="data.val_fraction of each subset (at least one cell; it drives the LR plateau)")
    p.add_argument("--workers", type=int, default=2, help="labelling processes")
    p.add_argument("--pool-cells", type=int, default=None,
                   help="label the pool for at least this many cells (default: the largest size): rows of some "
                        "sizes, or more seeds, against the pool of a larger run (the same cells and subsets)")
    p.add_argument("--phonon-supercell", type=int, nargs=2, default=[7, 7], metavar=("N1", "N2"),
                   help="phonon supercell of model and reference (7×7: xTB's Γ-only phonons are sound there)")
    p.add_argument("--label-extra", nargs="*", default=[], metavar="KEY=VALUE",
                   help="further hedgenet-label overrides for the pool, e.g. dataset.rigid.shifts_A=[] "
                        "(use another --root: the pool is cached by its size only)")
    p.add_argument("--extra", nargs="*", default=[], metavar="KEY=VALUE", help="further hedgenet-train overrides")
    p.add_argument("--tag", default="", help="suffix of the run names (runs with other --extra)")
    p.add_argument("--reuse", type=Path, nargs="*", default=[], metavar="JSON",
                   help="learning_curves.json of an earlier run with the same settings (e.g. the one in docs/figures/, "
                        "on another machine): its rows count as finished")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: the table and figure of the finished rows (the missing ones are listed)")
    args = p.parse_args(argv)
    args.sizes = sorted(set(args.sizes))
    root = args.root.resolve()
    runs, data, rows_dir = root / "runs", root / "data", root / "rows"
    for d in (runs, rows_dir):
        d.mkdir(parents=True, exist_ok=True)
    command = command_line(args)
    print(f"reproduce: {command}", flush=True)

    scale = pool_scale(max(args.sizes + [args.pool_cells or 0]))
    print("labelling (cached after the first run)", flush=True)
    common = [f"dataset.n_workers={args.workers}", "progress=false"]
    cpu_label = 0.0
    for run_name, overrides in (
        (f"label_pool_x{scale}", [f"dataset.name=ab_bilayer_graphene_pool_x{scale}",
                                  f"dataset.rattle.n_per_amplitude={RECIPE_UNIT['rattle_per_amplitude'] * scale}",
                                  f"dataset.thermal.n_per_temperature={RECIPE_UNIT['thermal_per_temperature'] * scale}",
                                  *args.label_extra]),
        ("label_test", ["dataset.name=ab_bilayer_graphene_test", "seed=777", *TEST_SET]),
    ):
        _, cpu, _ = timed(cli, "label", root, runs / run_name, *overrides, *common)
        cpu_label += cpu
    pool, test = data / f"ab_bilayer_graphene_pool_x{scale}.h5", data / "ab_bilayer_graphene_test.h5"
    pool_ids = DatasetStore(pool).ids()
    if len(pool_ids) < max(args.sizes):
        raise SystemExit(f"the pool {pool} holds {len(pool_ids)} cells ({len(DatasetStore(pool).failed_ids())} failed "
                         f"to label), fewer than the largest size {max(args.sizes)}: drop that size, or label more "
                         "cells into another --root with --label-extra dataset.rattle.n_per_amplitude=...")
    print(f"  pool: {len(pool_ids)} cells ({pool.name}); test: {len(DatasetStore(test))} cells", flush=True)
    n1, n2 = args.phonon_supercell
    ref_ph = runs / f"phonons_reference_{n1}x{n2}"
    _, cpu_ref, _ = timed(cli, "phonons", root, ref_ph, f"phonons.supercell=[{n1},{n2}]", *PHONONS)
    ref_modes = gamma_modes(ref_ph)
    reference = {"gamma_shear_THz": ref_modes["interlayer shear"], "gamma_breathing_THz": ref_modes["layer breathing"]}
    print(f"  labelling {cpu_label:.0f} CPU s, reference phonons {cpu_ref:.0f} CPU s (0 when cached)", flush=True)

    rows, failed, missing = [], [], []
    suffix = f"_e{args.epochs}{'_' + args.tag if args.tag else ''}"
    settings = {"epochs": args.epochs, "val_fraction": args.val_fraction, "phonon_supercell": args.phonon_supercell,
                "pool_cells": len(pool_ids), "train_overrides": {f: FAMILIES[f] + TRAIN + args.extra for f in args.families}}
    for earlier in args.reuse:
        n_reused = reuse_rows(earlier, settings, rows_dir, suffix)
        print(f"  {n_reused} finished rows taken from {earlier}", flush=True)
    for seed in args.seeds:
        subsets = nested_subsets(pool_ids, args.sizes, seed)
        for n in args.sizes:
            subset = write_subset(pool, data / "subsets" / f"{pool.stem}_seed{seed}_n{n}.h5", subsets[n])
            for family in args.families:
                name = f"{family}_n{n}_seed{seed}{suffix}"
                row_file = rows_dir / f"{name}.json"
                if row_file.exists():
                    rows.append(json.loads(row_file.read_text()))
                    continue
                if args.report_only:
                    missing.append(name)
                    continue
                print(f"{family}, {n} cells, seed {seed}", flush=True)
                args.n, args.seed = n, seed
                try:
                    row = run_one(args, root, runs, family, subset, test, ref_ph, name)
                except SystemExit as err:  # a failed run (its log beside its directory): the others go on
                    print(f"  FAILED: {str(err)[-600:]}", flush=True)
                    failed.append(name)
                    continue
                cpu = row["train_cpu_s"] + row["phonons_cpu_s"]
                row["cpu_s_per_cell_epoch"] = row["train_cpu_s"] / (n * args.epochs)
                print(f"  CPU {cpu:.0f} s (train {row['train_cpu_s']:.0f} s = "
                      f"{row['cpu_s_per_cell_epoch']:.3f} s per cell and epoch, phonons {row['phonons_cpu_s']:.0f} s)",
                      flush=True)
                row_file.write_text(json.dumps(row, indent=1))
                rows.append(row)

    results = {"settings": {"command": command, "sizes": args.sizes, "families": args.families, "seeds": args.seeds,
                            "pool": str(pool), "test": str(test), **settings},
               "reference": reference, "rows": rows}
    out = root / f"learning_curves{'_' + args.tag if args.tag else ''}.json"
    out.write_text(portable_json(results, root))
    header, table = lc.table(results)
    text = print_table(header, table, title=f"5×5 AB bilayer graphene: test errors against labelled cells "
                                              f"({args.epochs} epochs; mean ± std over seeds {args.seeds})")
    out.with_suffix(".md").write_text(text.strip() + "\n")
    figure = lc.plot(results, out.with_suffix(".png"))
    print(f"wrote {out}, {out.with_suffix('.md')}" + (f", {figure}" if figure else ""), flush=True)
    if missing:
        print(f"{len(missing)} rows not run yet (--report-only): {', '.join(missing)}", flush=True)
    if failed:
        print(f"{len(failed)} runs failed (rerun to retry them): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
