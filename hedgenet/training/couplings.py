"""Coupling targets: the reference's electron–phonon couplings dH/du (eV/Å) and dS/du (1/Å) of a labelled dataset's
undisplaced force-constant cell, and the model's own derivatives against them (the coupling loss and metric).

A model trained on H(u) of displaced cells learns dH/du only through differences of its H between cells, and a
regression on noisy displaced data shrinks them: the main job's model had the nearest-neighbour hopping's
in-plane derivative 5 % and its overlap's 9 % below xTB's, and its interlayer and beyond-3 Å derivatives wrong
by 100 % (docs/results_training.md, couplings). v_F(T) is a sum over all of them. The reference's couplings cost
6 reference runs per atom of the primitive cell (one atom per lattice orbit displaced ± δ; the rest follow by
translation) and ``hedgenet-label dataset.couplings=true`` stores those rows in the dataset file.

Every probe is one stored displacement (atom a, direction α): the model's H and S at u = ±δ·e_aα (one batched
call of the two displaced copies, blocks only), their central difference with the reference's own step δ
compared with the stored row per block element, MSE of d(H − E_F·S)/du in (eV/Å)² (the Hamiltonian gauge of the
H loss, ``train.hamiltonian_gauge``) plus that of dS/du in (1/Å)² (the H and S losses mix their units likewise).

Second order: the same for the even response of thermal ± pairs of the labelling cell, ½[H(u) + H(−u)] − H(0)
(``hedgenet-label dataset.second_order.n_pairs``): what the second-order coupling of v_F(T) is made of. A model
can fit H(±u) to its overall error (meV) and still have a systematic curvature in the interlayer blocks of that
size, which the thermal average of v_F(T) adds up (γ₁ beyond first order, docs/results_physics.md); each probe is one
stored pair (the model's blocks at u, −u and 0, one batched call), MSE of the even part of H − E·S in eV² plus
that of S.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from hedgenet.orbitals.blocks import edge_positions


@dataclass
class CouplingTarget:
    """One undisplaced cell with the reference's couplings of the displacements ``displaced`` (K, 2): (atom,
    direction) pairs; ``dH``, ``dS`` (K, E, n, n) on the model's block edges of ``graph`` (its full graph of
    the cell), zero and masked out (``mask`` (E, n, n)) where the reference has no block or orbital."""

    dataset: str
    atoms: Atoms
    graph: object
    displaced: np.ndarray
    dH: torch.Tensor
    dS: torch.Tensor
    mask: torch.Tensor
    delta_A: float

    def to(self, device, dtype) -> CouplingTarget:
        return dataclasses.replace(self, graph=self.graph.to(device, dtype), dH=self.dH.to(device, dtype),
                                   dS=self.dS.to(device, dtype), mask=self.mask.to(device, dtype))


def load_coupling_targets(paths: Sequence[str], model) -> list[CouplingTarget]:
    """The coupling targets of the dataset files that store couplings of their force-constant cell (``[]`` when
    none does), on ``model``'s block edges of that cell."""
    from hedgenet.data.store import stored_in

    targets = []
    for p, store, c in stored_in(paths, "read_couplings"):
        atoms = store.force_constants_cell_atoms()
        if c["n_atoms"] != len(atoms):
            raise ValueError(f"the couplings stored in {p} belong to a {c['n_atoms']}-atom cell, its force constants "
                             f"to a {len(atoms)}-atom one. Fix: rerun hedgenet-label with dataset.couplings=true on "
                             "this file (it stores the couplings of the force-constant cell)")
        graph, (dH, dS), mask = _on_model_edges(model, atoms, c, (c["dH"].reshape(-1, *c["dH"].shape[2:]),
                                                                 c["dS"].reshape(-1, *c["dS"].shape[2:])))
        displaced = np.array([(a, x) for a in c["atoms"] for x in range(3)], dtype=np.int64)
        targets.append(CouplingTarget(str(p), atoms, graph, displaced, dH, dS, mask.any(0), float(c["delta_A"])))
    return targets


