"""Interlayer registry features: where an atom sits over the other layer, in the plane of its layer.

The sliding energy of a van der Waals bilayer, and with it the interlayer shear mode, is set by the
*in-plane* offset ρ of interlayer atom pairs at a fixed interlayer distance d (Kolmogorov & Crespi, PRB 71,
235415 (2005): the registry-dependent term exp(−(ρ/δ)²) with δ ≈ 0.58 Å for graphite). A message whose radial
weights depend on |r_ij| alone sees ρ only through |r_ij| = √(d² + ρ²), which changes by ~0.25 Å while ρ
sweeps a whole C–C bond; smooth radial functions (8 Bessel functions over 5 Å) then give a sliding
corrugation that is far too small. Measured on the 5×5 AB bilayer with xTB labels: a model without these
features reproduced the interlayer distance scan (layer forces within ~1 meV/Å) but only 1/18 of the sliding
force (docs/results_training.md, interlayer physics).

HedgeNet's interlayer relations therefore also see the transverse distances

    ρ_i² = |r_ij|² − (r_ij · n_i)²,   ρ_j² = |r_ij|² − (r_ij · n_j)²,

with n_i the local normal of atom i's layer, through Gaussians exp(−ρ²/δ_k²) (widths δ_k in Å), times the
relation's cutoff envelope so they vanish smoothly at the cutoff. The normal enters only as the projector
P_i = n_i n_iᵀ, from the intralayer neighbours' second moment C_i = Σ_j w(r_ij) r_ij r_ijᵀ: its adjugate
adj(C_i) = λ₁λ₂ n nᵀ + λ₀(…) is n nᵀ up to a factor when the neighbours lie in a plane (λ₀ = 0), so
P_i = adj(C_i) / tr adj(C_i) needs no eigensolver (smooth, differentiable, degenerate in-plane
eigenvalues are harmless) and is E(3)-equivariant; the features are invariant. For non-planar layers (a
MoS2 sandwich) P_i is the projector weighted towards the smallest-variance direction.
"""

from __future__ import annotations

from typing import Sequence

import torch


def normal_projectors(
    n_atoms: int, intra_edges: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], eps: float = 1e-8
) -> torch.Tensor:
    """(n_atoms, 3, 3) projectors onto each atom's layer normal.

    ``intra_edges``: (i, r_ij, w_ij) per intralayer relation type: receiving atom indices (E,), edge vectors
    (E, 3) in Å and smooth weights (E,) that vanish at the relation's cutoff. Atoms with fewer than two
    non-collinear intralayer neighbours get P ≈ 0 (then ρ² = |r|²).
    """
    if not intra_edges:
        raise ValueError("registry features need intralayer edges to define each layer's normal")
    vec0 = intra_edges[0][1]
    second = vec0.new_zeros(n_atoms, 3, 3)
    for i, vec, w in intra_edges:
        second = second.index_add(0, i, w[:, None, None] * vec[:, :, None] * vec[:, None, :])
    c0, c1, c2 = second[:, 0], second[:, 1], second[:, 2]
    adj = torch.stack(
        [torch.linalg.cross(c1, c2), torch.linalg.cross(c2, c0), torch.linalg.cross(c0, c1)], dim=1
    )
    trace = adj.diagonal(dim1=1, dim2=2).sum(-1)
    return adj / (trace + eps)[:, None, None]


def registry_features(
    index: torch.Tensor, vec: torch.Tensor, projectors: torch.Tensor, widths_A: torch.Tensor,
    envelope: torch.Tensor,
) -> torch.Tensor:
    """(E, 2K) features [exp(−ρ_i²/δ_k²), exp(−ρ_j²/δ_k²)] · envelope(|r_ij|) of interlayer edges i ← j."""
    i, j = index
    r2 = (vec * vec).sum(-1)
    rho2_i = r2 - torch.einsum("ea,eab,eb->e", vec, projectors[i], vec)
    rho2_j = r2 - torch.einsum("ea,eab,eb->e", vec, projectors[j], vec)
    inv = 1.0 / (widths_A.to(vec.dtype) ** 2)
    feats = torch.cat([torch.exp(-rho2_i[:, None] * inv), torch.exp(-rho2_j[:, None] * inv)], dim=1)
    return feats * envelope[:, None]


__all__ = ["normal_projectors", "registry_features"]
