"""Can the model fit the interlayer binding it is trained on? A capacity test on the rigid-layer cells.

Takes the production benchmark's labelled pool (``benchmarks/production_ab_bilayer.sh``: its ``ROOT``), keeps its
rigid-layer cells (the binding curve from Δd = −0.25 to +3.2 Å and the sliding line; ``--others N`` adds N more
cells of the pool, drawn with ``--seed``) and trains HedgeNet on them alone (``task=forces``, the production
recipe's settings: xTB's 7×7 force constants as the force-constant target, interlayer-mode loss 2) once per
``--variant NAME [OVERRIDES ...]`` (hedgenet-train overrides on top of the recipe). Then, per variant:

* the top layer's mean force per atom normal to the layers (meV/Å) on its own training cells at the Δd of
  ``--probe-dz``, against the reference's: what the fit leaves of the binding curve it was shown;
* the held-out binding curve and sliding line of ``benchmarks/interlayer_energies.py`` (labelled once under
  ``<root>/interlayer``, shared with the production benchmark): the error at +0.45 / +0.8 / +1.2 / +2.0 Å, the
  largest within ±0.2 Å and along the sliding line (meV/atom).

    OMP_NUM_THREADS=2 python benchmarks/interlayer_capacity.py --root outputs/production_ab_bilayer \\
        --variant recipe --variant no_modes train.loss_weights.interlayer_modes=0

Prints the table and writes ``<root>/capacity/interlayer_capacity.json``. Resumable: a variant whose training
finished is not retrained (the run directories are under ``<root>/capacity/runs``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table  # noqa: E402
from interlayer_ablation import cli  # noqa: E402
from learning_curves import TRAIN, write_subset  # noqa: E402

RECIPE = ["variant=hedgenet", "task=forces", *TRAIN, "train.loss_weights.interlayer_modes=2.0"]
"""The production benchmark's training settings that act on forces (its model, losses and optimiser)."""

PROBE_DZ_A = [0.4, 0.6, 0.9, -0.25]
"""Δd (Å) of the training cells whose layer force is compared (the production pool has cells at each)."""

HELD_OUT_DZ_A = [0.45, 0.8, 1.2, 2.0]
"""Δd (Å) of the held-out binding-curve cells reported one by one (interlayer_energies.py's far cells)."""


def layer_force_meV_A(atoms, forces: np.ndarray) -> float:
    """The top layer's mean force per atom normal to the layers (meV/Å; negative: towards the other layer)."""
    top = np.asarray(atoms.arrays["layer"]) == 1
    return float(1e3 * np.asarray(forces)[top, 2].mean())


