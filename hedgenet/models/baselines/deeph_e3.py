"""``model=deeph_e3``: an E(3)-equivariant Hamiltonian network on a homogeneous graph, in the style of
DeepH-E3 (Gong et al., Nat. Commun. 14, 2848 (2023)); our own code with e3nn.

What makes it DeepH-E3 and not HedgeNet:

* **one edge type**: the graph is the Hamiltonian's own, every (i, j, R) with 0 < |r_ij| < block_cutoff
  (the off-site block edges), whatever the layers or elements (no relation types);
* **edge features** live on every edge and are updated by equivariant message passing together with the
  node features. Layer k:

  - node update: m_ij = TP_uvu([h_j ‖ e_ij] ⊗ Y(r̂_ij); MLP(RBF(r_ij))) summed over j (÷ √avg neighbours),
    plus a species self-connection, gate, residual;
  - edge update: e_ij ← gate(TP_uvu([h_i ‖ h_j ‖ e_ij] ⊗ Y(r̂_ij); MLP(RBF(r_ij)))), residual;

* **blocks from edges**: the final edge features, coupled once more to Y(r̂_ij) up to the blocks' largest
  L, give the off-site blocks H_ij(R); on-site blocks come from the final node features.

Block conventions are hedgenet's (:mod:`hedgenet.models.blocks_head`): the same Clebsch–Gordan decoder,
identity-like on-site references and output scale set from data, symmetrisation H_ij(R) = H_ji(−R)ᵀ, and
S from the same :class:`~hedgenet.models.blocks_head.TwoCenterHead`; so predictions are BlockSets in the
reference's format. ``task=joint`` adds HedgeNet's energy head (per-atom MLP of the node scalars, per-
species scale and shift; forces −∂E/∂r); ``task=forces`` is refused (use HedgeNet or MACE for that).
The radial basis (Bessel × polynomial envelope, cutoff block_cutoff) makes every feature vanish smoothly
at the cutoff, so energies and forces are smooth when pairs cross it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn as tnn

from hedgenet.graphs.neighbors import GraphBuilder, edge_vectors
from hedgenet.graphs.relations import make_relations
from hedgenet.models._e3nn import e3nn_build_options, nn, o3
from hedgenet.models.base import (
    TASKS,
    GraphModel,
    as_dtype,
    average_neighbors,
    choice_error,
    init_energy_head,
    size_with_defaults,
)
from hedgenet.models.blocks_head import (
    BlockHeadBase,
    OrbitalBlockDecoder,
    RadialBasis,
    TwoCenterHead,
    finish_blocks,
    init_block_statistics,
    uvu_tensor_product,
)
from hedgenet.models.hedgenet import hidden_irreps
from hedgenet.orbitals.layout import OrbitalLayout

DEEPH_DEFAULT_SIZE = {"channels": 16, "edge_channels": 16, "lmax": 1, "num_layers": 2}
"""Channels per irrep of node and edge features (every l ≤ ``lmax``, both parities) and layers."""


def _gate(irreps_hidden: o3.Irreps) -> nn.Gate:
    scalars = o3.Irreps([(m, ir) for m, ir in irreps_hidden if ir.l == 0])
    gated = o3.Irreps([(m, ir) for m, ir in irreps_hidden if ir.l > 0])
    return nn.Gate(scalars, [torch.nn.functional.silu], o3.Irreps(f"{gated.num_irreps}x0e"), [torch.sigmoid], gated)


class EquivariantUpdate(tnn.Module):
    """gate(Linear(TP_uvu(x ⊗ Y(r̂); MLP(RBF)))) per edge: the building block of both updates."""

    def __init__(self, irreps_in, irreps_sh, irreps_hidden, num_basis: int, radial_hidden: int):
        super().__init__()
        self.gate = _gate(irreps_hidden)
        self.tp = uvu_tensor_product(irreps_in, irreps_sh, self.gate.irreps_in)
        self.weights = nn.FullyConnectedNet(
            [num_basis, radial_hidden, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu
        )
        self.linear = o3.Linear(self.tp.irreps_out.simplify(), self.gate.irreps_in)
        self.irreps_out = self.gate.irreps_out

    def pre_gate(self, x, sh, rbf):
        return self.linear(self.tp(x, sh, self.weights(rbf)))


class DeepHLayer(tnn.Module):
    """Node update from [h_j ‖ e_ij] messages, then edge update from [h_i ‖ h_j ‖ e_ij] (see module doc)."""

    def __init__(self, irreps_node, irreps_edge, irreps_node_hidden, irreps_edge_hidden, irreps_sh, n_species,
                 num_basis, radial_hidden):
        super().__init__()
        irreps_node, irreps_edge = o3.Irreps(irreps_node), o3.Irreps(irreps_edge)
        self.node = EquivariantUpdate(irreps_node + irreps_edge, irreps_sh, irreps_node_hidden, num_basis,
                                      radial_hidden)
        self.self_connection = o3.FullyConnectedTensorProduct(
            irreps_node, o3.Irreps(f"{n_species}x0e"), self.node.gate.irreps_in
        )
        node_out = self.node.irreps_out
        self.edge = EquivariantUpdate(node_out + node_out + irreps_edge, irreps_sh, irreps_edge_hidden, num_basis,
                                      radial_hidden)
        self.node_residual = irreps_node == node_out
        self.edge_residual = irreps_edge == self.edge.irreps_out
        self.irreps_node_out, self.irreps_edge_out = node_out, self.edge.irreps_out
        self.register_buffer("avg_num_neighbors", torch.tensor(10.0))

    def forward(self, h, e, onehot, i, j, sh, rbf):
        msg = self.node.pre_gate(torch.cat([h[j], e], dim=-1), sh, rbf)
        agg = msg.new_zeros(h.shape[0], msg.shape[1]).index_add(0, i, msg)
        m = agg / self.avg_num_neighbors.to(agg.dtype).sqrt() + self.self_connection(h, onehot)
        h_new = self.node.gate(m)
        h = h + h_new if self.node_residual else h_new
        e_new = self.edge.gate(self.edge.pre_gate(torch.cat([h[i], h[j], e], dim=-1), sh, rbf))
        e = e + e_new if self.edge_residual else e_new
        return h, e


class EdgeBlockHead(BlockHeadBase):
    """H blocks from final edge (off-site) and node (on-site) features, with hedgenet's block conventions
    (same attributes as :class:`~hedgenet.models.blocks_head.BlockHead`: ``decoder``, ``onsite_coef``,
    ``scale``, so :func:`~hedgenet.models.blocks_head.init_block_statistics` sets them from data)."""

    def __init__(self, irreps_node, irreps_edge, layout: OrbitalLayout, elements: Sequence[int], block_cutoff: float,
                 num_basis: int, radial_hidden: int):
        super().__init__()
        self.targets = ("H",)
        self.decoder = OrbitalBlockDecoder(layout, elements)
        out = self.decoder.irreps
        self.irreps_sh = o3.Irreps.spherical_harmonics(max(ir.l for _, ir in out))
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.radial = RadialBasis(block_cutoff, num_basis)
        self.tp = uvu_tensor_product(irreps_edge, self.irreps_sh, out)
        self.weights = nn.FullyConnectedNet(
            [num_basis, radial_hidden, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu
        )
        self.lin_out = o3.Linear(self.tp.irreps_out.simplify(), out)
        self.lin_on = o3.Linear(irreps_node, out)
        self.lin_on_a = o3.Linear(irreps_node, irreps_node)
        self.lin_on_b = o3.Linear(irreps_node, irreps_node)
        self.tp_on = o3.FullyConnectedTensorProduct(irreps_node, irreps_node, out)
        self.onsite_coef = tnn.Parameter(torch.zeros(1, self.decoder.onsite_basis.shape[0]))
        self.register_buffer("scale", torch.ones(1))

    def forward(self, h, e, vec, species, index, on, off, reverse) -> dict[str, torch.Tensor]:
        dim = self.decoder.irreps.dim
        feats = h.new_zeros(index.shape[1], dim)
        if off.numel():
            y = self.tp(e, self.sh(vec), self.weights(self.radial(vec.norm(dim=1))))
            feats = feats.index_copy(0, off, self.lin_out(y))
        if on.numel():
            ho = h[index[0, on]]
            feats = feats.index_copy(0, on, self.lin_on(ho) + self.tp_on(self.lin_on_a(ho), self.lin_on_b(ho)))
        return finish_blocks(self, feats.unsqueeze(1), species, index, on, reverse)


class DeepHE3(GraphModel):
    """DeepH-E3-like Hamiltonian network (see the module docstring).

    Parameters
    ----------
    elements:
        Atomic numbers (one-hot species embedding).
    layout, block_cutoff:
        Orbital layout (shells per element, or its JSON dict) and block cutoff (Å): the graph's cutoff too.
    size:
        Dict with any of the keys of :data:`DEEPH_DEFAULT_SIZE` (its values are the defaults).
    task:
        ``hamiltonian`` (H, S) or ``joint`` (also energy and forces).
    num_basis, radial_hidden:
        Bessel functions of the radial basis and hidden width of the radial MLPs.
    dtype:
        ``float32`` | ``float64``; the model is built in it.
    """

    messages_on_block_edges = True  # its messages run over the block edges

    def __init__(
        self,
        elements: Sequence[int],
        layout: OrbitalLayout | dict | None = None,
        block_cutoff: float | None = None,
        size: dict | None = None,
        task: str = "hamiltonian",
        num_basis: int = 8,
        radial_hidden: int = 32,
        dtype: str | torch.dtype | None = None,
    ):
        super().__init__()
        if task not in TASKS:
            raise choice_error("task", task, TASKS)
        if task == "forces":
            raise ValueError(
                "model=deeph_e3 is a Hamiltonian network; task=forces would leave it without its block head. "
                "Fix: use task=hamiltonian or task=joint with model=deeph_e3, or model=mace / "
                "model=hedgenet_small for energies and forces alone."
            )
        if layout is None or block_cutoff is None:
            raise ValueError(
                "model=deeph_e3 needs the orbital layout and block_cutoff (Å) of the dataset. Fix: pass layout= "
                "(dataset header 'orbital_layout') and block_cutoff=."
            )
        if isinstance(layout, dict):
            layout = OrbitalLayout.from_json(layout)
        dtype = as_dtype(dtype)
        hp = size_with_defaults("deeph_e3", size, DEEPH_DEFAULT_SIZE)
        self.config = {
            "elements": sorted(int(z) for z in set(elements)), "layout": layout.to_json(),
            "block_cutoff": float(block_cutoff), "size": hp, "task": task, "num_basis": int(num_basis),
            "radial_hidden": int(radial_hidden), "dtype": str(dtype).replace("torch.", ""),
        }
        self.task, self.outputs = task, TASKS[task]
        self.elements = tuple(self.config["elements"])
        self.layout, self.block_cutoff, self.size = layout, float(block_cutoff), hp
        self.relations = make_relations("single", cutoff=self.block_cutoff)
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # e3nn's Clebsch–Gordan constants are made in the default dtype
        try:
            with e3nn_build_options():
                self._build(hp, num_basis, radial_hidden)
        finally:
            torch.set_default_dtype(default)

    def _build(self, hp, num_basis, radial_hidden):
        n_sp = len(self.elements)
        c, ce, lmax = hp["channels"], hp["edge_channels"], hp["lmax"]
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.radial = RadialBasis(self.block_cutoff, num_basis)
        self.embedding = o3.Linear(o3.Irreps(f"{n_sp}x0e"), o3.Irreps(f"{c}x0e"))
        self.edge_embedding = nn.FullyConnectedNet([num_basis, radial_hidden, ce], torch.nn.functional.silu)
        node, edge = o3.Irreps(f"{c}x0e"), o3.Irreps(f"{ce}x0e")
        layers = []
        for _ in range(hp["num_layers"]):
            layer = DeepHLayer(node, edge, hidden_irreps(c, lmax), hidden_irreps(ce, lmax), self.irreps_sh, n_sp,
                               num_basis, radial_hidden)
            layers.append(layer)
            node, edge = layer.irreps_node_out, layer.irreps_edge_out
        self.layers = tnn.ModuleList(layers)
        self.n_scalars = c
        if "energy" in self.outputs:
            self.readout = tnn.Sequential(tnn.Linear(c, c), tnn.SiLU(), tnn.Linear(c, 1))
            self.energy_scale = tnn.Parameter(torch.ones(n_sp))
            self.energy_shift = tnn.Parameter(torch.zeros(n_sp))
        self.head_H = EdgeBlockHead(node, edge, self.layout, self.elements, self.block_cutoff, num_basis,
                                    radial_hidden)
        self.head_S = TwoCenterHead(self.layout, self.elements, self.block_cutoff, radial_hidden=radial_hidden)

    def graph_builder(self) -> GraphBuilder:
        """Graphs with block edges within ``block_cutoff`` (the message graph of this model)."""
        return GraphBuilder(self.relations, self.elements, self.layout, self.block_cutoff)

    def _forward(self, batch, pos: torch.Tensor, dtype: torch.dtype, blocks_grad: bool = True) -> dict:
        species = batch.species
        onehot = torch.nn.functional.one_hot(species, len(self.elements)).to(dtype)
        cell_of_atom = batch.cell.to(dtype)[batch.batch]
        index, shift = batch.block_index, batch.block_shift.to(dtype)
        onsite = (index[0] == index[1]) & (shift == 0).all(dim=1)
        on, off = onsite.nonzero().squeeze(1), (~onsite).nonzero().squeeze(1)
        i, j = index[:, off]
        vec = edge_vectors(pos, i, j, shift[off], cell_of_atom)
        sh, rbf = self.sh(vec), self.radial(vec.norm(dim=1))
        h, e = self.embedding(onehot), self.edge_embedding(rbf)
        for layer in self.layers:
            h, e = layer(h, e, onehot, i, j, sh, rbf)
        out = {}
        if "energy" in self.outputs:
            out.update(self._energy(h, species, batch))
        with torch.set_grad_enabled(torch.is_grad_enabled() and blocks_grad):
            out.update(self.head_H(h, e, vec, species, index, on, off, batch.block_reverse))
            out.update(self.head_S(h, species, pos, cell_of_atom, index, shift, batch.block_reverse))
        return out

    @torch.no_grad()
    def init_statistics(self, graphs) -> dict:
        """Average neighbour count (off-site block edges per atom), per-species energy shift and force
        scale (``task=joint``), and the on-site references and scales of the H and S heads."""
        def off_site(g):
            i, j = g.block_index
            return int(((i != j) | (g.block_shift != 0).any(dim=1)).sum())

        avg = average_neighbors(graphs, off_site)
        for layer in self.layers:
            layer.avg_num_neighbors.fill_(avg)
        stats: dict = {"avg_num_neighbors/all": avg}
        n_sp = len(self.elements)
        if "energy" in self.outputs:
            stats.update(init_energy_head(self, graphs))
        stats.update(init_block_statistics([(self.head_H, 0, "H"), (self.head_S, 0, "S")], graphs, n_sp,
                                           float(self.hamiltonian_shift_eV)))
        return stats
