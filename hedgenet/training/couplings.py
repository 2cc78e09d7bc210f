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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms


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
    from hedgenet.data.store import DatasetStore
    from hedgenet.orbitals.blocks import edge_positions

    targets = []
    for p in paths:
        store = DatasetStore(p)
        c = store.read_couplings()
        if c is None:
            continue
        atoms = store.force_constants_cell_atoms()
        if c["n_atoms"] != len(atoms):
            raise ValueError(f"the couplings stored in {p} belong to a {c['n_atoms']}-atom cell, its force constants "
                             f"to a {len(atoms)}-atom one. Fix: rerun hedgenet-label with dataset.couplings=true on "
                             "this file (it stores the couplings of the force-constant cell)")
        graph = model.graph_builder().from_atoms(atoms)
        index, shift = graph.block_index.numpy(), graph.block_shift.numpy().round().astype(np.int64)
        where = edge_positions(index, shift, c["edge_index"], c["cell_shift"], len(atoms))
        n = c["dH"].shape[-1]
        n_orb = np.asarray(c["n_orb"])
        orb = np.arange(n)
        mask = ((orb[None, :, None] < n_orb[index[0]][:, None, None]) & (orb[None, None, :] < n_orb[index[1]][:, None, None])
                & (where >= 0)[:, None, None])
        k = len(c["atoms"]) * 3
        dH = np.zeros((k, len(where), n, n), dtype=np.float32)
        dS = np.zeros_like(dH)
        ok = where >= 0
        dH[:, ok] = c["dH"].reshape(k, *c["dH"].shape[2:])[:, where[ok]]
        dS[:, ok] = c["dS"].reshape(k, *c["dS"].shape[2:])[:, where[ok]]
        displaced = np.array([(a, x) for a in c["atoms"] for x in range(3)], dtype=np.int64)
        targets.append(CouplingTarget(str(p), atoms, graph, displaced, torch.as_tensor(dH), torch.as_tensor(dS),
                                      torch.as_tensor(mask), float(c["delta_A"])))
    return targets


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
    eS = (dS - target.dS[k]) * target.mask
    shift = float(getattr(model, "hamiltonian_shift_eV", 0.0))
    return (dH - target.dH[k]) * target.mask - shift * eS, eS


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
