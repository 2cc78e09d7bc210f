"""Phonon-aware picks for active learning: the candidates whose forces would most sharpen the model's force
constants on the relaxed cell (``active.score=phonons``).

The single-model estimate (:mod:`hedgenet.models.last_layer`) ranks a candidate by how far its atoms lie from the
training atoms in the readout's feature space: its own novelty, whatever the phonons need. This score asks instead
which labels would most reduce the uncertainty of what the phonon stage computes, the second derivatives of the
energy at the relaxed geometry (expected variance reduction of a target quantity under a Bayesian last layer:
goal-oriented experimental design).

A model's energy is linear in the weights w of the readout's last layer:
E(r) = Σ_s c_s w·u_s(r) + const, with u_s(r) = Σ_{i of species s} φ_i(r) the summed last hidden features φ of the
atoms of species s and c_s the species' energy scale. Giving every species its own weights (as the last-layer
estimate does), the unknowns are θ = (c_s w)_s ∈ R^D, D = n_species · d, and

* forces: F = −Jᵀθ with J = ∂u/∂r (D × 3N, :func:`force_jacobian`): a labelled cell's forces carry the
  information JJᵀ about θ (per unit noise variance);
* force constants along a displacement pattern v (Å per Å of amplitude): vᵀΦv = θ·g_v with
  g_v = ∂²u(r₀ + h v)/∂h² at h = 0 on the relaxed cell r₀ (:func:`probe_curvatures`; eV/Å² once times θ).

After the labelled cells the posterior precision is A = Σ JJᵀ + λ·tr(ΣJJᵀ)/D·I (λ as the last-layer estimate's),
and a candidate's gain is the drop of the probes' summed variance Σ_v g_vᵀA⁻¹g_v when its forces are added,
A → A + J_cJ_cᵀ. Picks are greedy: the largest gain, then A is updated with it (the variance does not depend on
the labels, so no label is needed), which keeps a batch from piling onto candidates that teach the same thing.
The noise variance scales every gain alike and drops out of the ranking.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from hedgenet.models.last_layer import readout_output_layer

__all__ = ["force_jacobian", "greedy_picks", "phonon_aware_picks", "phonon_aware_round", "probe_curvatures",
           "probe_vectors", "readout_weights", "species_feature_sums"]


def species_feature_sums(model, graph) -> torch.Tensor:
    """u (D,) = per species the sum of its atoms' last hidden readout features, concatenated species by species
    (D = n_species · d), differentiable in ``graph.pos`` when that requires grad."""
    captured: list = []
    hook = readout_output_layer(model).register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        model(model.energy_graph(graph), compute_forces=False, compute_virial=False)
    finally:
        hook.remove()
    phi = captured[-1]
    n_species = int(model.energy_scale.numel())
    sums = phi.new_zeros(n_species, phi.shape[1]).index_add(0, graph.species.to(phi.device), phi)
    return sums.reshape(-1)


def force_jacobian(model, graph) -> np.ndarray:
    """J = ∂u/∂r (D, 3N) of one structure at its positions (float64 numpy): the model's forces are −Jᵀθ,
    θ = (c_s w)_s (module docstring)."""
    pos = graph.pos.to(model.dtype).detach().requires_grad_(True)
    u = species_feature_sums(model, dataclasses.replace(graph, pos=pos))
    rows = [torch.autograd.grad(u[k], pos, retain_graph=k + 1 < len(u), allow_unused=True)[0] for k in range(len(u))]
    return np.stack([np.zeros(pos.numel()) if g is None else g.detach().double().cpu().numpy().ravel()
                     for g in rows])


def readout_weights(model) -> np.ndarray:
    """θ (D,) = per species the energy scale times the readout's last-layer weights (module docstring)."""
    w = readout_output_layer(model).weight.detach().double().cpu().numpy().ravel()
    return np.concatenate([float(c) * w for c in model.energy_scale.detach().double().cpu().numpy()])


def probe_vectors(n_atoms: int, n_probes: int, seed: int) -> np.ndarray:
    """``n_probes`` random displacement patterns (K, N, 3), each with unit RMS displacement per atom (Å per Å)."""
    v = np.random.default_rng(seed).standard_normal((n_probes, n_atoms, 3))
    return v / np.sqrt(np.mean(np.sum(v**2, axis=-1), axis=-1))[:, None, None]


