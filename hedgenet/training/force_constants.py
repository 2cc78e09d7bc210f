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

When the target cell has an inversion centre (AB bilayer graphene does), a pattern v that is equal on each pair of
inversion partners (v_σ(a) = v_a) has its −δ·v copy equal to the +δ·v copy inverted, so an equivariant model's forces
there are the +δ·v copy's, negated and swapped between partners: one displaced copy per probe instead of two, the
same loss (``inversion_pairs``, default on in training). Such patterns span half of the displacements: every
phonon at q ≠ Γ (each mode's q/−q pair has one combination among them) and the inversion-odd modes at Γ; not the
inversion-even Γ modes (in-plane optical E_g, the interlayer shear and breathing), which the rigid interlayer
probes and the forces cover.

The rigid interlayer translations (the Γ shear and breathing patterns) are the same on every image of a primitive
cell, so the model's Φv for them is evaluated on the primitive cell of the target's supercell (4 atoms for AB
bilayer graphene instead of 196 in 7×7) and compared with the reference's Φv there (the same on every image; its
mean over the images is used).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from hedgenet.models.base import (
    central_differences,
    displaced_copies,
    hessian_vector_products,
    model_hessian,
)


@dataclass
class ForceConstantTarget:
    """One undisplaced supercell with the reference's force constants: ``atoms``, its ``graph`` (as the
    model's graph builder makes it) and ``matrix`` (3N, 3N) eV/Å², rows and columns (atom, direction)."""

    dataset: str
    atoms: Atoms
    graph: object
    matrix: torch.Tensor
    displacement_A: float = 0.01  # the ± step of the reference's finite differences
    primitive_graph: object = None  # the model's graph of the primitive cell (``primitive_cell``) of ``atoms``
    orbit: np.ndarray | None = None  # orbit[a]: the primitive atom that atom a of ``atoms`` is an image of

    def to(self, device, dtype) -> "ForceConstantTarget":
        prim = None if self.primitive_graph is None else self.primitive_graph.to(device, dtype)
        return dataclasses.replace(self, graph=self.graph.to(device, dtype), matrix=self.matrix.to(device, dtype),
                                   primitive_graph=prim)

    @functools.cached_property
    def inversion_partners(self) -> torch.Tensor | None:
        """σ (N,) on this target's device: atom σ(a) is atom a's image under an inversion centre of the cell
        (``inversion_partners``), None when it has none."""
        sigma = inversion_partners(self.atoms)
        return None if sigma is None else torch.as_tensor(sigma, device=self.matrix.device)

    @functools.cached_property
    def layer_translations(self) -> torch.Tensor:
        """The rigid interlayer patterns (``layer_translation_vectors``) on this target's device and dtype."""
        return layer_translation_vectors(self.atoms).to(self.matrix.device, self.matrix.dtype)

    @functools.cached_property
    def interlayer_probes(self) -> tuple[object, torch.Tensor, torch.Tensor]:
        """(graph, patterns (K, n, 3), reference Φv (K, n, 3) eV/Å) of the rigid interlayer translations on the
        primitive cell when there is one (n its atoms; Φv the mean over each primitive atom's images), else on
        ``atoms`` itself."""
        v = self.layer_translations
        ref = (v.reshape(len(v), -1) @ self.matrix.T).reshape(v.shape)
        if self.primitive_graph is None:
            return self.graph, v, ref
        orbit = torch.as_tensor(self.orbit, device=v.device)
        n_prim = int(orbit.max()) + 1
        count = torch.bincount(orbit, minlength=n_prim).to(v.dtype)[:, None]
        fold = lambda x: torch.zeros(len(x), n_prim, 3, dtype=x.dtype, device=x.device).index_add_(1, orbit, x) / count
        return self.primitive_graph, fold(v), fold(ref)

    @functools.cached_property
    def inverse_sqrt(self) -> torch.Tensor:
        """Φ^(−1/2) (3N, 3N) in Å/eV^(1/2) on the space of Φ's non-zero eigenvalues (the three translations, which
        Φ and every translation-invariant model leave at zero, excluded; |λ| for a negative one)."""
        lam, vec = torch.linalg.eigh(self.matrix.double())
        keep = lam.abs() > 1e-6 * lam.abs().max()
        v = vec[:, keep]
        return ((v / lam[keep].abs().sqrt()) @ v.T).to(self.matrix.dtype)


