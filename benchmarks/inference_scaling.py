"""HedgeNet single-point cost (energy, forces and every H and S block) against atom count, beside xTB.

    .venv/bin/python benchmarks/inference_scaling.py                      # CPU, float32 and float64
    .venv/bin/python benchmarks/inference_scaling.py --model outputs/train/runs/<run>/model.pt
    .venv/bin/python benchmarks/inference_scaling.py --device cuda --xtb-max-atoms 0   # on a GPU machine

Cells: AB bilayer graphene n×n supercells and commensurate twisted bilayers up to (m, n) = (29, 30)
(1.12°, 10 444 atoms). For each cell and dtype: graph construction (neighbour lists, block edges; CPU,
once per geometry) and the model call (E, F = −∂E/∂r by autograd, all H_ij(R) and S_ij(R) blocks within
the block cutoff), medians of ``--repeats`` after one warm-up call. xTB (GFN1, tblite: SCF, energy,
forces and the Γ matrices, the same quantities) is timed on the same cells up to ``--xtb-max-atoms``,
in the same process and thread setting, and the speed-up is xTB / (graph + model). Exponents p of
t ∝ N^p are fitted over N ≥ 144. Threads: ``--threads`` for torch and tblite alike (default 1: the
2-core CI machine is shared). Model weights do not change the cost: without ``--model`` a freshly
initialised model of the given size is timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import fit_exponent, median_time, print_table  # noqa: E402


def cells(max_atoms: int):
    from hedgenet.structures import build_structure, make_supercell
    from hedgenet.structures.twisted import expected_atom_count, twist_angle_deg

    out = []
    for n in (3, 4, 6, 8):
        if 4 * n * n <= max_atoms:
            ab = build_structure("bilayer_graphene", a=2.46, d=3.35, stacking="AB")
            out.append((f"AB {n}×{n}", lambda n=n, ab=ab: make_supercell(ab, [n, n])))
    for m in (5, 8, 12, 18, 29):
        if expected_atom_count(m, m + 1) <= max_atoms:
            label = f"twisted {twist_angle_deg(m, m + 1):.2f}°"
            out.append((label, lambda m=m: build_structure("twisted_bilayer_graphene", m=m, n=m + 1)))
    return out


def build_model(args, dtype: str, registry: bool = True, correlation: int | None = None, dispersion: bool = True):
    from hedgenet.models import HedgeNet, model_size
    from hedgenet.models.io import load_model
    from hedgenet.orbitals.layout import OrbitalLayout
    from hedgenet.reference.xtb import GFN1_SHELLS

    if args.model:
        model = load_model(args.model)
        return model.to(getattr(__import__("torch"), dtype)) if model.config["dtype"] != dtype else model
    layout = OrbitalLayout(shells=dict(GFN1_SHELLS), basis_name="GFN1-xTB")
    size = model_size(args.size) if correlation is None else {**model_size(args.size), "correlation": correlation}
    return HedgeNet([6], relations="intra_inter", r_intra=args.r_intra, r_inter=args.r_inter, size=size,
                    task="joint", layout=layout, block_cutoff=args.block_cutoff,
                    registry_widths=args.registry_widths if registry else (),
                    dispersion_cutoff=args.dispersion_cutoff if dispersion and args.dispersion_cutoff > 0 else None,
                    dtype=dtype).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a trained model.pt (default: fresh model of --size)")
    p.add_argument("--size", default="hedgenet_small")
    p.add_argument("--block-cutoff", type=float, default=6.0, help="Å (fresh model only)")
    p.add_argument("--r-intra", type=float, default=4.0, help="Å (fresh model only)")
    p.add_argument("--r-inter", type=float, default=5.0, help="Å (fresh model only)")
    p.add_argument("--registry-widths", nargs="*", type=float, default=[0.4, 0.7, 1.1, 1.6],
                   help="Å: the interlayer registry Gaussians (conf/relations/intra_inter.yaml; fresh model only)")
    p.add_argument("--without-registry-too", action="store_true",
                   help="also time the first dtype without the registry features, side by side")
    p.add_argument("--dispersion-cutoff", type=float, default=12.0,
                   help="Å: the interlayer dispersion tail (conf/relations/intra_inter.yaml; 0: none; fresh model only)")
    p.add_argument("--without-dispersion-too", action="store_true",
                   help="also time the first dtype without the dispersion tail (its graph too), side by side")
    p.add_argument("--two-body-too", action="store_true",
                   help="also time the first dtype with correlation 1 (messages only, no per-atom square), side by side")
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-atoms", type=int, default=10444)
    p.add_argument("--xtb-max-atoms", type=int, default=400, help="0: no xTB")
    p.add_argument("--xtb-repeats", type=int, default=3, help="(1 above 200 atoms)")
    args = p.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    models = {dt: build_model(args, dt).to(device) for dt in args.dtypes}
    if args.without_registry_too and not args.model:
        models[f"{args.dtypes[0]} no registry"] = build_model(args, args.dtypes[0], registry=False).to(device)
    if args.two_body_too and not args.model:
        models[f"{args.dtypes[0]} two-body"] = build_model(args, args.dtypes[0], correlation=1).to(device)
    if args.without_dispersion_too and not args.model:
        models[f"{args.dtypes[0]} no tail"] = build_model(args, args.dtypes[0], dispersion=False).to(device)
    builder = next(iter(models.values())).graph_builder()
    plain_builder = models[f"{args.dtypes[0]} no tail"].graph_builder() if f"{args.dtypes[0]} no tail" in models else None
    xtb = None
    if args.xtb_max_atoms > 0:
        from hedgenet.reference import make_reference

        xtb = make_reference("xtb", block_cutoff=args.block_cutoff)

    rows, sizes, t_total = [], [], {name: [] for name in models}
    t_xtb = []
    for label, make in cells(args.max_atoms):
        atoms = make()
        n = len(atoms)
        t_graph, _ = median_time(lambda: builder(atoms), repeats=args.repeats)
        graph = builder(atoms).to(device)
        row = [label, n, int(graph.block_index.shape[1]), t_graph]
        t_plain, plain = t_graph, graph
        if plain_builder is not None:
            t_plain, _ = median_time(lambda: plain_builder(atoms), repeats=args.repeats)
            plain = plain_builder(atoms).to(device)
            row.append(t_plain)
        for name, model in models.items():
            tail = not name.endswith("no tail")
            g = (graph if tail else plain).to(device, dtype=getattr(torch, name.split()[0]))

            def call():
                model(g)
                sync()

            t_model, _ = median_time(call, repeats=args.repeats, warmup=1)
            if device.type == "cuda":
                row.append(torch.cuda.max_memory_allocated() / 2**30)
                torch.cuda.reset_peak_memory_stats()
            row.append(t_model)
            t_total[name].append((t_graph if tail else t_plain) + t_model)
        tx = float("nan")
        if xtb is not None and n <= args.xtb_max_atoms:
            reps = args.xtb_repeats if n <= 200 else 1
            tx, _ = median_time(lambda: xtb.compute(atoms, with_blocks=False), repeats=reps)
        t_xtb.append(tx)
        row += [tx, tx / t_total[args.dtypes[0]][-1]]
        rows.append(row)
        sizes.append(n)
        print(f"  {label}: {n} atoms done", file=sys.stderr, flush=True)

    header = ["cell", "atoms", "block edges", "graph (s)"] + (["graph no tail (s)"] if plain_builder is not None else [])
    for name in models:
        header += ([f"GPU mem {name} (GiB)"] if device.type == "cuda" else []) + [f"model {name} (s)"]
    header += ["xTB (s)", f"speed-up xTB/(graph+model {args.dtypes[0]})"]
    print_table(header, rows, title=f"HedgeNet ({args.model or args.size}) single point on {device}, "
                f"{args.threads} thread(s); medians of {args.repeats}")
    big = [k for k, n in enumerate(sizes) if n >= 144]
    fits = [["model+graph " + name, fit_exponent(np.array(sizes)[big], np.array(t_total[name])[big])]
            for name in models if len(big) >= 2]
    ok = [k for k in big if np.isfinite(t_xtb[k])]
    if len(ok) >= 2:
        fits.append(["xTB", fit_exponent(np.array(sizes)[ok], np.array(t_xtb)[ok])])
    if fits:
        print_table(["what", "exponent p (t ∝ N^p, N ≥ 144)"], fits)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