def rigid_cells(pool: Path) -> tuple[list[int], list[int], dict[float, dict]]:
    """(rigid sample ids, the other ids, {Δd: sample} of the rigid cells moved normal to the layers only)."""
    from hedgenet.data.store import DatasetStore

    rigid, other, by_dz = [], [], {}
    for s in DatasetStore(pool).iter_samples():
        if str(s.get("kind", "")) == "rigid":
            rigid.append(int(s["sample_id"]))
            dx, dy, dz = (float(v) for v in s["shift_A"])
            if dx == 0 and dy == 0:
                by_dz[round(dz, 4)] = s
        else:
            other.append(int(s["sample_id"]))
    if not rigid:
        raise SystemExit(f"{pool} holds no rigid-layer cells: label the pool with benchmarks/production_ab_bilayer.sh")
    return rigid, other, by_dz


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="the production benchmark's ROOT (its labelled pool)")
    p.add_argument("--pool", type=Path, default=None,
                   help="the pool dataset (default: <root>/data/ab_bilayer_graphene_pool_x15.h5)")
    p.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "OVERRIDE"), required=True,
                   help="a name and its hedgenet-train overrides on top of the recipe; repeat for more")
    p.add_argument("--others", type=int, default=0, help="cells of the pool added to the rigid ones")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0, help="the model's seed and the draw of --others")
    p.add_argument("--probe-dz", type=float, nargs="+", default=PROBE_DZ_A)
    args = p.parse_args(argv)
    root = args.root.resolve()
    pool = (args.pool or root / "data" / "ab_bilayer_graphene_pool_x15.h5").resolve()
    if not pool.exists():
        p.error(f"no pool at {pool}: run benchmarks/production_ab_bilayer.sh with ROOT={args.root} first")
    names = [v[0] for v in args.variant]
    if len(set(names)) != len(names):
        p.error(f"--variant names repeat: {names}")
    rigid, other, by_dz = rigid_cells(pool)
    missing = [dz for dz in args.probe_dz if round(dz, 4) not in by_dz]
    if missing:
        p.error(f"--probe-dz {missing}: no rigid cell of the pool at that Δd (it has {sorted(by_dz)})")
    keep = sorted(rigid + [int(i) for i in np.random.default_rng(args.seed).permutation(other)[: args.others]])
    work = root / "capacity"
    subset = write_subset(pool, work / "subsets" / f"rigid_plus{args.others}_seed{args.seed}.h5", keep)
    training_shifts = [[float(v) for v in s["shift_A"]] for s in by_dz.values()]

    from hedgenet.calculators import ModelCalculator
    from hedgenet.data.store import sample_atoms
    from interlayer_energies import main as interlayer_energies

    ref = {dz: layer_force_meV_A(sample_atoms(by_dz[round(dz, 4)]), by_dz[round(dz, 4)]["forces"])
           for dz in args.probe_dz}
    rows, results = [], {"settings": {"pool": str(pool), "n_cells": len(keep), "n_rigid": len(rigid),
                                      "others": args.others, "epochs": args.epochs, "seed": args.seed,
                                      "recipe": RECIPE, "probe_dz_A": args.probe_dz},
                         "reference_layer_force_meV_A": {str(k): v for k, v in ref.items()}, "variants": {}}
    for name, *overrides in args.variant:
        key = f"{name}_n{len(keep)}_seed{args.seed}_e{args.epochs}"
        run = work / "runs" / f"train_{key}"
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cli("train", root, run, *RECIPE, f"data.paths=[{subset}]", "data.val_fraction=0.05", f"seed={args.seed}",
            f"train.max_epochs={args.epochs}", *overrides)
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        calc = ModelCalculator(str(run / "model.pt"))
        model_f = {}
        for dz in args.probe_dz:
            atoms = sample_atoms(by_dz[round(dz, 4)])
            atoms.calc = calc
            model_f[dz] = layer_force_meV_A(atoms, atoms.get_forces())
        tag = f"capacity_{key}"
        interlayer_energies(["--root", str(root / "interlayer"), "--model", str(run / "model.pt"), "--names", name,
                             "--tag", tag, "--training-shifts", json.dumps(training_shifts)])
        e = json.loads((root / "interlayer" / f"interlayer_energies_{tag}.json").read_text())["models"][name]
        curve = {round(c["x"], 4): c["error_meV_atom"] for c in e["cells"] if c["set"] == "binding curve"}
        near = max(abs(v) for x, v in curve.items() if abs(x) <= 0.2 + 1e-9)
        far = [curve.get(dz, float("nan")) for dz in HELD_OUT_DZ_A]
        results["variants"][key] = {
            "settings": {k: results["settings"][k] for k in ("n_cells", "others", "epochs", "seed")},
            "overrides": overrides, "train_dir": str(run),
            "train_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
            "layer_force_meV_A": {str(k): v for k, v in model_f.items()},
            "binding_far_error_meV_atom": dict(zip(map(str, HELD_OUT_DZ_A), far)),
            "binding_near_max_meV_atom": near,
            "sliding_max_meV_atom": e["sliding line"]["max_meV_atom"]}
        rows.append([name, " ".join(overrides) or "(the recipe)", *[f"{model_f[dz]:.1f}" for dz in args.probe_dz],
                     " / ".join(f"{v:+.2f}" for v in far), near, e["sliding line"]["max_meV_atom"]])
    rows.insert(0, ["reference", "", *[f"{ref[dz]:.1f}" for dz in args.probe_dz], "", "", ""])
    print_table(["variant", "overrides", *[f"F_z {dz:+g} Å" for dz in args.probe_dz],
                 "held-out E(d) error " + " / ".join(f"{dz:+g}" for dz in HELD_OUT_DZ_A) + " Å",
                 "E(d) max ±0.2 Å", "sliding max"], rows,
                title=f"{len(keep)} training cells ({len(rigid)} rigid), {args.epochs} epochs, seed {args.seed}: the top "
                      "layer's mean force per atom on its training cells (meV/Å); held-out errors (meV/atom)")
    out = work / "interlayer_capacity.json"
    old = json.loads(out.read_text()) if out.exists() else {"variants": {}}
    results["variants"] = {**old.get("variants", {}), **results["variants"]}  # earlier invocations' variants kept
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