def layer_translation_vectors(atoms: Atoms) -> torch.Tensor:
    """(3(L − 1), N, 3) rigid relative translations of the L layers (``atoms.arrays["layer"]``): layer l = 1 … L − 1
    moved by 1 Å along x, y and z, less the mass-weighted translation of the whole cell (which Φ leaves at zero),
    so the patterns span the interlayer shear and breathing modes at Γ. Empty for one layer."""
    layer = np.asarray(atoms.arrays["layer"])
    mass = atoms.get_masses()
    patterns = []
    for lay in np.unique(layer)[1:]:
        weight = (layer == lay).astype(float) - mass[layer == lay].sum() / mass.sum()
        for d in range(3):
            v = np.zeros((len(atoms), 3))
            v[:, d] = weight
            patterns.append(v)
    return torch.as_tensor(np.array(patterns).reshape(-1, len(atoms), 3))


def inversion_partners(atoms: Atoms, symprec: float = 1e-5) -> np.ndarray | None:
    """σ (N,) with σ(a) the atom at atom a's image under an inversion centre c of the periodic cell (position
    2c − r_a up to lattice vectors, the same element; σ∘σ = identity), or None when the cell has no inversion
    (phonopy's symmetry search, tolerance ``symprec`` Å; partners within 10⁻⁴ Å; displaced or twisted cells have
    none)."""
    from phonopy.structure.symmetry import Symmetry

    from hedgenet.structures.supercell import to_phonopy_atoms

    frac = atoms.get_scaled_positions()
    numbers = atoms.get_atomic_numbers()
    ops = Symmetry(to_phonopy_atoms(atoms), symprec=symprec).symmetry_operations
    for rot, trans in zip(ops["rotations"], ops["translations"]):
        if not (rot == -np.eye(3, dtype=int)).all():
            continue
        d = (trans - frac)[:, None, :] - frac[None, :, :]
        d -= np.round(d)
        dist = np.linalg.norm(d @ atoms.cell.array, axis=2)
        sigma = dist.argmin(axis=1)
        ok = (dist[np.arange(len(atoms)), sigma] < 1e-4).all() and (numbers[sigma] == numbers).all()
        if ok and (sigma[sigma] == np.arange(len(atoms))).all():
            return sigma
    return None


def inversion_even(vectors: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """Patterns (K, N, 3) made equal on inversion partners (``partners`` σ): (v + v_σ)/√2, N(0, 1) components
    again when v's are (no atom is its own partner). Their −v copies are the +v copies inverted."""
    return (vectors + vectors[:, partners]) / np.sqrt(2.0)


def rigid_layer_frequencies_THz(phi: np.ndarray, atoms: Atoms) -> list[float]:
    """The frequencies (THz) of the rigid interlayer patterns of ``layer_translation_vectors`` under force
    constants ``phi`` (N, N, 3, 3) eV/Å²: √(vᵀΦv / vᵀMv) per pattern (negative for vᵀΦv < 0, an unstable
    stacking), the Γ shear (x, y) and breathing (z) of each layer against the rest."""
    from ase import units

    thz = np.sqrt(units._e / units._amu) * 1e10 / (2 * np.pi) / 1e12  # ν (THz) per √(eV/(Å²·amu))
    n = len(atoms)
    matrix = phi.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    mass = np.repeat(atoms.get_masses(), 3)
    out = []
    for v in layer_translation_vectors(atoms).reshape(-1, 3 * n).numpy():
        w2 = float(v @ matrix @ v) / float(v @ (mass * v))
        out.append(float(np.sign(w2) * np.sqrt(abs(w2)) * thz))
    return out


def load_force_constant_targets(paths: Sequence[str], model) -> list[ForceConstantTarget]:
    """The force-constant targets of the dataset files that store them (``[]`` when none does), as graphs of
    ``model`` (energy and forces only)."""
    from hedgenet.data.store import stored_in
    from hedgenet.structures.supercell import primitive_cell

    targets = []
    for p, store, fc in stored_in(paths, "read_force_constants"):
        atoms = store.force_constants_cell_atoms()
        n = len(atoms)
        matrix = torch.as_tensor(fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n).copy())
        builder = model.graph_builder()
        graph = model.energy_graph(builder.from_atoms(atoms))
        prim, orbit = primitive_cell(atoms)
        prim_graph = model.energy_graph(builder.from_atoms(prim)) if len(prim) < n else None
        targets.append(ForceConstantTarget(str(p), atoms, graph, matrix, store.force_constants_displacement_A(),
                                           prim_graph, orbit if prim_graph is not None else None))
    return targets