def _on_model_edges(model, atoms: Atoms, stored: dict, arrays, present=None):
    """``model``'s graph of ``atoms`` and the stored ``arrays`` (each (K, E_stored, n, n), on the edges
    ``stored["edge_index"]``, ``stored["cell_shift"]``) moved onto its block edges (K, E, n, n) float32, zero where
    the stored list lacks an edge; the mask (K, E, n, n) of the block elements that exist (orbitals of both atoms,
    edge stored, and ``present`` (K, E_stored) where given)."""
    graph = model.graph_builder().from_atoms(atoms)
    index, shift = graph.block_index.numpy(), graph.block_shift.numpy().round().astype(np.int64)
    where = edge_positions(index, shift, stored["edge_index"], stored["cell_shift"], len(atoms))
    ok = where >= 0
    n = arrays[0].shape[-1]
    n_orb, orb = np.asarray(stored["n_orb"]), np.arange(n)
    orbitals = (orb[None, :, None] < n_orb[index[0]][:, None, None]) & (orb[None, None, :] < n_orb[index[1]][:, None, None])
    k = len(arrays[0])
    found = np.zeros((k, len(where)), dtype=bool)
    found[:, ok] = True if present is None else np.asarray(present)[:, where[ok]]
    out = []
    for a in arrays:
        moved = np.zeros((k, len(where), n, n), dtype=np.float32)
        moved[:, ok] = a[:, where[ok]]
        out.append(torch.as_tensor(moved))
    return graph, out, torch.as_tensor(orbitals[None] & found[:, :, None, None])


def model_couplings(model, target: CouplingTarget, k: int, create_graph: bool = False):
    """The model's dH/du and dS/du (E, n, n) of stored displacement ``k`` by central differences of its blocks at
    ± the reference's step (one batched call of the two displaced copies); differentiable in the model's
    parameters when ``create_graph``."""
    from hedgenet.graphs import collate

    a, x = (int(v) for v in target.displaced[k])
    graph = target.graph
    pos = graph.pos.detach().to(model.dtype)
    step = torch.zeros_like(pos)
    step[a, x] = target.delta_A
    copies = [dataclasses.replace(graph, pos=pos + step), dataclasses.replace(graph, pos=pos - step)]
    with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
        out = model(collate(copies), training=create_graph, compute_forces=False, compute_virial=False)
    e, n = target.dH.shape[1], target.dH.shape[-1]
    H, S = out["H"][:, :n, :n].reshape(2, e, n, n), out["S"][:, :n, :n].reshape(2, e, n, n)
    return (H[0] - H[1]) / (2 * target.delta_A), (S[0] - S[1]) / (2 * target.delta_A)


def coupling_errors(model, target: CouplingTarget, k: int, create_graph: bool = False):
    """Model minus reference d(H − E·S)/du (eV/Å) and dS/du (1/Å), (E, n, n) each, of stored displacement ``k``,
    zero where masked; E is the model's Hamiltonian gauge (``hamiltonian_shift_eV``, the reference's Fermi level,
    or 0): the H loss's own matrix, whose errors move the states at E by nothing from the overlap's."""
    dH, dS = model_couplings(model, target, k, create_graph)
    return _gauged_errors(model, dH, dS, target.dH[k], target.dS[k], target.mask)


def _gauged_errors(model, H, S, ref_H, ref_S, mask):
    """Model minus reference of H − E·S and of S, zero where ``mask`` is 0; E: the model's Hamiltonian gauge
    (``hamiltonian_shift_eV``, 0 without one)."""
    eS = (S - ref_S) * mask
    shift = float(getattr(model, "hamiltonian_shift_eV", 0.0))
    return (H - ref_H) * mask - shift * eS, eS