def probe_curvatures(model, graph, vectors: np.ndarray, step_A: float = 0.001) -> np.ndarray:
    """G (D, K): g_v = ∂²u(r₀ + h v)/∂h² at h = 0 for each pattern v of ``vectors`` (K, N, 3), by central second
    differences with ``step_A`` in float64 (a double copy of the model; the error falls as step², 2·10⁻⁴ relative
    at 0.001 Å on a random tiny model), so that θ·g_v = vᵀΦv in eV/Å²."""
    model64 = copy.deepcopy(model).to(torch.float64)
    pos0 = graph.pos.to(torch.float64)

    def u_at(displacement):
        g = dataclasses.replace(graph, pos=pos0 + torch.as_tensor(displacement, dtype=torch.float64))
        with torch.no_grad():
            return species_feature_sums(model64, g).double().cpu().numpy()

    u0 = u_at(np.zeros_like(vectors[0]))
    return np.stack([(u_at(step_A * v) + u_at(-step_A * v) - 2 * u0) / step_A**2 for v in vectors], axis=1)


def greedy_picks(information: list[np.ndarray], labelled: np.ndarray, targets: np.ndarray, n: int,
                 regularization: float = 1e-3) -> tuple[list[int], np.ndarray, list[float]]:
    """The greedy picks (module docstring) among candidates with Fisher information ``information`` (each D × D:
    J_cJ_cᵀ), after the labelled cells' summed ``labelled`` (D × D), for the target curvatures ``targets``
    (D × K). Returns the picked indices in pick order, every candidate's gain before the first pick (the
    drop of Σ_v g_vᵀA⁻¹g_v; the ranking score) and the targets' summed variance before and after each pick."""
    if regularization <= 0:
        raise ValueError(f"regularization={regularization}: must be > 0 (it keeps the precision invertible)")
    d = labelled.shape[0]
    precision = labelled + regularization * max(float(np.trace(labelled)), 1e-300) / d * np.eye(d)

    def variance(p):
        return float(np.trace(targets.T @ np.linalg.solve(p, targets)))

    def gains(p):
        base = variance(p)
        return np.array([base - variance(p + info) for info in information])

    first = gains(precision)
    picked: list[int] = []
    history = [variance(precision)]
    gain = first
    for _ in range(min(int(n), len(information))):
        order = [i for i in np.argsort(-gain, kind="stable") if i not in picked]
        best = int(order[0])
        picked.append(best)
        precision = precision + information[best]
        history.append(variance(precision))
        gain = gains(precision)
    return picked, first, history


def phonon_aware_picks(model, candidates: list, labelled: list, relaxed, n: int, n_probes: int = 32,
                       seed: int = 0, regularization: float = 1e-3) -> dict:
    """Pick ``n`` of the ``candidates`` (graphs) for ``model``: labelled cells ``labelled`` (graphs), the phonon
    target on the ``relaxed`` cell (a graph) with ``n_probes`` random patterns drawn with ``seed``. Returns
    ``{"picked": indices into candidates, "gains": (C,) first-pick gains, "variance": the target's summed variance
    before and after each pick (relative units)}``."""
    if not labelled:
        raise ValueError("no labelled cells: the phonon-aware score needs the cells the model was trained on")
    info_labelled = sum(j @ j.T for j in (force_jacobian(model, g) for g in labelled))
    information = [j @ j.T for j in (force_jacobian(model, g) for g in candidates)]
    targets = probe_curvatures(model, relaxed, probe_vectors(int(relaxed.pos.shape[0]), n_probes, seed))
    picked, first, history = greedy_picks(information, info_labelled, targets, n, regularization)
    return {"picked": picked, "gains": first, "variance": history}


def phonon_aware_round(model_path, structures, labelled_paths, relaxed_atoms, n: int, n_probes: int = 32,
                       seed: int = 0) -> dict:
    """:func:`phonon_aware_picks` for an active-learning round: the model file of the round (``hedgenet-train``'s
    ``model.pt``), the candidate ``structures`` (ASE Atoms), the labelled datasets it was trained on and the
    relaxed cell (ASE Atoms) of the candidates' supercell."""
    from hedgenet.models.io import load_model
    from hedgenet.training.data import load_samples

    model = load_model(model_path)
    builder = model.graph_builder()
    samples, _, _ = load_samples([str(p) for p in labelled_paths])
    return phonon_aware_picks(model, [builder.from_atoms(s) for s in structures], [builder(s) for s in samples],
                              builder.from_atoms(relaxed_atoms), n, n_probes, seed)
