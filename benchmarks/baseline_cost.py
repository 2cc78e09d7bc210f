"""Parameter counts and single-point CPU cost of HedgeNet, its homogeneous ablation and the baselines.

    .venv/bin/python benchmarks/baseline_cost.py                       # 6×6 AB bilayer (144 atoms), 1 thread
    .venv/bin/python benchmarks/baseline_cost.py --n 4 --block-cutoff 6.0 --dtype float32

Every model is built exactly as ``hedgenet-train model=<name> relations=<r> task=<task>`` builds it (the
configs in conf/model and conf/relations, through :func:`hedgenet.training.factory.build_model`), with fresh
weights (weights do not change the cost). Timed per model: graph construction (neighbour lists and block
edges, once per geometry) and the model call (energy, forces = −∂E/∂r by autograd, and every H_ij(R),
S_ij(R) within the block cutoff, as the task asks), medians of ``--repeats`` after one warm-up call.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import median_time, print_table  # noqa: E402

MODELS = [  # (model config, relations config, task)
    ("hedgenet_small", "intra_inter", "forces"),
    ("hedgenet_small", "intra_inter", "joint"),
    ("hedgenet_small", "single", "joint"),
    ("mace", "intra_inter", "forces"),
    ("deeph_e3", "intra_inter", "hamiltonian"),
    ("deeph_e3", "intra_inter", "joint"),
]


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=6, help="n×n AB bilayer graphene supercell (4n² atoms)")
    p.add_argument("--block-cutoff", type=float, default=7.0, help="Å (conf/reference/xtb.yaml default)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import torch
    from omegaconf import OmegaConf

    from hedgenet.config import config_dir
    from hedgenet.models import count_parameters
    from hedgenet.orbitals.layout import OrbitalLayout
    from hedgenet.reference.xtb import GFN1_SHELLS
    from hedgenet.structures import build_structure, make_supercell
    from hedgenet.training.factory import build_model

    torch.set_num_threads(args.threads)
    atoms = make_supercell(build_structure("bilayer_graphene", a=2.46, d=3.35, stacking="AB"), [args.n, args.n])
    atoms.rattle(0.02, seed=0)
    layout = OrbitalLayout(shells=dict(GFN1_SHELLS), basis_name="GFN1-xTB")
    conf = config_dir()
    rows = []
    for model_name, relations, task in MODELS:
        cfg = OmegaConf.create({
            "model": OmegaConf.load(f"{conf}/model/{model_name}.yaml"),
            "relations": OmegaConf.load(f"{conf}/relations/{relations}.yaml"),
            "task": task,
        })
        torch.manual_seed(0)
        model, _ = build_model(cfg, layout, args.block_cutoff, [6], n_layers=2, dtype=args.dtype)
        model.eval()
        builder = model.graph_builder()
        t_graph, _ = median_time(lambda: builder.from_atoms(atoms), args.repeats)
        graph = builder.from_atoms(atoms).to(dtype=getattr(torch, args.dtype))
        t_model, _ = median_time(lambda: model(graph), args.repeats, warmup=1)
        # every family's message graph: its relation edges (deeph_e3: one type within the block cutoff)
        cutoff = model.relations.max_cutoff
        n_edges = sum(int(v.shape[1]) for v in graph.rel_index.values())
        label = model_name + (" (relations=single)" if relations == "single" else "")
        rows.append([label, task, "+".join(model.outputs), count_parameters(model), f"{cutoff:.1f}",
                     n_edges, t_graph, t_model])
        print(f"{label} task={task}: {rows[-1][3]} parameters, graph {t_graph:.3f} s, model {t_model:.3f} s",
              flush=True)
    header = ["model", "task", "outputs", "parameters", "message cutoff (Å)", "message edges",
              "graph (s)", "model call (s)"]
    return print_table(header, rows, title=(
        f"{len(atoms)}-atom {args.n}×{args.n} AB bilayer graphene, block cutoff {args.block_cutoff} Å, "
        f"{args.dtype}, {args.threads} thread(s), median of {args.repeats}"))


if __name__ == "__main__":
    main()