def coupling_loss(model, target: CouplingTarget, k: int) -> torch.Tensor:
    """MSE of d(H − E·S)/du (eV/Å)² plus MSE of dS/du (1/Å)² over the stored block elements of displacement
    ``k`` (:func:`coupling_errors`)."""
    eH, eS = coupling_errors(model, target, k, create_graph=True)
    count = target.mask.sum().clamp_min(1.0)
    return (eH.pow(2).sum() + eS.pow(2).sum()) / count


@torch.no_grad()
def coupling_metrics(model, targets: Sequence[CouplingTarget]) -> dict:
    """Over every stored displacement of every target: the model's relative RMS error of dH/du and dS/du
    (‖model − ref‖ / ‖ref‖), the ratio of their norms (model / ref: < 1 is a model whose couplings are too weak),
    and the same for the nearest-neighbour blocks alone (the π hopping's derivative, which sets most of v_F(T))."""
    if not targets:
        return {}
    sums = {}
    for t in targets:
        pos = t.graph.pos.numpy()
        index, shift = t.graph.block_index.numpy(), t.graph.block_shift.numpy()
        dist = np.linalg.norm(pos[index[1]] + shift @ t.atoms.cell.array - pos[index[0]], axis=1)
        nearest = torch.as_tensor((dist > 0.1) & (dist < 1.15 * dist[dist > 0.1].min()))[:, None, None]
        t = t.to("cpu", model.dtype)
        for k in range(len(t.displaced)):
            mH, mS = model_couplings(model, t, k)
            for name, m, r in (("dH", mH, t.dH[k]), ("dS", mS, t.dS[k])):
                for part, sel in (("", t.mask), ("_nearest", t.mask * nearest)):
                    acc = sums.setdefault(name + part, np.zeros(3))
                    acc += [float(((m - r) * sel).pow(2).sum()), float((r * sel).pow(2).sum()),
                            float((m * sel).pow(2).sum())]
    out = {}
    for key, (err, ref, mod) in sums.items():
        out[f"couplings_{key}_rel_rms"] = float(np.sqrt(err / max(ref, 1e-30)))
        out[f"couplings_{key}_norm_ratio"] = float(np.sqrt(mod / max(ref, 1e-30)))
    return out


@dataclass
class SecondOrderTarget:
    """The labelling cell with the reference's even response of P thermal ± pairs: ``displacements`` (P, N, 3) Å,
    ``dH2``, ``dS2`` (P, E, n, n) = ½[H(u) + H(−u)] − H(0) on the model's block edges of ``graph``, masked
    (``mask`` (P, E, n, n)) where the reference has no block or orbital; ``interlayer`` (E,) the blocks between
    layers."""

    dataset: str
    atoms: Atoms
    graph: object
    displacements: torch.Tensor
    dH2: torch.Tensor
    dS2: torch.Tensor
    mask: torch.Tensor
    interlayer: torch.Tensor
    temperature_K: float

    def to(self, device, dtype) -> SecondOrderTarget:
        return dataclasses.replace(self, graph=self.graph.to(device, dtype),
                                   displacements=self.displacements.to(device, dtype), dH2=self.dH2.to(device, dtype),
                                   dS2=self.dS2.to(device, dtype), mask=self.mask.to(device, dtype),
                                   interlayer=self.interlayer.to(device))


def load_second_order_targets(paths: Sequence[str], model) -> list[SecondOrderTarget]:
    """The second-order targets of the dataset files that store them (``[]`` when none does), on ``model``'s block
    edges of their labelling cell."""
    from hedgenet.data.store import stored_in

    targets = []
    for p, store, c in stored_in(paths, "read_second_order"):
        atoms = store.reference_atoms()
        graph, (dH2, dS2), mask = _on_model_edges(model, atoms, c, (c["dH2"], c["dS2"]), c["present"])
        layer = atoms.arrays["layer"]
        index = graph.block_index.numpy()
        targets.append(SecondOrderTarget(str(p), atoms, graph, torch.as_tensor(c["displacements"]), dH2, dS2, mask,
                                         torch.as_tensor(layer[index[0]] != layer[index[1]]), c["temperature_K"]))
    return targets


