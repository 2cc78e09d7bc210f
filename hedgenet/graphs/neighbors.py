"""Neighbour lists with periodic shifts, the heterogeneous atom graph, and batching.

A :class:`Graph` holds one structure (or a batch of them) as plain tensors:

* nodes: ``pos`` (N, 3) Å, ``numbers`` (N,), ``species`` (N,) index into the model's element list,
  ``layer`` (N,), ``batch`` (N,) graph index, ``cell`` (B, 3, 3) Å (rows are lattice vectors);
* message edges, one edge set per relation type (see :mod:`hedgenet.graphs.relations`):
  ``rel_index[name]`` (2, E_r) with ``index[0] = i`` the centre (receiver) and ``index[1] = j`` the
  neighbour (sender) of a message j -> i, and ``rel_shift[name]`` (E_r, 3) the integer cell shift R
  (stored as float), so the edge vector is ``r_ij = pos[j] + R·cell − pos[i]``;
* with a model's long-range interlayer dispersion tail (:mod:`hedgenet.models.dispersion`), one more edge set
  ``rel_index["dispersion"]`` / ``rel_shift["dispersion"]`` (:data:`DISPERSION`): every ordered pair of atoms
  in different layers within the tail's cutoff (no message passes along it);
* block edges, for the orbital blocks H_ij(R): ``block_index`` (2, E_b), ``block_shift`` (E_b, 3), in
  exactly the order of :func:`hedgenet.orbitals.blocks.block_edges` (self edges (i, i, 0) included),
  ``block_reverse`` (E_b,) the index of (j, i, −R), ``block_kind`` (E_b,) 0 on-site / 1 intra / 2 inter;
* labels when known: ``energy`` (B,) eV, ``forces`` (N, 3) eV/Å, ``virial`` (B, 3, 3) eV (W = −∂E/∂ε;
  NaN for a graph whose dataset has none), ``H`` (E_b, n_max, n_max) eV, ``S``,
  ``block_mask`` (E_b, n_max, n_max) bool (real orbitals, not padding).

:func:`collate` concatenates graphs and offsets node indices (by the node count) and ``block_reverse``
(by the block-edge count) of every graph that precedes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from hedgenet.graphs.relations import RelationSpec
from hedgenet.orbitals.layout import OrbitalLayout


DISPERSION = "dispersion"
"""Key of the dispersion tail's pairs in ``Graph.rel_index`` / ``rel_shift`` (never a relation type's name)."""


# ---------------------------------------------------------------------------------------------- lists
def neighbor_pairs(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs (i, j, R) with 0 < |r_j + R·cell − r_i| < cutoff (Å).

    Returns ``i``, ``j`` (int64), ``shift`` (E, 3) int64 in lattice units and ``dist`` (E,) Å. Uses
    matscipy (fast, what MACE uses) and falls back to ASE.
    """
    try:
        from matscipy.neighbours import neighbour_list

        i, j, shift, dist = neighbour_list("ijSd", atoms=atoms, cutoff=float(cutoff))
    except Exception:  # pragma: no cover - matscipy missing or refusing the cell
        from ase.neighborlist import neighbor_list

        i, j, shift, dist = neighbor_list("ijSd", atoms, float(cutoff))
    keep = dist > 1e-8  # never a self pair i == j at R = 0
    return (
        i[keep].astype(np.int64),
        j[keep].astype(np.int64),
        np.asarray(shift[keep], dtype=np.int64).reshape(-1, 3),
        dist[keep],
    )


