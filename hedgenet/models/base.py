"""What every hedgenet model family shares (HedgeNet, the MACE adapter, the DeepH-E3-like baseline).

A model is a ``torch.nn.Module`` with

* ``outputs``: the quantities it predicts (a value of :data:`TASKS`);
* ``elements`` (sorted atomic numbers), ``layout`` and ``block_cutoff`` (Å; ``None`` without H/S heads);
* ``graph_builder()``: the :class:`~hedgenet.graphs.neighbors.GraphBuilder` of its graphs;
* ``init_statistics(graphs)``: data-dependent constants from the training graphs, set once before training;
* ``_forward(batch, pos, dtype, blocks_grad)``: energy (B,) eV / node_energy (N,) eV / H, S blocks.

:class:`GraphModel` turns ``_forward`` into the common ``forward`` (forces F = −∂E/∂r by autograd), so the
training module, metrics, saving and :class:`~hedgenet.calculators.ModelCalculator` treat all alike.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Sequence

import numpy as np
import torch
from torch import nn as tnn

from hedgenet.graphs.neighbors import as_graph

TASKS: dict[str, tuple[str, ...]] = {
    "forces": ("energy", "forces"),
    "hamiltonian": ("H", "S"),
    "joint": ("energy", "forces", "H", "S"),
}
"""``task`` -> the quantities the model predicts."""


def choice_error(what: str, value, valid) -> ValueError:
    """ValueError naming the valid choices and the closest one."""
    close = difflib.get_close_matches(str(value), list(valid), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {what} {value!r}; valid: {sorted(valid)}.{hint}")


def size_with_defaults(model: str, size: dict | None, defaults: dict) -> dict:
    """A baseline's hyperparameters: ``defaults`` updated by ``size`` (integers); a key that ``defaults``
    lacks is a ValueError naming ``model=<model>`` and the valid keys."""
    size = dict(size or {})
    bad = sorted(set(size) - set(defaults))
    if bad:
        raise ValueError(f"model={model}: unknown size key(s) {bad}; valid: {list(defaults)}")
    return {**defaults, **{k: int(v) for k, v in size.items()}}


def as_dtype(dtype) -> torch.dtype:
    """``float32`` | ``float64`` | a torch dtype | ``None`` (torch's default) -> torch dtype."""
    if dtype is None:
        return torch.get_default_dtype()
    if isinstance(dtype, torch.dtype):
        return dtype
    valid = {"float32": torch.float32, "float64": torch.float64}
    if dtype not in valid:
        raise choice_error("dtype", dtype, valid)
    return valid[dtype]


class GraphModel(tnn.Module):
    """Base class: the common ``forward`` over a subclass's ``_forward``.

    ``hamiltonian_shift_eV`` (a buffer, E; 0 = none): the H head predicts H − E·S and ``forward`` returns
    H = (H − E·S) + E·S. With E at the reference's Fermi level (:func:`fermi_level_eV`, set by the training) the
    states near E_F — bands, couplings, v_F — see the overlap's errors only as (ε − E)·δS instead of ε·δS: in
    graphene ε ≈ −9.8 eV, where a 0.1 % error of S would shift the Dirac states by ~10 meV."""

    outputs: tuple[str, ...]
    messages_on_block_edges = False  # True where the block edges are also the message graph (DeepH-E3)

    def __init__(self):
        super().__init__()
        self.register_buffer("hamiltonian_shift_eV", torch.zeros(()))

    def energy_graph(self, graph):
        """``graph`` with what only the H and S blocks need dropped (energy and forces alone are cheaper)."""
        if self.messages_on_block_edges:
            return graph
        return dataclasses.replace(graph, block_index=None, block_shift=None, block_reverse=None, block_kind=None,
                                   H=None, S=None, block_mask=None)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, batch, training: bool = False, compute_forces: bool | None = None,
                compute_virial: bool | None = None) -> dict:
        """Predictions for a (batched) :class:`~hedgenet.graphs.neighbors.Graph`.

        Returns a dict with ``energy`` (B,) eV, ``node_energy`` (N,) eV, ``forces`` (N, 3) eV/Å,
        ``virial`` (B, 3, 3) eV, ``H`` (E_b, n_max, n_max) eV and ``S`` (E_b, n_max, n_max), as ``task``
        asks. The virial W = −∂E/∂ε is the energy's derivative under a homogeneous strain ε of positions and
        cell together (the MACE/NequIP construction: one autograd call with the forces); it is computed when
        ``compute_virial`` is true, or when it is None and the batch carries virial labels. The outputs are
        differentiable (forces with ``create_graph``) when ``training=True`` or when ``batch.pos``
        requires grad (e.g. for force constants or dH/du by autograd); otherwise they are detached.
        Inputs are cast to the model's dtype. ``batch`` may also be a PyG ``HeteroData`` or PyG batch of them
        (:mod:`hedgenet.graphs.pyg`): it is converted without a copy and gives the same outputs bit for bit.
        """
        batch = as_graph(batch)
        want_forces = "forces" in self.outputs if compute_forces is None else compute_forces
        want_forces = want_forces and "energy" in self.outputs
        if compute_virial is None:
            compute_virial = batch.virial is not None
        want_virial = bool(compute_virial) and want_forces
        dtype = self.dtype
        create_graph = bool(training or batch.pos.requires_grad)
        pos = batch.pos.to(dtype)
        if want_forces and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        with torch.set_grad_enabled(torch.is_grad_enabled() or want_forces):
            inputs, strained, strain = batch, pos, None
            if want_virial:  # r → r(1+ε), cell → cell(1+ε) at ε = 0: same numbers, ∂E/∂ε by autograd
                strain = torch.zeros(batch.num_graphs, 3, 3, dtype=dtype, device=pos.device, requires_grad=True)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                strained = pos + torch.einsum("ni,nij->nj", pos, sym[batch.batch])
                cell = batch.cell.to(dtype)
                inputs = dataclasses.replace(batch, cell=cell + cell @ sym)
            out = self._forward(inputs, strained, dtype, blocks_grad=create_graph)
            if "H" in out and "S" in out and bool(self.hamiltonian_shift_eV != 0):
                out["H"] = out["H"] + self.hamiltonian_shift_eV.to(out["H"].dtype) * out["S"]
            if want_forces:
                wrt = [pos] if strain is None else [pos, strain]
                grads = torch.autograd.grad(out["energy"].sum(), wrt, create_graph=create_graph)
                out["forces"] = -grads[0]
                if strain is not None:
                    out["virial"] = -grads[1]
        if not create_graph:
            out = {k: v.detach() for k, v in out.items()}
        return out

    def _forward(self, batch, pos: torch.Tensor, dtype: torch.dtype, blocks_grad: bool = True) -> dict:
        raise NotImplementedError  # pragma: no cover - abstract

    def _energy(self, h: torch.Tensor, species: torch.Tensor, batch, extra: torch.Tensor | None = None) -> dict:
        """Per-atom energies (eV) from the scalar channels of the node features ``h``: readout, then the
        per-species scale and shift (``energy_scale``, ``energy_shift``), plus ``extra`` (N,) eV when given (a
        physical term such as the dispersion tail); their sum per graph.

        The graph energies are float64 whatever the model's dtype (as NequIP sums in its default dtype): the
        shifts are the atoms' reference energies, tens of eV each (−57.86 eV for xTB's carbon), and a float32
        sum over 100 such atoms rounds by 0.05–0.09 meV/atom — as large as the interlayer energies a bilayer
        model must resolve (measured: two stackings equal by symmetry came out 0.088 meV/atom apart). So the
        per-atom energies are summed in float64 (:func:`graph_energies`)."""
        e_learned = self.readout(h[:, : self.n_scalars]).squeeze(-1) * self.energy_scale[species]
        if extra is not None:
            e_learned = e_learned + extra
        e_atom = e_learned.double() + self.energy_shift[species].double()
        return {"node_energy": e_atom.to(e_learned.dtype), "energy": graph_energies(e_atom, batch)}


