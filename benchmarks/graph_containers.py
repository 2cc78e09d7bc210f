"""hedgenet's own graph container and batching against PyTorch Geometric's HeteroData, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/graph_containers.py            # the table of docs/benchmarks.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/graph_containers.py --repeats 3 --big 20 --no-train   # quick

Cells: AB bilayer graphene (a = 2.46 Å, d = 3.35 Å), 6×6 (144 atoms) and ``--big``×``--big`` (default 50×50,
10 000 atoms) supercells of the 4-atom cell, rattled by 0.05 Å with a seed per copy. Graphs of the default
training model (hedgenet_small, relations intra_inter with r_intra = 4 Å, r_inter = 5 Å, blocks within 5 Å of
the GFN1-xTB layout, registry features on), built by today's :class:`GraphBuilder`; labels (energy, forces,
virial, H, S) are random numbers of the right shapes where a case needs them.

Cases, every variant of a case timed in the same loop (interleaved, rotating order), medians of ``--repeats``
(×5 for the 144-atom builds, ×20 for batching and conversions) after one warm-up:

(a) construction of one graph: ``GraphBuilder`` (today) against the same graph as a HeteroData, by conversion
    (``to_heterodata(builder(atoms))``) and built directly (the builder's numpy steps written into a HeteroData);
    the conversions alone;
(b) batching 8 labelled 144-atom graphs: ``collate`` against ``Batch.from_data_list``, ``collate_heterodata`` and
    ``torch_geometric.loader.DataLoader`` (and the torch DataLoader with ``collate`` hedgenet trains with);
    2 graphs of 10^4 atoms;
(c) one training step of the model (float64, forward + forces + virial + H/S, the training losses, backward):
    on today's batch against a batch that went through PyG (``from_heterodata(collate_heterodata(...))``),
    batching included; and the outputs of the two compared bit for bit;
(d) peak memory of the container at 10^4 atoms: a fresh subprocess per case, peak RSS (VmHWM, reset before the
    case) above the RSS before it, RSS still held after it, and the bytes of the container's tensors.

The ratio column is PyG / today (> 1: PyG slower or larger).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table  # noqa: E402

BLOCK_CUTOFF, R_INTRA, R_INTER = 5.0, 4.0, 5.0
REGISTRY = (0.4, 0.7, 1.1, 1.6)


def cell(n: int, seed: int = 0):
    from hedgenet.structures import build_structure, make_supercell

    atoms = make_supercell(build_structure("bilayer_graphene", a=2.46, d=3.35, stacking="AB"), [n, n])
    atoms.rattle(0.05, seed=seed)
    return atoms


def make_model():
    import torch

    from hedgenet.models import HedgeNet
    from hedgenet.orbitals.layout import OrbitalLayout
    from hedgenet.reference.xtb import GFN1_SHELLS

    torch.manual_seed(0)
    layout = OrbitalLayout(shells=dict(GFN1_SHELLS), basis_name="GFN1-xTB")
    return HedgeNet([6], relations="intra_inter", r_intra=R_INTRA, r_inter=R_INTER, size="hedgenet_small",
                    task="joint", layout=layout, block_cutoff=BLOCK_CUTOFF, registry_widths=REGISTRY, dtype="float64")


def builder():
    from hedgenet.graphs import GraphBuilder, make_relations
    from hedgenet.orbitals.layout import OrbitalLayout
    from hedgenet.reference.xtb import GFN1_SHELLS

    layout = OrbitalLayout(shells=dict(GFN1_SHELLS), basis_name="GFN1-xTB")
    return GraphBuilder(make_relations("intra_inter", R_INTRA, R_INTER), [6], layout, BLOCK_CUTOFF)


def labelled(graph, seed: int):
    """``graph`` with random labels of the right shapes (energy, forces, virial, H, S)."""
    import torch

    rng = torch.Generator().manual_seed(seed)
    n, e = graph.pos.shape[0], graph.block_index.shape[1]
    graph.energy = torch.randn(1, generator=rng, dtype=torch.float64) - 9.0 * n
    graph.forces = torch.randn(n, 3, generator=rng, dtype=torch.float64)
    graph.virial = torch.randn(1, 3, 3, generator=rng, dtype=torch.float64)
    graph.H = torch.randn(e, 4, 4, generator=rng, dtype=torch.float64) * graph.block_mask
    graph.S = torch.randn(e, 4, 4, generator=rng, dtype=torch.float64) * graph.block_mask
    return graph


def direct_heterodata(b, atoms):
    """The HeteroData of ``atoms`` built without a Graph: the same numpy steps as ``GraphBuilder.from_atoms``
    (neighbour lists, relation typing, block edges and their reverse), written into a HeteroData."""
    import torch

    from hedgenet.graphs.neighbors import _layer_of, relation_edges, reverse_edge_index
    from hedgenet.graphs.pyg import BLOCK_EDGE, NODE, HedgeHeteroData
    from hedgenet.orbitals.blocks import block_edges

    layer = _layer_of(atoms)
    rel = relation_edges(atoms, b.relations)
    data = HedgeHeteroData()
    node = data[NODE]
    node.pos = torch.tensor(atoms.positions, dtype=torch.float64)
    node.numbers = torch.tensor(atoms.numbers, dtype=torch.long)
    node.species = torch.from_numpy(b.species_of(atoms.numbers))
    node.layer = torch.from_numpy(layer)
    node.batch = torch.zeros(len(atoms), dtype=torch.long)
    node.num_nodes = len(atoms)
    for name, (index, shift) in rel.items():
        store = data[NODE, name, NODE]
        store.edge_index = torch.from_numpy(index)
        store.shift = torch.from_numpy(shift).to(torch.float64)
    ei, shift, _ = block_edges(atoms, b.block_cutoff)
    onsite = (ei[0] == ei[1]) & (shift == 0).all(axis=1)
    kind = np.where(onsite, 0, np.where(layer[ei[0]] == layer[ei[1]], 1, 2))
    block = data[BLOCK_EDGE]
    block.edge_index = torch.from_numpy(ei)
    block.shift = torch.from_numpy(shift).to(torch.float64)
    block.kind = torch.from_numpy(kind.astype(np.int64))
    block.reverse = torch.from_numpy(reverse_edge_index(ei, shift))
    n_orb = np.array([b.layout.n_orb(int(z)) for z in atoms.numbers])
    orb_mask = np.arange(b.n_max)[None, :] < n_orb[:, None]
    block.block_mask = torch.from_numpy(orb_mask[ei[0]][:, :, None] & orb_mask[ei[1]][:, None, :])
    data.cell = torch.tensor(np.asarray(atoms.cell.array), dtype=torch.float64)[None]
    data.n_atoms = torch.tensor([len(atoms)])
    data.info = "{}"
    return data


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time (s) of every ``fns[name]()``, all timed in one loop, order rotated every repeat."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def row(case, atoms, t_today, t_pyg, scale=1e3):
    return [case, atoms, t_today * scale, t_pyg * scale, t_pyg / t_today]


# ------------------------------------------------------------------------------------------- (d) memory
def status_kib(key: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, KiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")  # pragma: no cover


def reset_peak_rss() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0: ``5 > /proc/self/clear_refs``), so the peak
    of a case is not the import's; False where that is not allowed (then ru_maxrss, which imports may dominate)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:  # pragma: no cover
        return False


def tensor_bytes(obj) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if hasattr(obj, "stores"):  # HeteroData
        return sum(tensor_bytes(v) for s in obj.stores for v in s.values())
    import dataclasses

    if dataclasses.is_dataclass(obj):  # Graph
        return sum(tensor_bytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    return 0


def memory_case(case: str, n: int) -> dict:
    """Run one memory case in this (fresh) process: peak RSS above the RSS before it (MiB)."""
    import gc

    import torch

    from hedgenet.graphs import collate
    from hedgenet.graphs.pyg import collate_heterodata, to_heterodata

    torch.set_num_threads(1)
    b = builder()
    cells = [cell(n, seed=k) for k in range(2)]
    b(cell(2))  # warm: matscipy, ASE, layer detection
    gc.collect()
    before = status_kib("VmRSS")
    resettable = reset_peak_rss()
    if case == "graph":
        out = b(cells[0])
    elif case == "heterodata (conversion)":
        out = to_heterodata(b(cells[0]))
    elif case == "heterodata (direct)":
        out = direct_heterodata(b, cells[0])
    elif case == "batch of 2: collate":
        out = collate([b(a) for a in cells])
    elif case == "batch of 2: PyG":
        out = collate_heterodata([to_heterodata(b(a)) for a in cells])
    else:
        raise ValueError(case)
    gc.collect()
    held = status_kib("VmRSS") - before
    peak = (status_kib("VmHWM") if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) - before
    return {"peak_MiB": peak / 1024, "held_MiB": held / 1024, "tensors_MiB": tensor_bytes(out) / 2**20}


def memory_in_subprocess(case: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-case", case, "--big", str(n)],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--big", type=int, default=50, help="n of the n×n big cell (4n² atoms)")
    p.add_argument("--batch", type=int, default=8, help="graphs per batch in (b) and (c)")
    p.add_argument("--train-repeats", type=int, default=5)
    p.add_argument("--memory-repeats", type=int, default=3, help="subprocesses per memory case (median)")
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--memory-case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case, args.big)))
        return

    import torch
    from torch.utils.data import DataLoader as TorchLoader
    from torch_geometric.data import Batch
    from torch_geometric.loader import DataLoader as PyGLoader

    from hedgenet.graphs import collate
    from hedgenet.graphs.pyg import collate_heterodata, from_heterodata, to_heterodata
    from hedgenet.training.losses import total_loss

    torch.set_num_threads(1)
    b = builder()
    small, big = cell(6), cell(args.big)
    n_small, n_big = len(small), len(big)
    rows = []

    # (a) construction
    for atoms, reps in ((small, 5 * args.repeats), (big, args.repeats)):
        t = interleaved({
            "today": lambda: b(atoms),
            "conversion": lambda: to_heterodata(b(atoms)),
            "direct": lambda: direct_heterodata(b, atoms),
        }, reps)
        rows.append(row("(a) build graph: today vs Graph → HeteroData", len(atoms), t["today"], t["conversion"]))
        rows.append(row("(a) build graph: today vs HeteroData directly", len(atoms), t["today"], t["direct"]))
        g = b(atoms)
        d = to_heterodata(g)
        t = interleaved({"to": lambda: to_heterodata(g), "from": lambda: from_heterodata(d)}, args.repeats * 20)
        rows.append(["(a) to_heterodata(graph) alone (no tensor copied)", len(atoms), "—", t["to"] * 1e3, "—"])
        rows.append(["(a) from_heterodata(data) alone (no tensor copied)", len(atoms), "—", t["from"] * 1e3, "—"])
    print("  (a) done", file=sys.stderr, flush=True)

    # (b) batching
    graphs = [labelled(b(cell(6, seed=k)), seed=k) for k in range(args.batch)]
    datas = [to_heterodata(g) for g in graphs]
    t = interleaved({
        "collate": lambda: collate(graphs),
        "from_data_list": lambda: Batch.from_data_list(datas),
        "collate_heterodata": lambda: collate_heterodata(datas),
        "collate_heterodata+from": lambda: from_heterodata(collate_heterodata(datas)),
        "torch loader": lambda: next(iter(TorchLoader(graphs, batch_size=len(graphs), collate_fn=collate))),
        "pyg loader": lambda: next(iter(PyGLoader(datas, batch_size=len(datas)))),
    }, args.repeats * 20)
    label = f"(b) batch {args.batch} graphs"
    rows.append(row(f"{label}: collate vs Batch.from_data_list", n_small, t["collate"], t["from_data_list"]))
    rows.append(row(f"{label}: collate vs collate_heterodata", n_small, t["collate"], t["collate_heterodata"]))
    rows.append(row(f"{label}: collate vs collate_heterodata + from_heterodata", n_small, t["collate"],
                    t["collate_heterodata+from"]))
    rows.append(row(f"{label}: torch DataLoader(collate) vs PyG DataLoader", n_small, t["torch loader"],
                    t["pyg loader"]))
    bigs = [labelled(b(cell(args.big, seed=k)), seed=k) for k in range(2)]
    big_datas = [to_heterodata(g) for g in bigs]
    t = interleaved({"collate": lambda: collate(bigs), "pyg": lambda: Batch.from_data_list(big_datas)},
                    args.repeats)
    rows.append(row("(b) batch 2 graphs: collate vs Batch.from_data_list", n_big, t["collate"], t["pyg"]))
    del bigs, big_datas
    print("  (b) done", file=sys.stderr, flush=True)

    # (c) training step
    if not args.no_train:
        model = make_model()
        model.init_statistics(graphs)
        weights = {"energy": 1.0, "forces": 10.0, "H": 100.0, "S": 100.0, "forces_out_of_plane": 40.0,
                   "layer_forces": 1e4, "layer_forces_in_plane": 1e6, "virial": 100.0}

        def step(batch):
            model.zero_grad(set_to_none=True)
            pred = model(batch, training=True)
            loss, _ = total_loss(pred, batch, weights, float(model.hamiltonian_shift_eV))
            loss.backward()
            return pred, loss

        t = interleaved({
            "today": lambda: step(collate(graphs)),
            "pyg": lambda: step(from_heterodata(collate_heterodata(datas))),
        }, args.train_repeats)
        rows.append(row(f"(c) training step, batch of {args.batch} (batching included)", n_small, t["today"],
                        t["pyg"]))
        p1, l1 = step(collate(graphs))
        g1 = [q.grad.clone() for q in model.parameters()]
        p2, l2 = step(from_heterodata(collate_heterodata(datas)))
        g2 = [q.grad.clone() for q in model.parameters()]
        same = (torch.equal(l1, l2) and all(torch.equal(p1[k], p2[k]) for k in p1)
                and all(torch.equal(x, y) for x, y in zip(g1, g2)))
        print(f"  (c) outputs, loss and gradients bit-identical through PyG: {same}", file=sys.stderr, flush=True)

    # (d) memory
    mem = {}
    cases = ["graph", "heterodata (conversion)", "heterodata (direct)", "batch of 2: collate", "batch of 2: PyG"]
    for _ in range(args.memory_repeats):
        for case in cases:
            mem.setdefault(case, []).append(memory_in_subprocess(case, args.big))
    med = {c: {k: float(np.median([m[k] for m in v])) for k in v[0]} for c, v in mem.items()}
    print("  (d) done", file=sys.stderr, flush=True)

    header = ["case", "atoms", "today (ms)", "PyG (ms)", "PyG / today"]
    print_table(header, rows, title=f"graph containers, 1 thread, medians of {args.repeats} (×5 for the 144-atom "
                f"builds, ×20 for batching and conversions; {args.train_repeats} training steps)")
    mrows = []
    for today, pyg in (("graph", "heterodata (conversion)"), ("graph", "heterodata (direct)"),
                       ("batch of 2: collate", "batch of 2: PyG")):
        for key, what in (("peak_MiB", "peak RSS"), ("held_MiB", "RSS held"), ("tensors_MiB", "container tensors")):
            mrows.append([f"(d) {today} vs {pyg}: {what}", n_big, med[today][key], med[pyg][key],
                          med[pyg][key] / med[today][key]])
    print_table(["case", "atoms", "today (MiB)", "PyG (MiB)", "PyG / today"], mrows,
                title=f"memory at {n_big} atoms: one fresh process per case, median of {args.memory_repeats}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