def relation_edges(
    atoms: Atoms, relations: RelationSpec
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Edges of every relation type: ``{type: (index (2, E) [i; j], shift (E, 3))}``, i the receiver.

    An ordered pair gets the type its relation function assigns and exists when shorter than that
    type's cutoff; the layer index is ``atoms.arrays["layer"]`` (detected from covalent bonds if absent).
    """
    layer = _layer_of(atoms)
    i, j, shift, dist = neighbor_pairs(atoms, relations.max_cutoff)
    kind = relations.classify(atoms.numbers[i], atoms.numbers[j], layer[i], layer[j])
    cut = np.asarray(relations.cutoffs)[kind] if len(kind) else np.zeros(0)
    out = {}
    for t, name in enumerate(relations.types):
        sel = (kind == t) & (dist < cut)
        out[name] = (np.stack([i[sel], j[sel]]), shift[sel])
    return out


def edge_vectors(pos: torch.Tensor, i: torch.Tensor, j: torch.Tensor, shift: torch.Tensor,
                 cell_of_atom: torch.Tensor) -> torch.Tensor:
    """r_ij = pos[j] + R·cell − pos[i] (E, 3) in Å of the edges i ← j with integer cell shifts ``shift`` (E, 3),
    ``cell_of_atom`` (N, 3, 3) each atom's cell (rows are lattice vectors), in ``pos``'s dtype."""
    return pos[j] - pos[i] + torch.einsum("ek,ekl->el", shift.to(pos.dtype), cell_of_atom[i])


def interlayer_pairs(atoms: Atoms, cutoff: float, layer: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair (i, j, R) of atoms in different layers closer than ``cutoff`` (Å): ``(index (2, E)
    [i; j], shift (E, 3))``, both orders of each pair; ``layer`` (N,) as in :func:`relation_edges` when None."""
    layer = _layer_of(atoms) if layer is None else layer
    i, j, shift, _ = neighbor_pairs(atoms, cutoff)
    sel = layer[i] != layer[j]
    return np.stack([i[sel], j[sel]]), shift[sel]


def reverse_edge_index(edge_index: np.ndarray, cell_shift: np.ndarray) -> np.ndarray:
    """For every edge (i, j, R) the position of (j, i, −R) in the same list (ValueError if absent)."""
    i, j = edge_index
    if len(i) == 0:
        return np.zeros(0, dtype=np.int64)
    off = int(np.abs(cell_shift).max(initial=0)) + 1
    base = 2 * off + 1
    n = int(max(i.max(), j.max())) + 1

    def key(a, b, r):
        k = a * n + b
        for c in range(3):
            k = k * base + (r[:, c] + off)
        return k

    fwd = key(i, j, cell_shift)
    rev = key(j, i, -cell_shift)
    order = np.argsort(fwd, kind="stable")
    pos = np.searchsorted(fwd[order], rev)
    pos = np.minimum(pos, len(fwd) - 1)
    found = order[pos]
    if not np.array_equal(fwd[found], rev):
        raise ValueError("block edge list is not closed under (i, j, R) -> (j, i, -R); cannot symmetrise")
    return found.astype(np.int64)


def _layer_of(atoms: Atoms) -> np.ndarray:
    """The stored layer index, else the one detected from covalent bonds (:mod:`hedgenet.structures.layers`):
    a structure without one is never taken for a single layer."""
    from hedgenet.structures.layers import layer_index

    return layer_index(atoms)


# ---------------------------------------------------------------------------------------------- graph
@dataclass
class Graph:
    """One structure or a batch (see the module docstring for every field and its unit)."""

    pos: torch.Tensor
    numbers: torch.Tensor
    species: torch.Tensor
    layer: torch.Tensor
    batch: torch.Tensor
    cell: torch.Tensor
    n_atoms: torch.Tensor
    rel_index: dict[str, torch.Tensor]
    rel_shift: dict[str, torch.Tensor]
    block_index: torch.Tensor | None = None
    block_shift: torch.Tensor | None = None
    block_reverse: torch.Tensor | None = None
    block_kind: torch.Tensor | None = None
    energy: torch.Tensor | None = None
    forces: torch.Tensor | None = None
    virial: torch.Tensor | None = None
    H: torch.Tensor | None = None
    S: torch.Tensor | None = None
    block_mask: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    @property
    def num_graphs(self) -> int:
        return int(self.n_atoms.numel())

    @property
    def edge_index(self) -> torch.Tensor | None:
        """Alias of ``block_index`` (the block-edge list, used by the metrics' block kinds)."""
        return self.block_index

    @property
    def cell_shift(self) -> torch.Tensor | None:
        return self.block_shift

    def to(self, device=None, dtype: torch.dtype | None = None, non_blocking: bool = False) -> "Graph":
        """Move every tensor to ``device``; floating tensors also to ``dtype`` if given."""

        def mv(x):
            if isinstance(x, torch.Tensor):
                if dtype is not None and x.is_floating_point():
                    return x.to(device=device, dtype=dtype, non_blocking=non_blocking)
                return x.to(device=device, non_blocking=non_blocking)
            if isinstance(x, dict):
                return {k: mv(v) for k, v in x.items()}
            return x

        return dataclasses.replace(
            self, **{f.name: mv(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "info"}
        )


def as_graph(batch) -> Graph:
    """``batch`` as a :class:`Graph`: a Graph as it is, a PyG ``HeteroData`` or PyG batch of them (from
    :func:`hedgenet.graphs.pyg.to_heterodata`, e.g. out of a ``torch_geometric.loader.DataLoader``) converted
    without copying a tensor; PyG is imported only when such an object arrives."""
    if isinstance(batch, Graph) or not (hasattr(batch, "node_types") and hasattr(batch, "edge_types")):
        return batch
    from hedgenet.graphs.pyg import from_heterodata

    return from_heterodata(batch)


def collate(graphs: Sequence[Graph]) -> Graph:
    """Batch graphs into one: concatenate along nodes/edges, offset node and block-edge indices."""
    graphs = list(graphs)
    if len(graphs) == 1 and graphs[0].num_graphs == 1:
        return graphs[0]
    n_nodes = torch.tensor([g.pos.shape[0] for g in graphs])
    node_off = torch.cumsum(n_nodes, 0) - n_nodes
    n_graphs = torch.tensor([g.num_graphs for g in graphs])
    batch_off = torch.cumsum(n_graphs, 0) - n_graphs

    def cat(name, offsets=None):
        vals = [getattr(g, name) for g in graphs]
        if any(v is None for v in vals):
            return None
        if offsets is not None:
            vals = [v + o for v, o in zip(vals, offsets)]
        return torch.cat(vals, dim=-1 if name in ("block_index",) else 0)

    rel_names = list(graphs[0].rel_index)
    rel_index = {
        r: torch.cat([g.rel_index[r] + o for g, o in zip(graphs, node_off)], dim=1) for r in rel_names
    }
    rel_shift = {r: torch.cat([g.rel_shift[r] for g in graphs], dim=0) for r in rel_names}
    virial = None
    if any(g.virial is not None for g in graphs):  # graphs without the label (other datasets) get NaN
        virial = torch.cat([g.virial if g.virial is not None
                            else torch.full((g.num_graphs, 3, 3), float("nan"), dtype=g.pos.dtype) for g in graphs])
    block_off = None
    if graphs[0].block_index is not None:
        n_blocks = torch.tensor([g.block_index.shape[1] for g in graphs])
        block_off = torch.cumsum(n_blocks, 0) - n_blocks
    return Graph(
        pos=cat("pos"),
        numbers=cat("numbers"),
        species=cat("species"),
        layer=cat("layer"),
        batch=cat("batch", batch_off),
        cell=cat("cell"),
        n_atoms=cat("n_atoms"),
        rel_index=rel_index,
        rel_shift=rel_shift,
        block_index=cat("block_index", node_off),
        block_shift=cat("block_shift"),
        block_reverse=cat("block_reverse", block_off) if block_off is not None else None,
        block_kind=cat("block_kind"),
        energy=cat("energy"),
        forces=cat("forces"),
        virial=virial,
        H=cat("H"),
        S=cat("S"),
        block_mask=cat("block_mask"),
        info={"graphs": [g.info for g in graphs]},
    )


def subsample_block_edges(graph: Graph, fraction: float, generator: torch.Generator | None = None) -> Graph:
    """``graph`` with a random ``fraction`` of its block edges, each kept together with its reverse (j, i, −R)
    (the heads symmetrise over that pair), and their labels; nodes and message edges unchanged.

    Every block edge is kept with the same probability, on-site ones included, so the H and S losses, means over
    block elements, stay unbiased estimates of the full ones: a training step pays for the block heads on a
    fraction of the edges. ``block_reverse`` is renumbered into the kept list. ``fraction`` ≥ 1 returns ``graph``.
    """
    graph = as_graph(graph)
    if graph.block_index is None or fraction >= 1.0:
        return graph
    return keep_block_edges(graph, block_edge_sample(graph, fraction, generator))


def block_edge_sample(graph: Graph, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The indices of a random ``fraction`` of ``graph``'s block edges, each with its reverse (sorted): the draw of
    :func:`subsample_block_edges`, for arrays that live on those edges too."""
    if not 0.0 < fraction:
        raise ValueError(f"block-edge fraction {fraction} must be in (0, 1]. Fix: train.block_edge_fraction=1.0 "
                         "keeps every block edge")
    n = graph.block_index.shape[1]
    rev = graph.block_reverse
    device = rev.device
    draw = (torch.rand(n, generator=generator) < fraction).to(device)  # drawn on the CPU: the same on any device
    first = torch.arange(n, device=device) <= rev  # one draw per pair {e, reverse(e)}: the one of its lower index
    picked = draw & first
    keep = (picked | picked[rev]).nonzero().squeeze(1)
    if keep.numel() == 0:  # a tiny graph and an unlucky draw: keep one pair
        keep = torch.unique(torch.stack([torch.zeros((), dtype=torch.long, device=device), rev[0]]))
    return keep


def keep_block_edges(graph: Graph, keep: torch.Tensor) -> Graph:
    """``graph`` with the block edges ``keep`` (sorted indices, closed under reversal) and their labels;
    ``block_reverse`` renumbered into the kept list."""
    n, rev, device = graph.block_index.shape[1], graph.block_reverse, graph.block_reverse.device
    renumber = torch.full((n,), -1, dtype=torch.long, device=device)
    renumber[keep] = torch.arange(keep.numel(), device=device)

    def pick(x):
        return None if x is None else x[keep]

    return dataclasses.replace(
        graph, block_index=graph.block_index[:, keep], block_shift=pick(graph.block_shift),
        block_reverse=renumber[rev[keep]], block_kind=pick(graph.block_kind), H=pick(graph.H), S=pick(graph.S),
        block_mask=pick(graph.block_mask),
    )


# ---------------------------------------------------------------------------------------------- builder
class GraphBuilder:
    """Turns ``ase.Atoms`` or a dataset sample (dict from :class:`hedgenet.data.store.DatasetStore`)
    into a :class:`Graph` for a model with the given relations, elements and (optional) orbital blocks.

    Parameters
    ----------
    relations:
        The relation function (:func:`hedgenet.graphs.relations.make_relations`).
    elements:
        Atomic numbers the model knows; ``species`` is the index into this sorted list.
    layout, block_cutoff:
        Orbital layout and block cutoff (Å) of the Hamiltonian head; ``None`` skips block edges.
        Blocks are padded to ``n_max`` = the largest orbital count over ``elements`` (so every graph of
        one model has the same block shape).
    dispersion_cutoff:
        Cutoff (Å) of the model's interlayer dispersion tail: its pairs go to ``rel_index[DISPERSION]``;
        ``None``: no tail, no such edges.
    """

    def __init__(
        self,
        relations: RelationSpec,
        elements: Sequence[int],
        layout: OrbitalLayout | None = None,
        block_cutoff: float | None = None,
        dispersion_cutoff: float | None = None,
    ):
        if DISPERSION in relations.types:
            raise ValueError(f"relation type name {DISPERSION!r} is reserved for the dispersion tail's pairs")
        self.relations = relations
        self.dispersion_cutoff = None if dispersion_cutoff is None else float(dispersion_cutoff)
        self.elements = tuple(sorted(int(z) for z in set(elements)))
        self.layout = layout
        self.block_cutoff = None if block_cutoff is None else float(block_cutoff)
        self.with_blocks = layout is not None and block_cutoff is not None
        self.n_max = max(layout.n_orb(z) for z in self.elements) if layout is not None else 0
        self._species = {z: k for k, z in enumerate(self.elements)}

    def __call__(self, item) -> Graph:
        if isinstance(item, Atoms):
            return self.from_atoms(item)
        return self.from_sample(item)

    def species_of(self, numbers) -> np.ndarray:
        """Index of every atomic number in the model's element list (ValueError naming unknown ones)."""
        unknown = sorted(set(int(z) for z in numbers) - set(self._species))
        if unknown:
            from ase.data import chemical_symbols

            raise ValueError(
                f"element(s) {[chemical_symbols[z] for z in unknown]} not among the model's elements "
                f"{[chemical_symbols[z] for z in self.elements]}. Fix: add them to model.elements."
            )
        return np.array([self._species[int(z)] for z in numbers], dtype=np.int64)

    def from_atoms(self, atoms: Atoms, labels: dict | None = None) -> Graph:
        """Graph of ``atoms``; block edges from :func:`hedgenet.orbitals.blocks.block_edges` unless
        ``labels`` carries ``edge_index``/``cell_shift`` (then those, checked against the cutoff)."""
        labels = labels or {}
        layer = _layer_of(atoms)
        rel = relation_edges(atoms, self.relations)
        if self.dispersion_cutoff is not None:
            rel[DISPERSION] = interlayer_pairs(atoms, self.dispersion_cutoff, layer)
        dtype = torch.float64
        g = Graph(
            pos=torch.tensor(atoms.positions, dtype=dtype),
            numbers=torch.tensor(atoms.numbers, dtype=torch.long),
            species=torch.from_numpy(self.species_of(atoms.numbers)),
            layer=torch.from_numpy(layer),
            batch=torch.zeros(len(atoms), dtype=torch.long),
            cell=torch.tensor(np.asarray(atoms.cell.array), dtype=dtype)[None],
            n_atoms=torch.tensor([len(atoms)]),
            rel_index={k: torch.from_numpy(v[0]) for k, v in rel.items()},
            rel_shift={k: torch.from_numpy(v[1]).to(dtype) for k, v in rel.items()},
        )
        if "energy" in labels and labels["energy"] is not None:
            g.energy = torch.tensor([float(labels["energy"])], dtype=dtype)
        if labels.get("forces") is not None:
            g.forces = torch.tensor(np.asarray(labels["forces"]), dtype=dtype)
        if labels.get("virial") is not None:
            g.virial = torch.tensor(np.asarray(labels["virial"]), dtype=dtype).reshape(1, 3, 3)
        if self.with_blocks:
            self._add_blocks(g, atoms, layer, labels)
        return g

    def _add_blocks(self, g: Graph, atoms: Atoms, layer: np.ndarray, labels: dict) -> None:
        from hedgenet.orbitals.blocks import block_edges

        if labels.get("edge_index") is not None:
            ei = np.asarray(labels["edge_index"], dtype=np.int64)
            shift = np.asarray(labels["cell_shift"], dtype=np.int64).reshape(-1, 3)
            vec = atoms.positions[ei[1]] + shift @ atoms.cell.array - atoms.positions[ei[0]]
            dmax = float(np.linalg.norm(vec, axis=1).max(initial=0.0))
            if dmax > self.block_cutoff + 1e-6:
                raise ValueError(
                    f"the dataset has orbital blocks up to {dmax:.3f} Å but the model's block_cutoff is "
                    f"{self.block_cutoff:.3f} Å. Fix: set model.block_cutoff to the dataset's "
                    f"reference block_cutoff."
                )
        else:
            ei, shift, _ = block_edges(atoms, self.block_cutoff)
        onsite = (ei[0] == ei[1]) & (shift == 0).all(axis=1)
        kind = np.where(onsite, 0, np.where(layer[ei[0]] == layer[ei[1]], 1, 2))
        g.block_index = torch.from_numpy(ei)
        g.block_shift = torch.from_numpy(shift).to(g.pos.dtype)
        g.block_reverse = torch.from_numpy(reverse_edge_index(ei, shift))
        g.block_kind = torch.from_numpy(kind.astype(np.int64))
        n_orb = np.array([self.layout.n_orb(int(z)) for z in atoms.numbers])
        orb_mask = np.arange(self.n_max)[None, :] < n_orb[:, None]
        g.block_mask = torch.from_numpy(orb_mask[ei[0]][:, :, None] & orb_mask[ei[1]][:, None, :])
        for key in ("H", "S"):
            if labels.get(key) is not None:
                m = np.asarray(labels[key])
                out = np.zeros((m.shape[0], self.n_max, self.n_max))
                out[:, : m.shape[1], : m.shape[2]] = m
                setattr(g, key, torch.from_numpy(out))

    def from_sample(self, sample: dict) -> Graph:
        """Graph of one labelled dataset sample (positions Å, cell Å, energy eV, forces eV/Å, virial eV, H, S)."""
        atoms = Atoms(
            numbers=np.asarray(sample["numbers"]),
            positions=np.asarray(sample["positions"]),
            cell=np.asarray(sample["cell"]),
            pbc=np.asarray(sample.get("pbc", (True, True, True)), dtype=bool),
        )
        if sample.get("layer") is not None:
            atoms.arrays["layer"] = np.asarray(sample["layer"], dtype=np.int64)
        g = self.from_atoms(atoms, labels=sample)
        g.info = {k: sample[k] for k in ("dataset", "sample_id", "fermi_level_eV") if k in sample}
        return g