def graph_energies(node_energy: torch.Tensor, batch) -> torch.Tensor:
    """Per-graph sums (B,) eV of per-atom energies ``node_energy`` (N,) eV, taken in float64 whatever their dtype:
    a float32 sum of atoms' reference energies rounds by as much as the interlayer energies (``_energy``)."""
    node_energy = node_energy.double()
    return node_energy.new_zeros(batch.num_graphs).index_add(0, batch.batch, node_energy)


def displaced_copies(graph, vectors: torch.Tensor, step_A: float, signs: tuple[float, ...] = (1.0, -1.0)) -> list:
    """The 2K copies of ``graph`` (one structure) at ±``step_A``·v (Å) for every pattern v of ``vectors``
    (K, N, 3), in the order v₁+, v₁−, v₂+, …, each with the undisplaced cell's edges: the inputs of
    :func:`central_differences` (``signs=(1.0,)``: the K copies at +``step_A``·v alone). Positions in the
    patterns' dtype."""
    pos = graph.pos.detach().to(vectors.dtype)
    return [dataclasses.replace(graph, pos=pos + sign * step_A * v) for v in vectors for sign in signs]


def central_differences(forces: torch.Tensor, n_patterns: int, step_A: float) -> torch.Tensor:
    """Φv (K, N, 3) in eV/Å² · Å from the forces (2K·N, 3) eV/Å of :func:`displaced_copies` (K patterns)."""
    f = forces.reshape(n_patterns, 2, -1, 3)
    return -(f[:, 0] - f[:, 1]) / (2.0 * step_A)