def model_even_response(model, target: SecondOrderTarget, p: int, create_graph: bool = False, keep=None):
    """The model's ½[H(u) + H(−u)] − H(0) and the same of S (E, n, n) of stored pair ``p`` (one batched call of
    the three cells, blocks only), on the block edges ``keep`` (indices, closed under reversal:
    :func:`hedgenet.graphs.block_edge_sample`) or all; differentiable in the model's parameters when
    ``create_graph``."""
    from hedgenet.graphs import collate, keep_block_edges

    graph = target.graph if keep is None else keep_block_edges(target.graph, keep)
    pos = graph.pos.detach().to(model.dtype)
    u = target.displacements[p].to(pos)
    copies = [dataclasses.replace(graph, pos=pos + u), dataclasses.replace(graph, pos=pos - u), graph]
    with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
        out = model(collate(copies), training=create_graph, compute_forces=False, compute_virial=False)
    e, n = graph.block_index.shape[1], target.dH2.shape[-1]
    H, S = out["H"][:, :n, :n].reshape(3, e, n, n), out["S"][:, :n, :n].reshape(3, e, n, n)
    return 0.5 * (H[0] + H[1]) - H[2], 0.5 * (S[0] + S[1]) - S[2]


def second_order_errors(model, target: SecondOrderTarget, p: int, create_graph: bool = False, keep=None):
    """Model minus reference even response of H − E·S (eV) and of S, (E, n, n) each, of stored pair ``p`` on the
    block edges ``keep`` (or all), zero where masked (E: the model's Hamiltonian gauge, as for
    :func:`coupling_errors`)."""
    H2, S2 = model_even_response(model, target, p, create_graph, keep)
    sel = slice(None) if keep is None else keep
    return _gauged_errors(model, H2, S2, target.dH2[p][sel], target.dS2[p][sel], target.mask[p][sel])


def second_order_loss(model, target: SecondOrderTarget, p: int, keep=None) -> torch.Tensor:
    """MSE of the even response of H − E·S (eV²) plus that of S over the stored block elements of pair ``p`` (on
    the block edges ``keep``, an unbiased estimate of the MSE over all, or on all)."""
    eH, eS = second_order_errors(model, target, p, create_graph=True, keep=keep)
    count = target.mask[p][slice(None) if keep is None else keep].sum().clamp_min(1.0)
    return (eH.pow(2).sum() + eS.pow(2).sum()) / count


@torch.no_grad()
def second_order_metrics(model, targets: Sequence[SecondOrderTarget]) -> dict:
    """Over every stored pair: the RMS of the reference's even response of H (meV), the model's RMS error and
    mean error (meV: a systematic curvature shows as a mean), all blocks and the interlayer ones alone (γ₁)."""
    if not targets:
        return {}
    sums = {}
    for t in targets:
        t = t.to("cpu", model.dtype)
        for p in range(len(t.displacements)):
            H2, _ = model_even_response(model, t, p)
            for part, sel in (("", t.mask[p]), ("_interlayer", t.mask[p] * t.interlayer[:, None, None])):
                acc = sums.setdefault(part, np.zeros(4))
                d = (H2 - t.dH2[p]) * sel
                acc += [float(d.pow(2).sum()), float((t.dH2[p] * sel).pow(2).sum()), float(d.sum()), float(sel.sum())]
    out = {}
    for part, (err, ref, signed, count) in sums.items():
        count = max(count, 1.0)
        out[f"second_order_H{part}_rms_error_meV"] = 1e3 * float(np.sqrt(err / count))
        out[f"second_order_H{part}_mean_error_meV"] = 1e3 * signed / count
        out[f"second_order_H{part}_rms_reference_meV"] = 1e3 * float(np.sqrt(ref / count))
    return out
