"""What one training step costs, by part: a training cell (with the H and S losses on all its block edges, on a
random fraction of them, and without the H and S heads), a random force-constant probe on the stored
force-constant cell, and a rigid interlayer probe on that cell and on its primitive cell (forward + backward,
one thread, medians of round-robin repeats), and the main job's two kinds of step (a training cell with a
quarter of its block edges plus a random probe and a primitive-cell interlayer probe, or plus the interlayer probe
alone) with the probes evaluated in passes of their own or in one pass with the cell (what training does), and,
for a force-constant cell with an inversion centre, the random probe with one displaced copy instead of two
(``train.force_constants.inversion_pairs``, the default).

    OMP_NUM_THREADS=1 python benchmarks/force_constant_probe_cost.py --dataset <dataset.h5 with force constants>

The dataset must store force constants (``hedgenet-label dataset.force_constants=true``; the main job's stores
xTB's 7×7 ones). The model is ``hedgenet_small`` in float32 with the main job's relations, untrained (cost does
not depend on the weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="a labelled dataset file with force constants")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--block-edge-fractions", type=float, nargs="*", default=[0.5, 0.25],
                   help="train.block_edge_fraction values to time the training cell at (a random fraction of its "
                        "block edges in the H and S losses, drawn anew every repeat)")
    p.add_argument("--r-intra", type=float, nargs="+", default=[4.0],
                   help="intralayer cutoffs (Å) to compare, one model each (the default training model: 4)")
    args = p.parse_args()
    torch.set_num_threads(1)

    from hedgenet.graphs import collate, subsample_block_edges
    from hedgenet.models import HedgeNet
    from hedgenet.training.data import load_samples
    from hedgenet.training.force_constants import (
        force_constant_errors, force_constant_probe, interlayer_mode_errors, interlayer_mode_probe,
        load_force_constant_targets, predict_with_probes, probe_vectors,
    )
    from hedgenet.training.losses import total_loss

    samples, layout, headers = load_samples([args.dataset])
    cutoff = float(headers[0]["solver_settings"]["block_cutoff_A"])
    weights = {"energy": 1.0, "forces": 10.0, "H": 100.0, "S": 100.0}
    rows, base = [], None
    for r_intra in args.r_intra:
        torch.manual_seed(0)
        model = HedgeNet([6], size="hedgenet_small", task="joint", layout=layout, block_cutoff=cutoff,
                         r_intra=r_intra, r_inter=6.0, registry_widths=[0.4, 0.7, 1.1, 1.6], dtype="float32")
        (target,) = load_force_constant_targets([args.dataset], model)
        target = target.to("cpu", torch.float32)
        cell = collate([model.graph_builder()(samples[0])]).to(dtype=torch.float32)
        full = dataclasses.replace(target, primitive_graph=None, orbit=None)

        def step(loss_fn, model=model):
            def run():
                model.zero_grad()
                loss_fn().backward()
            return run

        n_fc, n_prim = len(target.atoms), target.primitive_graph.pos.shape[0]
        cases = [
            (f"training cell ({len(samples[0]['numbers'])} atoms, E, F, H, S)",
             lambda: total_loss(model(cell, training=True), cell, weights)[0]),
            *[(f"the same cell, H and S losses on {f:g} of its block edges (train.block_edge_fraction)",
               lambda f=f, gen=torch.Generator().manual_seed(0): total_loss(
                   model(sub := subsample_block_edges(cell, f, gen), training=True), sub, weights)[0])
              for f in args.block_edge_fractions],
            ("the same cell, energy and forces only (no H, S heads)",
             lambda: total_loss(model(model.energy_graph(cell), training=True), cell, weights)[0]),
            (f"random probe ({n_fc}-atom force-constant cell)",
             lambda: (force_constant_errors(model, target, probe_vectors(n_fc, 1, 0, torch.float32), True,
                                            finite_differences=True) ** 2).mean()),
            (f"interlayer probe on the {n_fc}-atom cell",
             lambda: (interlayer_mode_errors(model, full, [0], True) ** 2).mean()),
            (f"interlayer probe on the primitive cell ({n_prim} atoms)",
             lambda: (interlayer_mode_errors(model, target, [0], True) ** 2).mean()),
        ]
        def main_job_step(with_random: bool, one_pass: bool, inversion: bool = False,
                          gen=torch.Generator().manual_seed(0)):
            sub = subsample_block_edges(cell, 0.25, gen)
            probes = ([force_constant_probe(target, probe_vectors(n_fc, 1, 0, torch.float32), inversion_pairs=inversion)]
                      if with_random else []) + [interlayer_mode_probe(target, [0])]
            if one_pass:
                pred, forces = predict_with_probes(model, sub, probes)
            else:
                pred = model(sub, training=True)
                forces = [p.forces(model) for p in probes]
            return total_loss(pred, sub, weights)[0] + sum(p.loss(f) for p, f in zip(probes, forces))

        for with_random in (True, False):
            what = "random + interlayer probe" if with_random else "interlayer probe"
            cases += [(f"main-job step: cell (0.25 of its blocks) + {what}, {'one pass' if one else 'separate passes'}",
                       lambda w=with_random, one=one: main_job_step(w, one)) for one in (False, True)]
        if target.inversion_partners is not None:  # the random probe's −δv copy as the +δv copy inverted
            cases.append(("main-job step: cell (0.25 of its blocks) + random probe with one copy (inversion pairs) "
                          "+ interlayer probe, one pass", lambda: main_job_step(True, True, inversion=True)))
        runs = [(name, step(fn)) for name, fn in cases]
        times = {name: [] for name, _ in runs}
        for name, run in runs:  # warm-up
            run()
        for _ in range(args.repeats):  # round robin: the machine's drift hits every case alike
            for name, run in runs:
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
        for name, _ in runs:
            t = statistics.median(times[name])
            base = t if base is None else base
            rows.append([f"{r_intra:g}", name, t, t / base])
    print_table(["r_intra (Å)", "part of a training step (forward + backward)", "s (median)",
                 "÷ training cell at the first r_intra"], rows,
                title=f"one thread, {args.repeats} repeats, hedgenet_small float32")


if __name__ == "__main__":
    main()
