"""Force-constant targets: the reference's force constants Φ (eV/Å²) of a labelled dataset's undisplaced
supercell, and the model's Hessian–vector products against them (the force-constant loss and metric).

Phonon frequencies are Φ's eigenvalues: the forces of displaced cells fix them only through force differences
of ~Φ·0.01 Å, a few meV/Å at the farther neighbours, below a model's force errors, while a loss on Φ itself sees
every pair at its own scale. The reference's Φ costs a handful of reference runs (phonopy's symmetry-reduced
finite displacements) and is computed by the labelling anyway for the thermal samples; ``hedgenet-label``
stores it in the dataset file (``dataset.force_constants``).

Every probe is a random displacement pattern v with N(0, 1) components (Å); the model's Φv, in training by
central differences of its forces at ±δ·v with the reference's own step δ (both sides then carry the same
finite-difference operator; one batched force evaluation of two displaced copies), is compared with the
reference's Φv per component, MSE in (eV/Å²)². A probe touches every atom, so each one tests all of Φ's elements
at once. The metrics use the exact Hessian (autograd, −∂(F·v)/∂r).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from hedgenet.models.base import hessian_vector_products, model_hessian


@dataclass
class ForceConstantTarget:
    """One undisplaced supercell with the reference's force constants: ``atoms``, its ``graph`` (as the
    model's graph builder makes it) and ``matrix`` (3N, 3N) eV/Å², rows and columns (atom, direction)."""

    dataset: str
    atoms: Atoms
    graph: object
    matrix: torch.Tensor
    displacement_A: float = 0.01  # the ± step of the reference's finite differences

    def to(self, device, dtype) -> "ForceConstantTarget":
        return dataclasses.replace(self, graph=self.graph.to(device, dtype), matrix=self.matrix.to(device, dtype))

    @functools.cached_property
    def inverse_sqrt(self) -> torch.Tensor:
        """Φ^(−1/2) (3N, 3N) in Å/eV^(1/2) on the space of Φ's non-zero eigenvalues (the three translations, which
        Φ and every translation-invariant model leave at zero, excluded; |λ| for a negative one)."""
        lam, vec = torch.linalg.eigh(self.matrix.double())
        keep = lam.abs() > 1e-6 * lam.abs().max()
        v = vec[:, keep]
        return ((v / lam[keep].abs().sqrt()) @ v.T).to(self.matrix.dtype)


def load_force_constant_targets(paths: Sequence[str], model) -> list[ForceConstantTarget]:
    """The force-constant targets of the dataset files that store them (``[]`` when none does), as graphs of
    ``model`` (energy and forces only)."""
    from hedgenet.data.store import DatasetStore

    targets = []
    for p in paths:
        store = DatasetStore(p)
        fc = store.read_force_constants()
        if fc is None:
            continue
        ref = store.read_reference()
        atoms = Atoms(numbers=ref["numbers"], positions=ref["positions"], cell=ref["cell"], pbc=ref["pbc"])
        atoms.arrays["layer"] = np.asarray(ref["layer"], dtype=np.int64)
        n = len(atoms)
        matrix = torch.as_tensor(fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n).copy())
        graph = model.energy_graph(model.graph_builder().from_atoms(atoms))
        targets.append(ForceConstantTarget(str(p), atoms, graph, matrix, store.force_constants_displacement_A()))
    return targets


def probe_vectors(n_atoms: int, n_vectors: int, seed: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """(n_vectors, n_atoms, 3) displacement patterns with N(0, 1) components (Å), fixed by ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n_vectors, n_atoms, 3, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def force_constant_errors(model, target: ForceConstantTarget, vectors: torch.Tensor, create_graph: bool = False,
                          relative: bool = False, finite_differences: bool = False):
    """Model minus reference Φv (K, N, 3) in eV/Å² for the given probe patterns; with ``relative``, the
    dimensionless Φ^(−1/2)(Φ_model − Φ)Φ^(−1/2)·v instead, whose mean square over random patterns is the squared
    relative error of the force constants in the reference's own metric: its eigenvalues bound every mode's
    relative error of ω² (whatever the masses), so soft modes (flexural ZA, interlayer shear and breathing) weigh
    as much as the stiff in-plane optical ones. ``finite_differences``: the model's Φv by central differences with
    the reference's own step (the training loss), else exact."""
    k = len(vectors)
    flat = vectors.reshape(k, -1)
    if relative:
        flat = flat @ target.inverse_sqrt.T
    step = target.displacement_A if finite_differences else None
    hv = hessian_vector_products(model, target.graph, flat.reshape(vectors.shape), create_graph, step).reshape(k, -1)
    err = hv - flat @ target.matrix.T
    if relative:
        err = err @ target.inverse_sqrt.T
    return err.reshape(vectors.shape)


def force_constant_metrics(model, targets: Sequence[ForceConstantTarget]) -> dict:
    """The model's full Hessian (autograd) against each stored reference Φ: MAE and largest error (eV/Å²) over
    all elements."""
    if not targets:
        return {}
    maes, maxes = [], []
    for t in targets:
        n = len(t.atoms)
        graph = t.graph.to(dtype=model.dtype)
        phi = model_hessian(model, graph).transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
        err = np.abs(phi - t.matrix.double().numpy())
        maes.append(float(err.mean()))
        maxes.append(float(err.max()))
    return {"force_constants_mae_eV_A2": float(np.mean(maes)), "force_constants_max_error_eV_A2": max(maxes)}