def hessian_vector_products(model, graph, vectors: torch.Tensor, create_graph: bool = False,
                            step_A: float | None = None) -> torch.Tensor:
    """A model's Φv (eV/Å² · Å) for every pattern in ``vectors`` (K, N, 3) at ``graph``'s positions (one structure);
    differentiable in the model's parameters when ``create_graph``. Exact when ``step_A`` is None: −∂(F·v)/∂r by
    autograd (Φ is symmetric), all K patterns in one batched vector–Jacobian product. Otherwise central
    differences of the forces at ±``step_A``·v, all 2K displaced copies in one batch: a finite-difference
    reference's own operator, and in training 1.6× cheaper than the exact product, whose parameter gradient
    needs third derivatives of the energy."""
    vectors = vectors.to(model.dtype)
    if step_A is not None:
        from hedgenet.graphs import collate

        copies = displaced_copies(graph, vectors, step_A)
        forces = model(collate(copies), training=create_graph, compute_virial=False)["forces"]
        return central_differences(forces, len(vectors), step_A)
    pos = graph.pos.detach().clone().to(model.dtype).requires_grad_(True)
    forces = model(dataclasses.replace(graph, pos=pos), training=create_graph, compute_virial=False)["forces"]
    (grad,) = torch.autograd.grad(forces, pos, vectors, create_graph=create_graph, retain_graph=create_graph,
                                  is_grads_batched=True)
    return -grad


def fermi_level_eV(graph, layout, elements: Sequence[int]) -> float:
    """The reference's Fermi level (eV) of a labelled cell: the midpoint between the highest occupied and the
    lowest empty state at the cell's Γ point for the neutral valence electron count, from the cell's H and S
    blocks (``graph.H``, ``graph.S``; ``elements`` maps ``graph.species`` to atomic numbers)."""
    from hedgenet.orbitals.bloch import bloch_matrix, neutral_midgap_eV

    numbers = np.asarray(elements)[graph.species.cpu().numpy()]
    n_orb = np.array([layout.n_orb(int(z)) for z in numbers])
    index, shift = graph.block_index.cpu().numpy(), graph.block_shift.cpu().numpy()
    H = bloch_matrix(graph.H.double().cpu().numpy(), index, shift, n_orb)
    S = bloch_matrix(graph.S.double().cpu().numpy(), index, shift, n_orb)
    return neutral_midgap_eV(H, S, numbers)


