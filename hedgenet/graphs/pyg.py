"""PyTorch Geometric at the boundary: a hedgenet :class:`~hedgenet.graphs.neighbors.Graph` as a PyG
``HeteroData`` and back, and PyG batching that gives what :func:`~hedgenet.graphs.neighbors.collate` gives.

hedgenet keeps its own :class:`Graph` container inside (construction, batching, the models): a benchmark
(``benchmarks/graph_containers.py``, docs/benchmarks.md) measured PyG's batching 2× slower at 144 atoms. This
module is for users who bring PyG models or tools: every hedgenet graph converts to a ``HeteroData`` without
copying a tensor, and a hedgenet model takes a PyG batch as it is (:meth:`GraphModel.forward` converts it).

Layout of the ``HeteroData`` (one node type ``atom``; units as in :mod:`hedgenet.graphs.neighbors`):

* ``data["atom"]``: ``pos`` (N, 3) Å, ``numbers``, ``species``, ``layer``, ``batch`` (N,), ``forces``
  (N, 3) eV/Å when labelled; ``num_nodes`` = N;
* ``data["atom", <relation>, "atom"]``, one edge type per relation type of the model, in its order:
  ``edge_index`` (2, E_r) ``[i; j]`` (i the receiver) and ``shift`` (E_r, 3), the cell shift R in lattice
  units (r_ij = pos[j] + R·cell − pos[i]);
* ``data["atom", "block", "atom"]`` when the graph has orbital blocks: ``edge_index``, ``shift``, ``kind``
  (0 on-site, 1 intra, 2 inter), ``reverse`` (the index of (j, i, −R); offset by the block-edge count when
  batched), ``block_mask`` and, when labelled, ``H`` (eV) and ``S``;
* graph level: ``cell`` (B, 3, 3) Å, ``n_atoms`` (B,), ``energy`` (B,) eV, ``virial`` (B, 3, 3) eV when
  labelled, ``info`` (the graph's info as JSON text; a list of them in a PyG batch).

``torch_geometric.loader.DataLoader`` (or ``Batch.from_data_list``) over such objects batches them as
:func:`collate` batches the graphs, provided every object carries the same labels: use
:func:`collate_heterodata` (or :func:`to_heterodata_list`, which fills a missing virial with NaN as
:func:`collate` does) when they may not.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Sequence

import numpy as np
import torch
from torch_geometric.data import Batch, HeteroData
from torch_geometric.data.storage import EdgeStorage

from hedgenet.graphs.neighbors import Graph

NODE = "atom"
BLOCK = "block"
BLOCK_EDGE = (NODE, BLOCK, NODE)
_GRAPH_LABELS = ("energy", "virial")


class HedgeHeteroData(HeteroData):
    """``HeteroData`` whose block edges batch correctly: ``reverse`` (an index into the block-edge list) is
    offset by the block-edge count of the graphs before it, as node indices are offset by the node count."""

    def __inc__(self, key: str, value: Any, store=None, *args, **kwargs) -> Any:
        if key == "reverse" and isinstance(store, EdgeStorage):
            return store.num_edges
        return super().__inc__(key, value, store, *args, **kwargs)


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"graph info value {x!r} ({type(x).__name__}) is not JSON-serialisable")


def to_heterodata(graph: Graph) -> HedgeHeteroData:
    """``graph`` (one structure or a batch) as a PyG ``HeteroData`` (layout in the module docstring).
    Shares every tensor with ``graph`` (no copy)."""
    if BLOCK in graph.rel_index:
        raise ValueError(f"a relation type is named {BLOCK!r}, which is the block-edge type of the HeteroData")
    data = HedgeHeteroData()
    atom = data[NODE]
    atom.pos, atom.numbers, atom.species, atom.layer = graph.pos, graph.numbers, graph.species, graph.layer
    atom.batch = graph.batch
    atom.num_nodes = int(graph.pos.shape[0])
    if graph.forces is not None:
        atom.forces = graph.forces
    for name, index in graph.rel_index.items():
        store = data[NODE, name, NODE]
        store.edge_index = index
        store.shift = graph.rel_shift[name]
    if graph.block_index is not None:
        block = data[BLOCK_EDGE]
        block.edge_index = graph.block_index
        for key, value in (("shift", graph.block_shift), ("kind", graph.block_kind), ("reverse", graph.block_reverse),
                           ("block_mask", graph.block_mask), ("H", graph.H), ("S", graph.S)):
            if value is not None:
                block[key] = value
    data.cell, data.n_atoms = graph.cell, graph.n_atoms
    for key in _GRAPH_LABELS:
        if getattr(graph, key) is not None:
            data[key] = getattr(graph, key)
    data.info = json.dumps(graph.info, default=_json_default)
    return data


def from_heterodata(data: HeteroData) -> Graph:
    """The :class:`Graph` of a ``HeteroData`` made by :func:`to_heterodata`, or of a PyG batch of them
    (then equal to :func:`collate` of the graphs). Shares every tensor with ``data`` (no copy)."""
    atom = data[NODE]
    rel_index, rel_shift = {}, {}
    for edge_type in data.edge_types:
        if edge_type != BLOCK_EDGE:
            rel_index[edge_type[1]] = data[edge_type].edge_index
            rel_shift[edge_type[1]] = data[edge_type].shift
    block = data[BLOCK_EDGE] if BLOCK_EDGE in data.edge_types else {}
    info = getattr(data, "info", None)
    if isinstance(info, str):
        info = json.loads(info)
    elif isinstance(info, (list, tuple)):  # a PyG batch: one JSON text per graph
        info = {"graphs": [json.loads(s) for s in info]}
    else:
        info = {}
    return Graph(
        pos=atom.pos, numbers=atom.numbers, species=atom.species, layer=atom.layer, batch=atom.batch,
        cell=data.cell, n_atoms=data.n_atoms, rel_index=rel_index, rel_shift=rel_shift,
        block_index=block.get("edge_index"), block_shift=block.get("shift"), block_reverse=block.get("reverse"),
        block_kind=block.get("kind"), energy=getattr(data, "energy", None), forces=atom.get("forces"),
        virial=getattr(data, "virial", None), H=block.get("H"), S=block.get("S"), block_mask=block.get("block_mask"),
        info=info,
    )


def is_heterodata(obj) -> bool:
    """True for a PyG ``HeteroData`` (or a batch of them), without importing PyG where it is absent."""
    return hasattr(obj, "node_types") and hasattr(obj, "edge_types")


def to_heterodata_list(graphs: Sequence[Graph]) -> list[HedgeHeteroData]:
    """Every graph as a ``HeteroData``, with the labels made uniform as :func:`collate` would make them in any
    batch: a virial of NaN where some graphs have one and others not, and a label only some graphs carry
    dropped. ``torch_geometric.loader.DataLoader`` then batches the list exactly like ``collate``."""
    return _harmonise([to_heterodata(g) for g in graphs])


def collate_heterodata(datas: Sequence[HeteroData]) -> Batch:
    """PyG batch (``Batch.from_data_list``) of ``HeteroData`` from :func:`to_heterodata`, labels made uniform
    first (see :func:`to_heterodata_list`); :func:`from_heterodata` of it equals :func:`collate` of the graphs."""
    return Batch.from_data_list(_harmonise(list(datas)))


def _harmonise(datas: list[HeteroData]) -> list[HeteroData]:
    """What :func:`collate` does to labels some graphs lack (NaN virial; other labels dropped), on shallow copies
    (tensors shared) of the objects that change; the objects passed in are left as they are."""
    out = list(datas)

    def edit(k: int) -> HeteroData:
        if out[k] is datas[k]:
            out[k] = copy.copy(datas[k])
        return out[k]

    with_virial = [hasattr(d, "virial") for d in out]
    if any(with_virial) and not all(with_virial):
        for k, has in enumerate(with_virial):
            if not has:
                d = edit(k)
                d.virial = torch.full((int(d.n_atoms.numel()), 3, 3), float("nan"), dtype=d[NODE].pos.dtype)
    for key, where in (("energy", None), ("forces", NODE), ("H", BLOCK_EDGE), ("S", BLOCK_EDGE)):
        if where == BLOCK_EDGE and not all(BLOCK_EDGE in d.edge_types for d in out):
            continue
        present = [hasattr(d if where is None else d[where], key) for d in out]
        if any(present) and not all(present):
            for k, has in enumerate(present):
                if has:
                    d = edit(k)
                    delattr(d if where is None else d[where], key)
    return out


__all__ = [
    "BLOCK_EDGE",
    "NODE",
    "HedgeHeteroData",
    "collate_heterodata",
    "from_heterodata",
    "is_heterodata",
    "to_heterodata",
    "to_heterodata_list",
]
