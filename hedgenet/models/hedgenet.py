"""HedgeNet: E(3)-equivariant message passing on a heterogeneous (relation-typed) atom graph.

Architecture (NequIP/MACE style, e3nn 0.4.4):

* embedding: one-hot species -> ``c x 0e`` node features;
* ``num_layers`` interaction layers. In each, every relation type r (see
  :mod:`hedgenet.graphs.relations`) has its own message module: radial Bessel basis × polynomial envelope
  with the relation's cutoff, spherical harmonics of the edge vector, a 'uvu' tensor product of the
  neighbour's features with them, weighted per edge by a radial MLP, summed over neighbours
  (÷ √avg_num_neighbors_r). The node update sums the messages of all relation types and a species-
  dependent self-connection, applies a gate nonlinearity and adds the residual. Cross-layer relation types
  also feed their radial MLPs the interlayer registry (``registry_widths``,
  :mod:`hedgenet.models.registry`): the in-plane offset of each pair from the atoms' layer normals, which
  sets the sliding energy and the shear mode and which |r_ij| alone resolves too coarsely;
* heads, chosen by ``task``: ``forces`` -> per-atom energy (per-species scale and shift) summed to the
  total energy E (eV), forces F = −∂E/∂r (eV/Å) by autograd; ``hamiltonian`` -> H and S blocks
  (H: :class:`hedgenet.models.blocks_head.BlockHead` from the node features; S:
  :class:`~hedgenet.models.blocks_head.TwoCenterHead`, a function of the species pair and r_ij only); ``joint`` -> both;
* optionally (``dispersion_cutoff``) a learnable long-range interlayer dispersion tail added to the per-atom
  energies (:mod:`hedgenet.models.dispersion`): the binding of layers beyond the messages' cutoff.

Node features hold every l ≤ lmax with both parities (0e, 1o, 1e, 2e, 2o, ...), so blocks of any parity
(−1)^(l1+l2) can be produced.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn as tnn

from hedgenet.graphs.neighbors import DISPERSION, Graph, GraphBuilder, edge_vectors
from hedgenet.graphs.relations import RelationSpec, make_relations
from hedgenet.models._e3nn import e3nn_build_options, nn, o3
from hedgenet.models.base import (
    TASKS,
    GraphModel,
    as_dtype,
    average_neighbors,
    choice_error,
    count_parameters,
    init_energy_head,
)
from hedgenet.models.blocks_head import (
    BlockHead,
    OnsitePairSum,
    RadialBasis,
    TwoCenterHead,
    init_block_statistics,
    uvu_tensor_product,
)
from hedgenet.models.dispersion import InterlayerDispersion
from hedgenet.models.registry import normal_projectors, registry_features
from hedgenet.orbitals.layout import OrbitalLayout

SIZES: dict[str, dict] = {
    "hedgenet_small": {"channels": 16, "lmax": 1, "num_layers": 2, "head_channels": 16, "correlation": 2,
                       "onsite_pair_sum": True},
    "hedgenet_medium": {"channels": 32, "lmax": 2, "num_layers": 3, "head_channels": 16, "correlation": 2,
                       "onsite_pair_sum": True},
    "hedgenet_large": {"channels": 64, "lmax": 2, "num_layers": 4, "head_channels": 32, "correlation": 2,
                       "onsite_pair_sum": True},
}
"""Named model sizes: channels per irrep, max angular momentum of node features, interaction layers,
channels of the per-edge pair features in the H/S heads (``head_channels``, default = channels) and the body
order per layer (``correlation``: 2 = messages and their square per atom, :class:`NodeProduct`), and
``onsite_pair_sum`` (on in every named size): environment-dependent on-site energies as a sum over neighbours in
the H head (:class:`~hedgenet.models.blocks_head.OnsitePairSum`, over the relation edges); models saved without
the key load without it."""

def model_size(size: str | dict) -> dict:
    """Hyperparameters of a named size (``hedgenet_small|medium|large``) or a dict passed through
    (keys ``channels``, ``lmax``, ``num_layers``, optional ``head_channels``, ``correlation``: 1 = two-body
    messages only, 2 = plus their channel-wise square per node, 3 = and their cube, :class:`NodeProduct`, and
    ``onsite_pair_sum``: the on-site energies' sum over neighbours, off when absent)."""
    if isinstance(size, dict):
        missing = {"channels", "lmax", "num_layers"} - set(size)
        if missing:
            raise ValueError(f"model size dict lacks {sorted(missing)}")
        return dict(size)
    if size not in SIZES:
        raise choice_error("model size", size, SIZES)
    return dict(SIZES[size])


def hidden_irreps(channels: int, lmax: int) -> o3.Irreps:
    """``c x 0e`` followed by ``c x lo + c x le`` for l = 1..lmax (the gate's output order)."""
    parts = [(channels, (0, 1))]
    for l in range(1, lmax + 1):
        parts += [(channels, (l, (-1) ** l)), (channels, (l, -((-1) ** l)))]
    return o3.Irreps(parts)


class RelationMessage(tnn.Module):
    """Messages of one relation type: Σ_j TP(W h_j, Y(r̂_ij); MLP(RBF(|r_ij|) ⊕ edge features)) / √avg_num_neighbors."""

    def __init__(
        self,
        irreps_node: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_target: o3.Irreps,
        cutoff: float,
        num_basis: int,
        radial_hidden: int,
        num_edge_features: int = 0,
    ):
        super().__init__()
        self.linear_up = o3.Linear(irreps_node, irreps_node)
        self.tp = uvu_tensor_product(irreps_node, irreps_sh, irreps_target)
        self.radial = RadialBasis(cutoff, num_basis)
        # the radial MLP has no biases and silu(0) = 0: weights vanish with the (enveloped) inputs at the cutoff
        self.weights = nn.FullyConnectedNet(
            [num_basis + num_edge_features, radial_hidden, radial_hidden, self.tp.weight_numel],
            torch.nn.functional.silu,
        )
        self.linear_down = o3.Linear(self.tp.irreps_out.simplify(), irreps_target)
        self.register_buffer("avg_num_neighbors", torch.tensor(10.0))

    def forward(
        self, h: torch.Tensor, index: torch.Tensor, vec: torch.Tensor, sh: torch.Tensor,
        edge_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``edge_features``: (E, num_edge_features) invariants beyond |r_ij| (the interlayer registry)."""
        i, j = index
        radial = self.radial(vec.norm(dim=1))
        if edge_features is not None:
            radial = torch.cat([radial, edge_features], dim=1)
        w = self.weights(radial)
        msg = self.tp(self.linear_up(h)[j], sh, w)
        agg = msg.new_zeros(h.shape[0], msg.shape[1]).index_add(0, i, msg)
        return self.linear_down(agg / self.avg_num_neighbors.to(agg.dtype).sqrt())


def channelwise_product(irreps1: o3.Irreps, irreps2: o3.Irreps, allowed: set, symmetric: bool) -> o3.TensorProduct:
    """Channel-by-channel ('uuu') tensor product of two equal-multiplicity irreps, every path into an irrep of
    ``allowed`` with one learned weight per channel; ``symmetric``: the two inputs are the same tensor, so each
    unordered pair of irreps once."""
    irreps_mid, instructions = [], []
    for i1, (mul, ir1) in enumerate(irreps1):
        for i2, (_, ir2) in enumerate(irreps2):
            if symmetric and i2 < i1:
                continue
            for ir_out in ir1 * ir2:
                if ir_out in allowed:
                    instructions.append((i1, i2, len(irreps_mid), "uuu", True))
                    irreps_mid.append((mul, ir_out))
    return o3.TensorProduct(irreps1, irreps2, o3.Irreps(irreps_mid), instructions)


class NodeProduct(tnn.Module):
    """Body order beyond two per layer (MACE's correlation order ν): the aggregated messages A_i, brought to
    ``channels x`` each irrep of ``hidden_irreps(channels, lmax)``, multiplied with themselves channel by channel
    (every symmetric path A ⊗ A -> l ≤ lmax, one learned weight per channel and path; with ``correlation`` 3 also
    A ⊗ (A ⊗ A)) and mapped back to the layer's target irreps. A_i is a sum over neighbours, so its square holds
    three-body (j, k around i) and its cube four-body terms that a message linear in h_j cannot; per node, so
    its cost is small beside the per-edge messages."""

    def __init__(self, irreps_in: o3.Irreps, channels: int, lmax: int, irreps_target: o3.Irreps,
                 correlation: int = 2):
        super().__init__()
        irreps_x = hidden_irreps(channels, lmax)
        allowed = {ir for _, ir in irreps_x}
        self.linear_in = o3.Linear(irreps_in, irreps_x)
        self.tp = channelwise_product(irreps_x, irreps_x, allowed, symmetric=True)
        self.linear_out = o3.Linear(self.tp.irreps_out, irreps_target)
        self.cube = None
        if correlation == 3:
            self.square_to_x = o3.Linear(self.tp.irreps_out, irreps_x)
            self.cube = channelwise_product(irreps_x, irreps_x, allowed, symmetric=False)
            self.cube_out = o3.Linear(self.cube.irreps_out, irreps_target)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        x = self.linear_in(m)
        square = self.tp(x, x)
        out = self.linear_out(square)
        if self.cube is not None:
            out = out + self.cube_out(self.cube(x, self.square_to_x(square)))
        return out


class InteractionLayer(tnn.Module):
    """One message-passing layer: per-relation messages + self-connection (+ their channel-wise square and, with
    ``correlation`` = 3, cube: :class:`NodeProduct`) -> gate -> residual."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_hidden: o3.Irreps,
        irreps_sh: o3.Irreps,
        n_species: int,
        cutoffs: Sequence[float],
        num_basis: int,
        radial_hidden: int,
        num_edge_features: Sequence[int] | None = None,
        correlation: int = 1,
    ):
        super().__init__()
        if correlation not in (1, 2, 3):
            raise ValueError(f"correlation={correlation} must be 1 (two-body messages), 2 (plus their square) or 3 "
                             "(and their cube)")
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_hidden if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_hidden if ir.l > 0])
        self.gate = nn.Gate(
            scalars, [torch.nn.functional.silu],
            o3.Irreps(f"{gated.num_irreps}x0e"), [torch.sigmoid],
            gated,
        )
        target = self.gate.irreps_in
        self.messages = tnn.ModuleList(
            RelationMessage(irreps_in, irreps_sh, target, c, num_basis, radial_hidden, k)
            for c, k in zip(cutoffs, num_edge_features or [0] * len(cutoffs))
        )
        self.self_connection = o3.FullyConnectedTensorProduct(irreps_in, o3.Irreps(f"{n_species}x0e"), target)
        if correlation >= 2:
            channels = irreps_hidden[0].mul
            lmax = max(ir.l for _, ir in irreps_hidden)
            self.product = NodeProduct(target, channels, lmax, target, correlation)
        else:
            self.product = None
        self.residual = o3.Irreps(irreps_in) == self.gate.irreps_out
        self.irreps_out = self.gate.irreps_out

    def forward(self, h, onehot, edges: list[tuple]):
        """``edges``: per relation type (index, vec, sh, edge features or None)."""
        m = self.self_connection(h, onehot)
        for module, (index, vec, sh, feats) in zip(self.messages, edges):
            if index.shape[1]:
                m = m + module(h, index, vec, sh, feats)
        if self.product is not None:
            m = m + self.product(m)
        out = self.gate(m)
        return h + out if self.residual else out


