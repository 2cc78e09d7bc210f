"""Exact derivatives of a model by automatic differentiation, behind :class:`~hedgenet.calculators.ModelCalculator`'s
``force_constants(method="autograd")`` and ``block_derivatives(method="autograd")``: the Hessian of the
energy (eV/Å², batched vector–Jacobian products) and dH/du, dS/du by forward mode (one Jacobian–vector
product per atom and direction), no step size."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from hedgenet.orbitals.blocks import BlockDerivatives


def autograd_force_constants(model, atoms: Atoms, rows_per_batch: int = 48) -> np.ndarray:
    """Exact Hessian Φ (N, N, 3, 3) in eV/Å² of a model's energy at ``atoms``, by differentiating its
    autograd forces once more, ``rows_per_batch`` Hessian rows (atom, direction) at a time (a batched
    vector–Jacobian product, :func:`hedgenet.models.base.model_hessian`), so memory stays that of a few force
    evaluations on large cells). On a cell with lattice translations (an undisplaced supercell) only one atom's
    rows per orbit are computed, the rest by translation."""
    from hedgenet.models.base import model_hessian
    from hedgenet.structures.supercell import lattice_translations

    param = next(model.parameters())
    graph = model.energy_graph(model.graph_builder().from_atoms(atoms)).to(device=param.device, dtype=param.dtype)
    return model_hessian(model, graph, rows_per_batch, translations=lattice_translations(atoms)[0])


def autograd_block_derivatives(model, atoms: Atoms) -> BlockDerivatives:
    """The model's exact dH/du and dS/du by forward-mode autodiff (torch.func.jvp), one product per
    atom and direction, on the edge list of ``atoms``."""
    import torch
    from torch.func import jvp

    from hedgenet.calculators import blocks_from_prediction

    param = next(model.parameters())
    graph = model.graph_builder().from_atoms(atoms).to(device=param.device, dtype=param.dtype)  # one neighbour list
    b0 = blocks_from_prediction(graph, model(graph, compute_forces=False), model.layout, atoms.numbers)
    n_max = b0.H.shape[-1]

    def blocks(pos):
        g = graph
        g.pos = pos
        out = model(g, compute_forces=False, training=True)
        return out["H"][:, :n_max, :n_max], out["S"][:, :n_max, :n_max]

    n = len(atoms)
    dH = np.zeros((n, 3) + b0.H.shape)
    dS = np.zeros_like(dH)
    pos0 = graph.pos.detach().clone()
    for a in range(n):
        for x in range(3):
            tangent = torch.zeros_like(pos0)
            tangent[a, x] = 1.0
            _, (tH, tS) = jvp(blocks, (pos0,), (tangent,))
            dH[a, x], dS[a, x] = tH.detach().double().cpu().numpy(), tS.detach().double().cpu().numpy()
    return BlockDerivatives(b0, dH, dS)