def model_hessian(model, graph, rows_per_batch: int = 48, translations: np.ndarray | None = None) -> np.ndarray:
    """A model's exact Hessian Φ (N, N, 3, 3) in eV/Å² at ``graph`` (one structure), ``rows_per_batch`` rows
    (atom, direction) per batched product, so memory stays that of a few force evaluations on large cells;
    symmetrised (it is symmetric up to round-off).

    ``translations`` (T, N): the lattice translations of an undisplaced periodic cell as atom permutations
    (``perms`` of :func:`hedgenet.structures.supercell.lattice_translations`, identity first). Then only the rows
    of one atom per orbit are computed and the rest follow from Φ(a+t, b+t) = Φ(a, b), which a model of
    relative positions obeys exactly: 3N/T times fewer products (a 7×7 supercell: 49×)."""
    n = graph.pos.shape[0]
    perms = np.arange(n)[None] if translations is None else np.asarray(translations)
    orbit = perms.min(axis=0)  # each atom's orbit named by its lowest index
    reps = np.unique(orbit)
    rows = torch.tensor([3 * a + k for a in reps for k in range(3)], device=graph.pos.device)
    eye = torch.eye(3 * n, dtype=model.dtype, device=graph.pos.device)[rows]
    computed = np.zeros((len(rows), 3 * n))
    for start in range(0, len(rows), rows_per_batch):
        chunk = eye[start : start + rows_per_batch]
        hv = hessian_vector_products(model, graph, chunk.reshape(-1, n, 3))
        computed[start : start + chunk.shape[0]] = hv.detach().reshape(chunk.shape[0], 3 * n).double().cpu().numpy()
    hess = np.zeros((n, 3, n, 3))
    known = dict(zip(reps.tolist(), computed.reshape(len(reps), 3, n, 3)))
    for p in perms:  # Φ(p[r], p[b]) = Φ(r, b)
        for r in reps:
            hess[p[r]][:, p] = known[int(r)]
    hess = hess.reshape(3 * n, 3 * n)
    hess = 0.5 * (hess + hess.T)
    return hess.reshape(n, 3, n, 3).transpose(0, 2, 1, 3).copy()


def energy_statistics(graphs: Sequence, n_species: int) -> dict:
    """Per-species energy shift (eV/atom, least squares E ≈ Σ_Z n_Z e_Z; 0 for absent species) and the
    RMS force component (eV/Å) of training graphs: ``{"shift": (n_species,) array, "force_rms": float}``,
    ``{}`` when a graph lacks energies (``force_rms`` is absent when one lacks forces)."""
    if not graphs or any(g.energy is None for g in graphs):
        return {}
    counts = np.stack([np.bincount(g.species.numpy(), minlength=n_species) for g in graphs]).astype(float)
    energies = np.concatenate([g.energy.numpy() for g in graphs])
    shift = np.linalg.lstsq(counts, energies, rcond=None)[0]
    shift[counts.sum(0) == 0] = 0.0
    out = {"shift": shift, "energies": energies, "counts": counts}
    if all(g.forces is not None for g in graphs):
        f = torch.cat([g.forces.flatten() for g in graphs])
        out["force_rms"] = float(f.pow(2).mean().sqrt()) if f.numel() else 1.0
    return out


@torch.no_grad()
def init_energy_head(model, graphs: Sequence) -> dict:
    """Set ``model.energy_shift`` (per species, eV/atom) and ``model.energy_scale`` (RMS force, eV/Å) of a
    per-atom energy head from training graphs (see :func:`energy_statistics`); returns the values set."""
    stats: dict = {}
    e = energy_statistics(graphs, len(model.elements))
    if e:
        model.energy_shift.copy_(torch.as_tensor(e["shift"]))
        stats["energy_shift_eV"] = e["shift"].tolist()
    if "force_rms" in e:
        model.energy_scale.fill_(max(e["force_rms"], 1e-3))
        stats["energy_scale_eV"] = e["force_rms"]
    return stats


def average_neighbors(graphs: Sequence, count_edges) -> float:
    """Edges per atom over ``graphs`` (``count_edges(graph)`` -> number of message edges), at least 1."""
    n_atoms = sum(int(g.pos.shape[0]) for g in graphs)
    n_edges = sum(int(count_edges(g)) for g in graphs)
    return max(n_edges / max(n_atoms, 1), 1.0)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (an EMA copy has them frozen, so requires_grad is not the test)."""
    return sum(p.numel() for p in model.parameters())