class HedgeNet(GraphModel):
    """HedgeNet model.

    Parameters
    ----------
    elements:
        Atomic numbers the model treats (one-hot species embedding).
    relations:
        Relation-function name (``intra_inter`` | ``by_layer_pair`` | ``by_element_pair`` | ``single``) or
        a :class:`~hedgenet.graphs.relations.RelationSpec`.
    r_intra, r_inter:
        Intra-/inter-layer message cutoffs (Å); ``single`` uses ``max`` of the two unless ``r_single``.
    size:
        ``hedgenet_small|medium|large`` or a dict with ``channels``, ``lmax``, ``num_layers``.
    task:
        ``forces`` | ``hamiltonian`` | ``joint``: which heads exist (``self.outputs`` lists the keys).
    layout, block_cutoff:
        Orbital layout (shells per element) and block cutoff (Å) of the H/S heads; needed unless
        ``task=forces``. ``layout`` may be an :class:`OrbitalLayout` or its JSON dict.
    n_layers:
        Number of layers the ``by_layer_pair`` relation function distinguishes.
    num_basis, radial_hidden:
        Bessel functions per radial basis and hidden width of the radial MLPs.
    registry_widths:
        Widths δ_k (Å) of the Gaussians exp(−ρ²/δ_k²) of the interlayer registry (the in-plane offset ρ of an
        interlayer pair from each atom's layer normal, :mod:`hedgenet.models.registry`), fed to the radial
        MLPs of the cross-layer relation types; empty = off (radial distance only). Needs a relation function
        that separates intra- from interlayer pairs (not ``single``).
    dispersion_cutoff:
        Cutoff (Å) of the learnable interlayer dispersion tail (:mod:`hedgenet.models.dispersion`), e.g. 12;
        ``None`` (default): none, the energy ends with the messages' cutoffs. Needs ``task`` with energies.
    interlayer_pair_functions:
        Gaussians of the tail's learnable interlayer pair potential (0 = none; needs ``dispersion_cutoff``).
    dispersion_learnable:
        Learn the tail's C6 and C8 (default) or hold them at their initial values (GFN1-xTB's D3 for carbon).
    dtype:
        ``float32`` | ``float64`` (default: torch's default dtype). The model is built in it, so its
        Clebsch–Gordan constants are exact in that precision (a float32-built model cast with
        ``.double()`` is equivariant only to ~1e-7).
    """

    def __init__(
        self,
        elements: Sequence[int],
        relations: str | RelationSpec = "intra_inter",
        r_intra: float = 5.0,
        r_inter: float = 6.0,
        r_single: float | None = None,
        size: str | dict = "hedgenet_small",
        task: str = "joint",
        layout: OrbitalLayout | dict | None = None,
        block_cutoff: float | None = None,
        n_layers: int = 2,
        num_basis: int = 8,
        radial_hidden: int = 32,
        registry_widths: Sequence[float] = (),
        dispersion_cutoff: float | None = None,
        interlayer_pair_functions: int = 0,
        dispersion_learnable: bool = True,
        dtype: str | torch.dtype | None = None,
    ):
        super().__init__()
        dtype = as_dtype(dtype)
        # constructor arguments as JSON-able primitives: HedgeNet.from_config(model.config) rebuilds it
        self.config = {
            "elements": sorted(int(z) for z in set(elements)),
            "relations": dataclasses.asdict(relations) if isinstance(relations, RelationSpec) else relations,
            "r_intra": float(r_intra), "r_inter": float(r_inter),
            "r_single": None if r_single is None else float(r_single),
            "size": model_size(size), "task": task,
            "layout": layout.to_json() if isinstance(layout, OrbitalLayout) else layout,
            "block_cutoff": None if block_cutoff is None else float(block_cutoff),
            "n_layers": int(n_layers), "num_basis": int(num_basis), "radial_hidden": int(radial_hidden),
            "registry_widths": [float(w) for w in registry_widths],
            "dispersion_cutoff": None if dispersion_cutoff is None else float(dispersion_cutoff),
            "interlayer_pair_functions": int(interlayer_pair_functions),
            "dispersion_learnable": bool(dispersion_learnable),
            "dtype": str(dtype).replace("torch.", ""),
        }
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # e3nn's Clebsch–Gordan constants are made in the default dtype
        try:
            with e3nn_build_options():
                self._build(elements, relations, r_intra, r_inter, r_single, size, task, layout, block_cutoff,
                            n_layers, num_basis, radial_hidden, registry_widths, dispersion_cutoff,
                            interlayer_pair_functions, dispersion_learnable)
        finally:
            torch.set_default_dtype(default)

    def _build(self, elements, relations, r_intra, r_inter, r_single, size, task, layout, block_cutoff,
               n_layers, num_basis, radial_hidden, registry_widths, dispersion_cutoff, interlayer_pair_functions,
               dispersion_learnable):
        if task not in TASKS:
            raise choice_error("task", task, TASKS)
        self.task = task
        self.outputs = TASKS[task]
        self.elements = tuple(sorted(int(z) for z in set(elements)))
        if isinstance(relations, dict):  # from self.config
            relations = RelationSpec(
                relations["name"], tuple(relations["types"]), tuple(float(c) for c in relations["cutoffs"]),
                tuple(int(z) for z in relations.get("elements", ())), int(relations.get("n_layers", 2)),
            )
        if not isinstance(relations, RelationSpec):
            relations = make_relations(
                relations, r_intra=r_intra, r_inter=r_inter, elements=self.elements, n_layers=n_layers,
                cutoff=r_single,
            )
        self.relations = relations
        widths = [float(w) for w in registry_widths]
        if widths and (None in relations.crosses_layers or all(relations.crosses_layers)):
            raise ValueError(
                f"registry_widths={widths} needs intra- and interlayer relation types, but relations="
                f"{relations.name!r} has types {list(relations.types)}. Fix: relations=intra_inter (or "
                "by_layer_pair, by_element_pair), or relations.registry_widths_A=[] for this one."
            )
        if any(w <= 0 for w in widths):
            raise ValueError(f"registry_widths={widths} must be positive (Å)")
        self.register_buffer("registry_widths", torch.tensor(widths), persistent=False)  # from config
        n_edge_features = [2 * len(widths) if cross else 0 for cross in relations.crosses_layers]
        hp = model_size(size)
        self.size = hp
        n_sp = len(self.elements)
        c, lmax = int(hp["channels"]), int(hp["lmax"])
        self.irreps_hidden = hidden_irreps(c, lmax)
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.embedding = o3.Linear(o3.Irreps(f"{n_sp}x0e"), o3.Irreps(f"{c}x0e"))
        layers, irreps = [], o3.Irreps(f"{c}x0e")
        for _ in range(int(hp["num_layers"])):
            layer = InteractionLayer(
                irreps, self.irreps_hidden, self.irreps_sh, n_sp, relations.cutoffs, num_basis, radial_hidden,
                n_edge_features, int(hp.get("correlation", 1)),
            )
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = tnn.ModuleList(layers)
        self.irreps_node = irreps
        self.n_scalars = c

        if "energy" in self.outputs:
            self.readout = tnn.Sequential(tnn.Linear(c, c), tnn.SiLU(), tnn.Linear(c, 1))
            self.energy_scale = tnn.Parameter(torch.ones(n_sp))
            self.energy_shift = tnn.Parameter(torch.zeros(n_sp))
        self.dispersion = None
        if dispersion_cutoff is not None:
            if "energy" not in self.outputs:
                raise ValueError(f"dispersion_cutoff={dispersion_cutoff} adds to the energy, which task={task!r} does "
                                 "not predict. Fix: relations.dispersion_cutoff_A=null, or task=joint/forces.")
            self.dispersion = InterlayerDispersion(n_sp, float(dispersion_cutoff),
                                                   n_pair_functions=int(interlayer_pair_functions),
                                                   learnable=bool(dispersion_learnable))
        elif interlayer_pair_functions:
            raise ValueError(f"interlayer_pair_functions={interlayer_pair_functions} is a part of the dispersion tail, "
                             "which is off. Fix: relations.dispersion_cutoff_A=12, or relations.interlayer_pair_functions=0.")
        self.layout = None
        self.block_cutoff = None
        if "H" in self.outputs:
            if layout is None or block_cutoff is None:
                raise ValueError(
                    f"task={task!r} predicts orbital blocks and needs the orbital layout and block_cutoff "
                    "(Å) of the dataset. Fix: pass layout= (e.g. dataset header 'orbital_layout') and "
                    "block_cutoff=, or use task=forces."
                )
            if isinstance(layout, dict):
                layout = OrbitalLayout.from_json(layout)
            self.layout = layout
            self.block_cutoff = float(block_cutoff)
            kw = dict(num_basis=num_basis, radial_hidden=radial_hidden, channels=hp.get("head_channels"))
            self.head_blocks = BlockHead(irreps, layout, self.elements, self.block_cutoff, ("H",), **kw)
            self.onsite_pairs = (OnsitePairSum(n_sp, relations.cutoffs, num_basis,
                                               self.head_blocks.decoder.onsite_basis.shape[0])
                                 if hp.get("onsite_pair_sum", False) else None)
            self.head_S = TwoCenterHead(layout, self.elements, self.block_cutoff, radial_hidden=radial_hidden)

    @classmethod
    def from_config(cls, config: dict) -> "HedgeNet":
        """Rebuild a model (untrained) from :attr:`config` (same as ``HedgeNet(**config)``)."""
        return cls(**config)

    # ------------------------------------------------------------------ graphs
    def graph_builder(self) -> GraphBuilder:
        """The :class:`GraphBuilder` matching this model (relations, elements, layout, block cutoff, dispersion)."""
        cutoff = None if self.dispersion is None else self.dispersion.cutoff_A
        return GraphBuilder(self.relations, self.elements, self.layout, self.block_cutoff, cutoff)

    # ------------------------------------------------------------------ forward (GraphModel.forward)
    def _forward(self, batch: Graph, pos: torch.Tensor, dtype: torch.dtype, blocks_grad: bool = True) -> dict:
        species = batch.species
        onehot = torch.nn.functional.one_hot(species, len(self.elements)).to(dtype)
        cell_of_atom = batch.cell.to(dtype)[batch.batch]
        edges = self.relation_edges(batch, pos, cell_of_atom)
        h = self.embedding(onehot)
        for layer in self.layers:
            h = layer(h, onehot, edges)
        out = {}
        if "energy" in self.outputs:
            out.update(self._energy(h, species, batch, self._dispersion_energy(batch, pos, cell_of_atom)))
        if "H" in self.outputs and batch.block_index is not None:  # None: energy and forces only (energy_graph)
            args = (h, species, pos, cell_of_atom, batch.block_index, batch.block_shift, batch.block_reverse)
            # the blocks need an autograd graph only to be differentiated (training, dH/du); without it
            # inference on 10^4 atoms keeps no per-edge intermediates of the heads
            with torch.set_grad_enabled(torch.is_grad_enabled() and blocks_grad):
                coef = None if self.onsite_pairs is None else self.onsite_pairs(edges, species)
                out.update(self.head_blocks(*args, onsite_coef=coef))
                out.update(self.head_S(*args))
        return out

    def _dispersion_energy(self, batch: Graph, pos: torch.Tensor, cell_of_atom: torch.Tensor) -> torch.Tensor | None:
        """Per-atom energies (N,) eV of the dispersion tail; None without one."""
        if self.dispersion is None:
            return None
        if DISPERSION not in batch.rel_index:
            raise ValueError(
                "this model has an interlayer dispersion tail but the graph lacks its pairs. Fix: build graphs "
                "with model.graph_builder(), which lists them.")
        index = batch.rel_index[DISPERSION]
        vec = edge_vectors(pos, index[0], index[1], batch.rel_shift[DISPERSION], cell_of_atom)
        return self.dispersion(batch.species, index, vec)

    def relation_edges(self, batch: Graph, pos: torch.Tensor, cell_of_atom: torch.Tensor) -> list[list]:
        """Per relation type: [index (2, E), r_ij (E, 3) in Å, Y(r̂_ij), registry features (E, 2K) on
        cross-layer types when ``registry_widths`` is set, else None]; ``cell_of_atom`` (N, 3, 3) in pos's dtype."""
        edges = []
        for name in self.relations.types:
            index = batch.rel_index[name]
            vec = edge_vectors(pos, index[0], index[1], batch.rel_shift[name], cell_of_atom)
            edges.append([index, vec, self.sh(vec), None])
        if self.registry_widths.numel():
            self._add_registry(edges, pos.shape[0])
        return edges

    def _add_registry(self, edges: list, n_atoms: int) -> None:
        """Registry features (in-plane offsets from the layer normals) on every cross-layer edge."""
        envelopes = [self.layers[0].messages[t].radial.envelope for t in range(len(edges))]
        intra = [
            (index[0], vec, env(vec.norm(dim=1)))
            for (index, vec, _, _), cross, env in zip(edges, self.relations.crosses_layers, envelopes)
            if not cross
        ]
        projectors = normal_projectors(n_atoms, intra)
        for edge, cross, env in zip(edges, self.relations.crosses_layers, envelopes):
            if cross:
                index, vec = edge[0], edge[1]
                edge[3] = registry_features(index, vec, projectors, self.registry_widths, env(vec.norm(dim=1)))

    # ------------------------------------------------------------------ statistics
    def _minus_dispersion(self, graphs: Sequence[Graph]) -> list[Graph]:
        """``graphs`` with the tail's energy taken off their energies: the per-species shift then fits what the
        rest of the model has to give (the tail binds ≈ 28 meV/atom in AB graphene)."""
        if self.dispersion is None:
            return list(graphs)
        out = []
        for g in graphs:
            if g.energy is None or DISPERSION not in g.rel_index:
                out.append(g)
                continue
            pos = g.pos.to(self.dtype)
            tail = self._dispersion_energy(g, pos, g.cell.to(self.dtype)[g.batch])
            per_graph = tail.new_zeros(g.num_graphs).index_add(0, g.batch, tail)
            out.append(dataclasses.replace(g, energy=g.energy - per_graph.to(g.energy.dtype)))
        return out

    @torch.no_grad()
    def init_statistics(self, graphs: Sequence[Graph]) -> dict:
        """Set data-dependent constants from training graphs (call once before training):

        * ``avg_num_neighbors`` of every relation's message module (edges per atom);
        * per-species energy shift (eV/atom, least squares E ≈ Σ_Z n_Z e_Z) and scale (RMS force, eV/Å);
        * H/S heads: identity-like on-site references (mean on-site blocks projected on the invariant
          part) and the output scale (RMS of the remaining block elements, eV for H).
        Returns the values set (for logging).
        """
        stats: dict = {}
        for t, name in enumerate(self.relations.types):
            avg = average_neighbors(graphs, lambda g: g.rel_index[name].shape[1])
            for layer in self.layers:
                layer.messages[t].avg_num_neighbors.fill_(avg)
            stats[f"avg_num_neighbors/{name}"] = avg
        n_sp = len(self.elements)
        if "energy" in self.outputs:
            stats.update(init_energy_head(self, self._minus_dispersion(graphs)))
        if "H" in self.outputs:
            stats.update(init_block_statistics([(self.head_blocks, 0, "H"), (self.head_S, 0, "S")], graphs, n_sp,
                                               float(self.hamiltonian_shift_eV)))
        return stats


__all__ = ["SIZES", "TASKS", "HedgeNet", "count_parameters", "hidden_irreps", "model_size"]
