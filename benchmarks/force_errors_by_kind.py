"""Where a model's force error lives: the test force MAE of each kind of held-out cell (rattles by amplitude,
thermal samples by temperature, rigid-layer cells), beside the mean reference |F| of those cells.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/force_errors_by_kind.py --test <held-out dataset.h5> \\
        --model <run>/model.pt [<run>/model.pt ...] [--names a b ...] [--out <dir>]

Per model and kind: cells, force MAE and out-of-plane (z) MAE (meV/Å), the reference's mean |F| component
(meV/Å) and the MAE relative to it. A force MAE target means different things on cells whose forces differ
threefold (0.02 Å rattles against 0.05 Å ones); the relative error says whether a model is equally good on all.
Writes ``<out>/force_errors_by_kind.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import report  # noqa: E402


def kind_of(sample: dict) -> str:
    """The cell's kind as labelled: ``rattle 0.05 Å``, ``thermal 300 K``, ``rigid`` or the bare kind."""
    kind = str(sample.get("kind", "unknown"))
    if "amplitude_A" in sample:
        return f"{kind} {float(sample['amplitude_A']):g} Å"
    if "temperature_K" in sample:
        return f"{kind} {float(sample['temperature_K']):g} K"
    return kind


def errors_by_kind(model, samples) -> dict[str, dict]:
    """``{kind: {n_cells, forces_mae_meV_A, forces_z_mae_meV_A, mean_abs_force_meV_A}}`` plus ``all``."""
    from hedgenet.training.evaluate import predict_batches

    build = model.graph_builder()
    graphs = [build(s) for s in samples]
    per: dict[str, list] = {}
    for s, (pred, batch) in zip(samples, predict_batches(model, graphs, batch_size=1)):
        err = np.abs(pred["forces"].numpy() - batch.forces.numpy())
        ref = np.abs(batch.forces.numpy())
        for key in (kind_of(s), "all"):
            per.setdefault(key, []).append((err.sum(), err[:, 2].sum(), ref.sum(), err.size, len(err)))
    out = {}
    for key in sorted(per, key=lambda k: k == "all"):  # the kinds as they come, all of them last
        rows = per[key]
        a = np.array(rows, dtype=float)
        out[key] = {"n_cells": len(rows), "forces_mae_meV_A": 1e3 * a[:, 0].sum() / a[:, 3].sum(),
                    "forces_z_mae_meV_A": 1e3 * a[:, 1].sum() / a[:, 4].sum(),
                    "mean_abs_force_meV_A": 1e3 * a[:, 2].sum() / a[:, 3].sum()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--test", required=True, help="held-out labelled dataset (.h5)")
    p.add_argument("--model", nargs="+", required=True, help="model.pt files")
    p.add_argument("--names", nargs="+", help="a name per model (default: its run directory's)")
    p.add_argument("--out", default="outputs/benchmarks", help="folder of the JSON")
    args = p.parse_args()
    names = args.names or [Path(m).parent.name for m in args.model]
    if len(names) != len(args.model):
        p.error(f"--names gives {len(names)} names for {len(args.model)} models: give one per model")

    import torch

    from hedgenet.models.io import load_model
    from hedgenet.training.data import load_samples

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    samples, _, _ = load_samples([args.test])
    rows, results = [], {"test": args.test, "models": {}}
    for name, path in zip(names, args.model):
        res = errors_by_kind(load_model(path), samples)
        results["models"][name] = {"path": path, "by_kind": res}
        for kind, r in res.items():
            rows.append([name, kind, r["n_cells"], r["forces_mae_meV_A"], r["forces_z_mae_meV_A"],
                         r["mean_abs_force_meV_A"], r["forces_mae_meV_A"] / r["mean_abs_force_meV_A"]])
    report(["model", "cells", "n", "force MAE (meV/Å)", "F_z MAE (meV/Å)", "mean |F| (meV/Å)", "MAE / mean |F|"],
           rows, f"Force errors by kind of held-out cell ({args.test})", results,
           Path(args.out) / "force_errors_by_kind.json")


if __name__ == "__main__":
    main()
