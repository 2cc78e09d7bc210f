"""Seconds per v_F(T) Monte Carlo sample and where they go, with a trained model, per order.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fermi_velocity_sample_cost.py --model <train run>/model.pt

On the n×n AB bilayer (default 6×6, 144 atoms, 576 orbitals) with ``--n-samples`` random ± pairs of
displacements (Gaussian, ``--rms`` Å per component: the cost does not depend on their statistics), it
times every step of one sample of :func:`hedgenet.physics.fermi_velocity.fermi_velocity_vs_temperature`
separately: the model's H(u) at the displaced geometry (`all`), H₀ + Σ dH/du·u (`first`), the ± pair of
`second` (per sample: half a pair), and for each order's Hamiltonian the unfolding onto the K–Γ and K–M
lines (17 k-points) split into Bloch sums H(k), S(k), the windowed eigensolves and the unfolding weights,
each way: the plain one-k-at-a-time path (``unfold_near_k(..., plain=True)``, the code before the
vectorised one), the default :class:`~hedgenet.physics.unfold.Unfolder` in double and in single precision,
and the single-precision one solving every k-point (``time_reversal=False``: the code before time-reversal
partners shared an eigensolve, 17 solves instead of 9 on 6×6), interleaved sample by sample so that all see
the same machine load (and, with ``--workers N``, the default with N k-points at a time in worker
processes); then the continuum fit of the sample set per order (divided by the number of samples). Prints
medians over the samples and the ratio plain / path; dH/du is computed once (finite differences, not part
of a sample's cost). The last table times whole samples as the run does them, with and without the shared
eigensolves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table  # noqa: E402

ORDERS = ("first", "second", "all")


def timed(fn, *args, **kwargs):
    """(fn(*args, **kwargs), wall seconds)."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def unfolding_parts(blocks, cmap, e_ref, kw: dict, plain: bool, precision: str = "double",
                    time_reversal: bool = True) -> dict:
    """Seconds of Bloch sums, eigensolves and weights over the k-points of one ``unfold_near_k`` call (the
    default path solves once per group of time-reversal partners, as ``unfold_near_k`` does)."""
    from hedgenet.orbitals.bloch import generalized_eigh
    from hedgenet.physics.continuum_fit import near_k_points
    from hedgenet.physics.unfold import Unfolder, bloch_pair, scatter_weights, time_reversal_groups

    window = (e_ref - kw["window_eV"], e_ref + kw["window_eV"])
    t = {"bloch": 0.0, "eigh": 0.0, "weights": 0.0}
    points = near_k_points(cmap, kw["q_max"], kw["n_q"])
    groups = ([(i, []) for i in range(len(points))] if plain or not time_reversal
              else time_reversal_groups(blocks, cmap, points))
    if not plain:
        unf, t["bloch"] = timed(Unfolder, blocks, cmap)
    for i, partners in groups:
        k = points[i]
        if plain:
            (Hk, Sk), dt = timed(bloch_pair, blocks, cmap.supercell_kfrac(k))
        else:
            (Hk, Sk), dt = timed(unf.matrices, k)
        t["bloch"] += dt
        (_, C), dt = timed(generalized_eigh, Hk, Sk, window_eV=window, precision=precision)
        t["eigh"] += dt
        if plain:
            _, dt = timed(scatter_weights, blocks, cmap, C, Sk @ C, k)
        else:
            SC = Sk @ C
            _, dt = timed(lambda: [unf.weights(C, SC, k)] + [unf.weights(C.conj(), SC.conj(), points[j])
                                                            for j in partners])
        t["weights"] += dt
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt of a hedgenet-train run (task joint or hamiltonian)")
    p.add_argument("--supercell", type=int, default=6)
    p.add_argument("--n-samples", type=int, default=6, help="samples (± pairs: even), medians over them")
    p.add_argument("--rms", type=float, default=0.05, help="RMS displacement per component (Å)")
    p.add_argument("--a", type=float, default=2.4581, help="lattice constant (Å)")
    p.add_argument("--d", type=float, default=3.3223, help="interlayer distance (Å)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="rounds of the whole-sample comparison")
    p.add_argument("--workers", type=int, default=2,
                   help="also time unfold_near_k(..., workers=N): N k-points at a time in worker processes (1: skip)")
    args = p.parse_args()
    if args.n_samples < 4 or args.n_samples % 2:
        p.error("--n-samples: an even number ≥ 4 (± pairs, two for the fit's error bar)")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    from hedgenet.calculators import ModelCalculator
    from hedgenet.physics.continuum_fit import thermal_fermi_velocity, unfold_near_k
    from hedgenet.physics.fermi_velocity import second_order_pair
    from hedgenet.physics.unfold import SupercellMap, charge_neutrality_level
    from hedgenet.structures import build_structure
    from hedgenet.structures.supercell import make_phonopy, supercell_atoms

    torch.set_num_threads(args.threads)
    unit = build_structure("bilayer_graphene", a=args.a, d=args.d, stacking="AB")
    n = args.supercell
    sc = supercell_atoms(make_phonopy(unit, [n, n]), unit)
    calc = ModelCalculator(args.model)
    deriv, t_deriv = timed(calc.block_derivatives, sc, 0.005)
    cmap = SupercellMap.build(sc, unit)
    e_ref = charge_neutrality_level(deriv.blocks0, cmap, sc.numbers)
    kw = {"q_max": 0.08, "n_q": 9, "window_eV": 1.0}
    rng = np.random.default_rng(0)
    us = [s * x for x in rng.normal(0.0, args.rms, (args.n_samples // 2, len(sc), 3)) for s in (1, -1)]

    rows = {}  # (step, order) -> list of seconds per sample
    paths = {"plain": {"plain": True}, "default, double": {}, "default, single": {"precision": "single"},
             "single, every k solved": {"precision": "single", "time_reversal": False}}
    lines = {(o, tag): [] for o in ORDERS for tag in paths}

    def add(step, order, dt):
        rows.setdefault((step, order), []).append(dt)

    for p0 in range(0, len(us), 2):
        pair = us[p0 : p0 + 2]
        first, displaced = [], []
        for u in pair:
            b, dt = timed(deriv.first_order, u)
            first.append(b)
            add("Hamiltonian: H0 + Σ dH/du·u", "first", dt)
            atoms = sc.copy()
            atoms.positions += u
            b, dt = timed(calc.predict_hamiltonian, atoms)
            displaced.append(b)
            add("Hamiltonian: model H(u)", "all", dt)
        second, dt = timed(second_order_pair, deriv, pair[0], *displaced, first_plus=first[0])
        add("Hamiltonian: ½[H(u)+H(−u)] ± Σ dH/du·u", "second", dt / 2)
        add("Hamiltonian: ½[H(u)+H(−u)] ± Σ dH/du·u", "second", dt / 2)
        for order, blocks in (("first", first), ("second", second), ("all", displaced)):
            for b in blocks:
                for tag, opts in paths.items():
                    for part, dt in unfolding_parts(b, cmap, e_ref, kw, opts.get("plain", False),
                                                    opts.get("precision", "double"),
                                                    opts.get("time_reversal", True)).items():
                        add(f"{part} ({tag})", order, dt)
                    ln, dt = timed(unfold_near_k, b, cmap, e_ref, **kw, **opts)
                    lines[(order, tag)].append(ln)
                    add(f"unfold_near_k ({tag})", order, dt)
                if args.workers > 1:
                    ln, dt = timed(unfold_near_k, b, cmap, e_ref, **kw, workers=args.workers, precision="single")
                    assert all(np.array_equal(x[1], y[1]) for name in ln.states
                               for x, y in zip(ln.states[name], lines[(order, "default, single")][-1].states[name]))
                    add(f"unfold_near_k (default, single, {args.workers} workers)", order, dt)
    for order in ORDERS:
        ref = lines[(order, "plain")]
        for tag in ("default, double", "default, single", "single, every k solved"):
            new = lines[(order, tag)]
            de = max(np.abs(a[0] - b[0]).max(initial=0.0) for x, y in zip(ref, new) for name in x.states
                     for a, b in zip(x.states[name], y.states[name]))
            dw = max(np.abs(a[1] - b[1]).max(initial=0.0) for x, y in zip(ref, new) for name in x.states
                     for a, b in zip(x.states[name], y.states[name]))
            fits = [thermal_fermi_velocity(lines[(order, t)], 100, 0, 2, group=2)["v0_1e5_m_s"] for t in ("plain", tag)]
            print(f"{order}: plain vs {tag}, all states: max |Δε| {de:.1e} eV, max |ΔW| {dw:.1e}; "
                  f"v0 {fits[0]:.6f} vs {fits[1]:.6f} (1e5 m/s)")
        _, dt = timed(thermal_fermi_velocity, lines[(order, "default, single")], 100, 0, 2, group=2)
        rows[("fit (per sample: set / n)", order)] = [dt / len(us)]

    steps = list(dict.fromkeys(step for step, _ in rows))
    med = {key: statistics.median(v) for key, v in rows.items()}
    table = []
    for step in steps:
        vals = [med.get((step, o)) for o in ORDERS]
        table.append([step, *[("—" if v is None else v) for v in vals], sum(v for v in vals if v is not None)])
    print_table(["step (s per sample, median)", *ORDERS, "sum"], table,
                f"{n}×{n} AB bilayer ({len(sc)} atoms), model, {len(us)} samples (rms {args.rms} Å), "
                f"{args.threads} thread(s); dH/du once: {t_deriv:.1f} s")
    total = {}
    tags = tuple(paths) + ((f"default, single, {args.workers} workers",) if args.workers > 1 else ())
    for tag in tags:
        total[tag] = sum(med[(s, o)] for s in steps for o in ORDERS if (s, o) in med
                         and (s.startswith(("Hamiltonian", "fit")) or s == f"unfold_near_k ({tag})"))
    print_table(["path", "s per sample, all three orders", "plain / path"],
                [[tag, total[tag], total["plain"] / total[tag]] for tag in tags])
    if args.workers > 1:
        whole_samples(args, us, deriv, calc, sc, cmap, e_ref, kw, lines, med)


def whole_samples(args, us, deriv, calc, sc, cmap, e_ref, kw, lines, med) -> None:
    """Every sample's three orders as the run does them (Hamiltonians built, unfolded, lines collected), wall
    time per sample, ``--repeats`` rounds of the ways interleaved: one process; the k-points of each
    Hamiltonian split over ``--workers`` processes; one Hamiltonian per job for the workers (UnfoldQueue, the
    run's way), each every k-point solved (before) and with time-reversal partners sharing a solve (now). The
    fits (same for all) are added from the table above; the first way is the baseline of the speed-up."""
    from hedgenet.physics.continuum_fit import UnfoldQueue, unfold_near_k
    from hedgenet.physics.fermi_velocity import second_order_pair

    def hamiltonians():
        for p0 in range(0, len(us), 2):
            pair = us[p0 : p0 + 2]
            first = [deriv.first_order(u) for u in pair]
            displaced = []
            for u in pair:
                atoms = sc.copy()
                atoms.positions += u
                displaced.append(calc.predict_hamiltonian(atoms))
            second = second_order_pair(deriv, pair[0], *displaced, first_plus=first[0])
            yield from (("first", b) for b in first)
            yield from (("second", b) for b in second)
            yield from (("all", b) for b in displaced)

    ways = {}
    for tr, tag in ((False, "every k solved"), (True, "partners share a solve")):
        ways[f"one process, {tag}"] = dict(workers=1, split=False, time_reversal=tr)
        ways[f"{args.workers} workers, k-points split, {tag}"] = dict(workers=args.workers, split=True, time_reversal=tr)
        ways[f"{args.workers} workers, one Hamiltonian per job, {tag}"] = dict(workers=args.workers, split=False,
                                                                               time_reversal=tr)
    walls = {way: [] for way in ways}
    for _ in range(args.repeats):
        for way, opt in ways.items():
            t0 = time.perf_counter()
            single = dict(precision="single", time_reversal=opt["time_reversal"])
            queue = UnfoldQueue(cmap, e_ref, workers=1 if opt["split"] else opt["workers"], **kw, **single)
            got: dict = {}
            for order, b in hamiltonians():
                if opt["split"]:
                    got.setdefault(order, []).append(
                        unfold_near_k(b, cmap, e_ref, **kw, workers=opt["workers"], **single))
                else:
                    queue.add(order, b)
            got = got or queue.results()[0]
            walls[way].append((time.perf_counter() - t0) / len(us))
            same = "default, single" if opt["time_reversal"] else "single, every k solved"
            for order in ORDERS:  # the same states as that single-precision path of the table above
                for x, y in zip(got[order], lines[(order, same)]):
                    assert all(np.array_equal(a[0], b[0]) for name in x.states
                               for a, b in zip(x.states[name], y.states[name]))
    fit = sum(med[("fit (per sample: set / n)", o)] for o in ORDERS)
    base = statistics.median(walls[next(iter(ways))]) + fit
    print_table(["whole samples (Hamiltonians + unfolding + fits), all three orders", "s per sample", "speed-up"],
                [[way, statistics.median(v) + fit, base / (statistics.median(v) + fit)] for way, v in walls.items()],
                f"wall per sample, median of {args.repeats} interleaved rounds over {len(us)} samples")


if __name__ == "__main__":
    main()
