"""A single model's last-layer uncertainty against a committee's spread, on the same held-out cells.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/uncertainty_single_model.py \\
        --committee <hedgenet-train committee.size=K run> --train <the members' training dataset.h5> \\
        --test <held-out dataset.h5> [--regularization 1e-4 1e-3 1e-2]

For each member alone, the last-layer estimate (:func:`hedgenet.training.last_layer.fit_last_layer`) is fitted on the training cells
(every cell of ``--train``) and ranks its own errors on the held-out cells (and, for the blocks, the training
error of each block's kind and length without the atoms' variance, to show what the variance adds); the
committee ranks the error of its mean by its spread. Printed per estimator: the Spearman correlation of spread and error for forces per
atom and H and S per block, the calibrated scale, and the seconds per held-out cell of the predictions the
estimate needs (one model's forward pass and its features, or K members'). Writes
``<out>/uncertainty_single_model.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import report  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--committee", required=True, help="committee.json or the run directory holding it")
    p.add_argument("--train", nargs="+", required=True, help="the dataset files the members were trained on")
    p.add_argument("--test", nargs="+", required=True, help="held-out dataset files")
    p.add_argument("--regularization", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    p.add_argument("--out", type=Path, default=Path("outputs/uncertainty_single_model"))
    args = p.parse_args()

    from hedgenet.models.committee import read_committee
    from hedgenet.models.io import load_model
    from hedgenet.training.committee import calibration_statistics, spread_and_error
    from hedgenet.training.last_layer import fit_last_layer, last_layer_features
    from hedgenet.training.last_layer import spread_and_error as last_layer_spread_and_error
    from hedgenet.training.data import load_samples

    info = read_committee(args.committee)
    models = [load_model(m) for m in info["member_paths"]]
    build = models[0].graph_builder()
    train = [build(s) for s in load_samples(args.train)[0]]
    test = [build(s) for s in load_samples(args.test)[0]]
    rows, out = [], {}

    def row(name, result, seconds):
        out[name] = {q: {k: r[k] for k in ("spearman", "scale", "rms_error", "n")} for q, r in result.items()}
        out[name]["seconds_per_cell"] = seconds
        rows.append([name, *[result[q]["spearman"] or float("nan") for q in ("forces", "H", "S")],
                     result["forces"]["scale"] or float("nan"),
                     result["H"]["scale"] or float("nan"), seconds])
        print(name, out[name], flush=True)

    t0 = time.perf_counter()
    committee = spread_and_error(models, test)
    row(f"committee of {len(models)}", {q: calibration_statistics(*v) for q, v in committee.items()},
        (time.perf_counter() - t0) / len(test))
    for k, model in enumerate(models):
        for lam in args.regularization:
            est = fit_last_layer(model, train, regularization=lam)
            t0 = time.perf_counter()
            result = last_layer_spread_and_error(est, model, test)
            row(f"member {k}, last layer (λ = {lam:g})", {q: calibration_statistics(*v) for q, v in result.items()},
                (time.perf_counter() - t0) / len(test))
        result = last_layer_spread_and_error(est, model, test, novelty=False)
        row(f"member {k}, blocks' training error by kind and length alone",
            {q: calibration_statistics(*v) for q, v in result.items()}, float("nan"))
    t0 = time.perf_counter()
    last_layer_features(models[0], test)
    print(f"one model's forward pass alone: {(time.perf_counter() - t0) / len(test):.3f} s per cell")
    report(["estimator", "Spearman forces", "Spearman H", "Spearman S", "scale forces", "scale H", "s per cell"], rows,
           f"{len(test)} held-out cells ({len(train)} training cells), {out[rows[0][0]]['forces']['n']} atoms", out,
           args.out / "uncertainty_single_model.json")


if __name__ == "__main__":
    main()
