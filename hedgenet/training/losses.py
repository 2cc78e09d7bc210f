"""Weighted energy / force / Hamiltonian / overlap losses and the block categories used by the metrics.

All losses are mean squared errors in physical units: energy per atom (eV/atom), force components
(eV/Å), and H (eV) and S (dimensionless) block elements over the real orbitals only (padding masked).

``layer_forces``: the mean force per atom of each layer of each structure, (1/N_l) Σ_{i∈l} F_i (eV/Å). It is
what the interlayer modes are made of (a rigid layer displacement feels only this force) and is a few meV/Å,
invisible in the per-atom force MSE next to intralayer forces of ~0.5 eV/Å. ``layer_forces_in_plane``: the
same for the in-plane (x, y) components only — the layers lie in the xy plane (hedgenet.structures) — which the
sliding energy and the shear mode are made of: ~0.1–1 meV/Å, ten times smaller again than the normal ones.

``forces_out_of_plane``: the MSE of the force components normal to the layers (z; the layers lie in the xy
plane) on top of ``forces``: flexural (ZA, ZO) modes are four times softer than the in-plane ones, so their
forces are small and a plain component MSE leaves them relatively worse fitted.

``H_onsite``: the MSE of the on-site blocks' elements (eV) on top of ``H``. They are ≈ 2 % of a cell's block
elements, so the H MSE hardly sees them, yet their changes with the bond lengths (≈ 0.8 eV/Å per Å of
nearest-neighbour bond in GFN1-xTB; s and p shift alike) are the local potential a displacement makes, which the
couplings and the thermal bands inherit.

``virial``: W = −∂E/∂ε per atom (eV/atom), over the structures whose labels have it. Forces at one fixed cell
do not fix it: a spurious bond tension (a term ∝ Σ r_ij) exerts no force on a lattice, yet it is a stress
that stiffens the flexural (ZA) branch, which turns linear near Γ, and moves the model's lattice constant.
"""

from __future__ import annotations

import torch

ONSITE, INTRA, INTER = 0, 1, 2
BLOCK_KINDS = {"onsite": ONSITE, "intra": INTRA, "inter": INTER}


def block_kind(edge_index: torch.Tensor, cell_shift: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
    """0 for on-site blocks (i, i, R = 0), 1 for pairs within one layer, 2 for pairs across layers."""
    i, j = edge_index
    onsite = (i == j) & (cell_shift == 0).all(dim=1)
    kind = torch.where(layer[i] == layer[j], INTRA, INTER)
    return torch.where(onsite, ONSITE, kind)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    diff = (pred - target)[mask]
    return (diff * diff).mean() if diff.numel() else pred.sum() * 0.0


def layer_mean_forces(forces: torch.Tensor, batch) -> torch.Tensor:
    """(n_groups, 3) mean force per atom (eV/Å) of every (structure, layer) group present in ``batch``."""
    n_layers = int(batch.layer.max()) + 1
    group = batch.batch * n_layers + batch.layer
    sums = torch.zeros(int(batch.n_atoms.numel()) * n_layers, 3, dtype=forces.dtype, device=forces.device)
    sums.index_add_(0, group, forces)
    counts = torch.bincount(group, minlength=sums.shape[0]).to(forces.dtype)
    present = counts > 0
    return sums[present] / counts[present, None]


def total_loss(pred: dict, batch, weights: dict, hamiltonian_shift_eV: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Σ_w w · MSE over the quantities the model predicts and the weights ask for; returns the parts too.
    With a ``hamiltonian_shift_eV`` E (the model's, :class:`~hedgenet.models.base.GraphModel`), the H term is the
    MSE of H − E·S, what the model's H head predicts (eV)."""
    parts = {}
    if "energy" in pred and weights.get("energy", 0) > 0:
        n = batch.n_atoms.to(pred["energy"].dtype)
        parts["energy"] = (((pred["energy"] - batch.energy) / n) ** 2).mean()
    if "forces" in pred and weights.get("forces", 0) > 0:
        parts["forces"] = ((pred["forces"] - batch.forces) ** 2).mean()
    if "forces" in pred and weights.get("forces_out_of_plane", 0) > 0:
        parts["forces_out_of_plane"] = ((pred["forces"][:, 2] - batch.forces[:, 2]) ** 2).mean()
    if "forces" in pred and (weights.get("layer_forces", 0) > 0 or weights.get("layer_forces_in_plane", 0) > 0):
        diff = layer_mean_forces(pred["forces"], batch) - layer_mean_forces(batch.forces, batch)
        if weights.get("layer_forces", 0) > 0:
            parts["layer_forces"] = (diff**2).mean()
        if weights.get("layer_forces_in_plane", 0) > 0:
            parts["layer_forces_in_plane"] = (diff[:, :2] ** 2).mean()
    if "virial" in pred and weights.get("virial", 0) > 0 and batch.virial is not None:
        n = batch.n_atoms.to(pred["virial"].dtype)[:, None, None]
        parts["virial"] = masked_mse(pred["virial"] / n, batch.virial / n, torch.isfinite(batch.virial))
    for key in ("H", "S"):
        if key in pred and (weights.get(key, 0) > 0 or (key == "H" and weights.get("H_onsite", 0) > 0)):
            p, t = pred[key], getattr(batch, key)
            if key == "H" and hamiltonian_shift_eV and "S" in pred:
                p, t = p - hamiltonian_shift_eV * pred["S"], t - hamiltonian_shift_eV * batch.S
            if weights.get(key, 0) > 0:
                parts[key] = masked_mse(p, t, batch.block_mask)
            if key == "H" and weights.get("H_onsite", 0) > 0:
                parts["H_onsite"] = masked_mse(p, t, batch.block_mask & (batch.block_kind == ONSITE)[:, None, None])
    if not parts:
        raise ValueError(
            "no loss term: the model predicts none of the quantities with a positive weight in "
            f"train.loss_weights={weights}. Fix: match task= and the loss weights."
        )
    loss = sum(weights[k] * v for k, v in parts.items())
    return loss, parts