def probe_vectors(n_atoms: int, n_vectors: int, seed: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """(n_vectors, n_atoms, 3) displacement patterns with N(0, 1) components (Å), fixed by ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n_vectors, n_atoms, 3, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


@dataclass
class FiniteDifferenceProbe:
    """One term of the force-constant loss: the model's Φv of one structure (``graph``, energy and forces only)
    for the patterns ``vectors`` (K, n, 3) Å, by central differences of its forces at ±``step_A``·v, and
    ``errors``, which maps that Φv (K, n, 3) to the errors the loss squares. The training step evaluates the
    displaced copies (``copies``) in one pass with its training cells (:func:`predict_with_probes`)."""

    graph: object
    vectors: torch.Tensor
    step_A: float
    errors: Callable[[torch.Tensor], torch.Tensor]
    inversion_partners: torch.Tensor | None = None  # σ when every pattern is equal on inversion partners

    def copies(self) -> list:
        """The displaced copies: ±δ·v per pattern, or only +δ·v with ``inversion_partners`` (the −δ·v copy is
        its inversion image)."""
        signs = (1.0, -1.0) if self.inversion_partners is None else (1.0,)
        return displaced_copies(self.graph, self.vectors, self.step_A, signs)

    def forces(self, model) -> torch.Tensor:
        """The model's forces (copies·n, 3) eV/Å on :meth:`copies` in a pass of their own (differentiable)."""
        from hedgenet.graphs import collate

        return model(collate(self.copies()), training=True, compute_virial=False)["forces"]

    def hessian_vector_products(self, forces: torch.Tensor) -> torch.Tensor:
        """The model's Φv (K, n, 3) eV/Å² · Å by central differences of its forces (copies·n, 3) on :meth:`copies`;
        with ``inversion_partners`` the forces at −δ·v are those at +δ·v inverted: F₋(σ(a)) = −F₊(a)."""
        k = len(self.vectors)
        if self.inversion_partners is not None:  # the forces at −δ·v next to those at +δ·v, as displaced_copies orders them
            plus = forces.reshape(k, -1, 3)
            minus = torch.empty_like(plus).index_copy_(1, self.inversion_partners, -plus)
            forces = torch.stack((plus, minus), dim=1).reshape(-1, 3)
        return central_differences(forces, k, self.step_A)

    def loss(self, forces: torch.Tensor) -> torch.Tensor:
        """Mean squared error from the model's forces (copies·n, 3) eV/Å on :meth:`copies`."""
        return (self.errors(self.hessian_vector_products(forces)) ** 2).mean()


def force_constant_probe(target: ForceConstantTarget, vectors: torch.Tensor, relative: bool = False,
                         inversion_pairs: bool = False) -> FiniteDifferenceProbe:
    """The probe of Φ with the patterns ``vectors`` (K, N, 3): errors model minus reference Φv in eV/Å²; with
    ``inversion_pairs`` and a target cell with an inversion centre, the patterns are first made equal on inversion
    partners (:func:`inversion_even`) and the probe evaluates one displaced copy each (module docstring); with
    ``relative``, the dimensionless Φ^(−1/2)(Φ_model − Φ)Φ^(−1/2)·v instead (the patterns mapped by Φ^(−1/2)
    first), whose mean square over random patterns is the squared relative error of the force constants in the
    reference's own metric: its eigenvalues bound every mode's relative error of ω² (whatever the masses), so
    soft modes (flexural ZA, interlayer shear and breathing) weigh as much as the stiff in-plane optical ones."""
    k = len(vectors)
    partners = target.inversion_partners if inversion_pairs else None
    if partners is not None:
        vectors = inversion_even(vectors, partners)
    flat = vectors.reshape(k, -1)
    if relative:
        flat = flat @ target.inverse_sqrt.T
        if partners is not None:  # Φ^(−1/2) keeps them equal on partners up to the reference Φ's own symmetry
            flat = inversion_even(flat.reshape(vectors.shape), partners).reshape(k, -1) / np.sqrt(2.0)
    reference = flat @ target.matrix.T

    def errors(hv: torch.Tensor) -> torch.Tensor:
        err = hv.reshape(k, -1) - reference
        if relative:
            err = err @ target.inverse_sqrt.T
        return err.reshape(vectors.shape)

    return FiniteDifferenceProbe(target.graph, flat.reshape(vectors.shape), target.displacement_A, errors, partners)


def interlayer_mode_probe(target: ForceConstantTarget, index: Sequence[int]) -> FiniteDifferenceProbe:
    """The probe of the rigid interlayer patterns ``index`` of ``target.layer_translations`` (on the primitive
    cell when the target has one): errors |Φ_model v − Φv| / |Φv| (K,), whose mean square is the
    interlayer-mode loss."""
    graph, patterns, reference = target.interlayer_probes
    v, ref = patterns[list(index)], reference[list(index)]

    def errors(hv: torch.Tensor) -> torch.Tensor:
        return (hv - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)

    return FiniteDifferenceProbe(graph, v, target.displacement_A, errors)


def force_constant_errors(model, target: ForceConstantTarget, vectors: torch.Tensor, create_graph: bool = False,
                          relative: bool = False, finite_differences: bool = False):
    """Model minus reference Φv (K, N, 3) in eV/Å² for the given probe patterns (dimensionless with ``relative``:
    :func:`force_constant_probe`). ``finite_differences``: the model's Φv by central differences with the
    reference's own step (the training loss), else exact."""
    probe = force_constant_probe(target, vectors, relative)
    step = probe.step_A if finite_differences else None
    return probe.errors(hessian_vector_products(model, probe.graph, probe.vectors, create_graph, step))


def interlayer_mode_errors(model, target: ForceConstantTarget, index: Sequence[int], create_graph: bool = False):
    """Relative errors |Φ_model v − Φv| / |Φv| (K,) of the rigid interlayer patterns ``index`` of
    ``target.layer_translations`` (the model's Φv by central differences with the reference's step, on the primitive
    cell when the target has one): the interlayer-mode loss is their mean square."""
    probe = interlayer_mode_probe(target, index)
    return probe.errors(hessian_vector_products(model, probe.graph, probe.vectors, create_graph, probe.step_A))


def predict_with_probes(model, batch, probes: Sequence[FiniteDifferenceProbe]) -> tuple[dict, list[torch.Tensor]]:
    """A training step's predictions for ``batch`` (``model(batch, training=True)``) and the model's forces on
    every probe's displaced copies (one (copies·n, 3) tensor per probe), from one forward and backward pass over all of
    them: the graphs of a batch do not interact, so this equals separate passes and saves a pass's fixed cost
    (measured on the main job: docs/results_training.md). Models whose messages run over the block edges
    (DeepH-E3-like) evaluate the probes apart."""
    from hedgenet.graphs import collate

    if not probes:
        return model(batch, training=True), []
    if getattr(model, "messages_on_block_edges", False):
        return model(batch, training=True), [p.forces(model) for p in probes]
    unlabelled = dataclasses.replace(batch, energy=None, forces=None, virial=None, H=None, S=None, block_mask=None)
    copies = [[_without_blocks_like(c, batch) for c in p.copies()] for p in probes]
    out = model(collate([unlabelled] + [c for cs in copies for c in cs]), training=True,
                compute_virial=batch.virial is not None)
    n_atoms, n_graphs = batch.pos.shape[0], batch.num_graphs
    per_graph, per_atom = ("energy", "virial"), ("node_energy", "forces")
    pred = {k: v[:n_graphs] if k in per_graph else v[:n_atoms] if k in per_atom else v for k, v in out.items()}
    sizes = [sum(c.pos.shape[0] for c in cs) for cs in copies]
    return pred, list(out["forces"][n_atoms:].split(sizes))


def _without_blocks_like(graph, batch):
    """``graph`` (no block edges) with empty block-edge tensors shaped like ``batch``'s, so the two collate."""
    if batch.block_index is None:
        return graph
    empty = {k: getattr(batch, k)[..., :0] if k == "block_index" else getattr(batch, k)[:0]
             for k in ("block_index", "block_shift", "block_reverse", "block_kind")
             if getattr(batch, k) is not None}
    return dataclasses.replace(graph, **empty)


def force_constant_metrics(model, targets: Sequence[ForceConstantTarget]) -> dict:
    """The model's full Hessian (autograd) against each stored reference Φ: MAE and largest error (eV/Å²) over
    all elements, and the rigid interlayer patterns' frequencies (THz, ``rigid_layer_frequencies_THz``) of model
    and reference in the first target (x, y, z per layer against the rest)."""
    if not targets:
        return {}
    from hedgenet.structures.supercell import lattice_translations

    maes, maxes = [], []
    for t in targets:
        n = len(t.atoms)
        graph = t.graph.to(dtype=model.dtype)
        phi = model_hessian(model, graph, translations=lattice_translations(t.atoms)[0])
        err = np.abs(phi.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) - t.matrix.double().numpy())
        maes.append(float(err.mean()))
        maxes.append(float(err.max()))
        if t is targets[0]:
            ref = t.matrix.double().numpy().reshape(n, 3, n, 3).transpose(0, 2, 1, 3)
            rigid = {"model": rigid_layer_frequencies_THz(phi, t.atoms),
                     "reference": rigid_layer_frequencies_THz(ref, t.atoms)}
    return {"force_constants_mae_eV_A2": float(np.mean(maes)), "force_constants_max_error_eV_A2": max(maxes),
            "rigid_interlayer_modes_THz": rigid}
