"""Single-model uncertainty from the last hidden layer of the energy readout (no committee).

A model's per-atom energy is a linear function of the readout's last hidden features, e_i = w·φ_i + b. A
Bayesian linear model on those features, fitted to the atoms of the training cells (one per species), gives
each atom the predictive variance

    σ_i² = φ_iᵀ (Φᵀ Φ + λ·tr(ΦᵀΦ)/d · I)⁻¹ φ_i     (dimensionless)

where Φ stacks the training atoms' features of the same species: small for an environment like those the
model was fitted on, large for one outside them (the "distance" of an atom from the training data in the
model's own feature space). From it:

* forces: √σ², averaged like a committee's spread over the atom and its neighbours within
  :data:`~hedgenet.models.committee.FORCE_SPREAD_RADIUS_A` (a force is made by the environment around it);
* H and S blocks: √(σ_i² + σ_j²) for block (i, j).

These are relative numbers: a scale fitted on held-out cells (:func:`hedgenet.training.committee.calibration_statistics`)
turns them into eV/Å or eV. One forward pass per structure, so it costs a committee's 1/K; whether it ranks
errors as well is measured in docs/results_training.md (committees, calibration and active learning).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LastLayerEstimate", "last_layer_features"]


def _readout_output_layer(model) -> torch.nn.Linear:
    readout = getattr(model, "readout", None)
    last = readout[-1] if isinstance(readout, torch.nn.Sequential) and len(readout) else None
    if not isinstance(last, torch.nn.Linear) or last.out_features != 1:
        raise ValueError(f"{type(model).__name__} has no energy readout ending in a linear layer (readout: "
                         f"{type(readout).__name__}): the last-layer estimate needs one. Fix: use a committee "
                         "(hedgenet-train committee.size=K) for this model")
    return last


def last_layer_features(model, graphs) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """Per graph: the readout's last hidden features φ (N, d) float64, the species index (N,) and the model's
    prediction dict (numpy, float64: forces, H, S as the model predicts them)."""
    from hedgenet.training.evaluate import predict_batches

    captured = []
    hook = _readout_output_layer(model).register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    out = []
    try:
        for pred, batch in predict_batches(model, graphs, batch_size=1):
            phi = captured.pop().double().cpu().numpy()
            captured.clear()
            out.append((phi, batch.species.cpu().numpy(), {k: v.double().cpu().numpy() for k, v in pred.items()
                                                          if k in ("forces", "H", "S")}))
    finally:
        hook.remove()
    return out


@dataclass
class LastLayerEstimate:
    """Per species, the inverse regularized feature covariance of the training atoms; see the module docstring."""

    inverse: dict  # species index -> (d, d)
    regularization: float

    @classmethod
    def fit(cls, model, graphs, regularization: float = 1e-3) -> "LastLayerEstimate":
        """From the training cells ``graphs`` (as the model's graph builder makes them); ``regularization``: λ,
        relative to the mean eigenvalue of ΦᵀΦ."""
        if regularization <= 0:
            raise ValueError(f"regularization={regularization}: must be > 0 (it keeps ΦᵀΦ invertible)")
        if not graphs:
            raise ValueError("no training cells: the last-layer estimate is fitted on the cells the model was trained on")
        feats = last_layer_features(model, graphs)
        phi = np.concatenate([f[0] for f in feats])
        species = np.concatenate([f[1] for f in feats])
        inverse = {}
        for s in np.unique(species):
            x = phi[species == s]
            gram = x.T @ x
            lam = regularization * np.trace(gram) / gram.shape[0]
            inverse[int(s)] = np.linalg.inv(gram + lam * np.eye(gram.shape[0]))
        return cls(inverse, regularization)

    def atom_variance(self, phi: np.ndarray, species: np.ndarray) -> np.ndarray:
        """σ_i² (N,) of atoms with features ``phi`` (N, d) and ``species`` (N,)."""
        var = np.zeros(len(phi))
        for s in np.unique(species):
            if int(s) not in self.inverse:
                raise ValueError(f"species index {int(s)} has no training atoms: the estimate cannot rank it. Fix: "
                                 "fit on cells that contain every element the model is used on")
            sel = species == s
            var[sel] = np.einsum("nd,de,ne->n", phi[sel], self.inverse[int(s)], phi[sel])
        return var

    def spreads(self, graph, phi: np.ndarray, species: np.ndarray) -> dict:
        """Relative spreads of one structure: ``forces`` per atom (N,), ``H`` and ``S`` per block (E,) when the
        graph has blocks."""
        from hedgenet.models.committee import FORCE_SPREAD_RADIUS_A, pooled_over_neighbours

        var = self.atom_variance(phi, species)
        out = {"forces": np.sqrt(pooled_over_neighbours(var, graph.pos.double().numpy(),
                                                         graph.cell.double().numpy().reshape(3, 3),
                                                         FORCE_SPREAD_RADIUS_A))}
        if graph.block_index is not None:
            i, j = graph.block_index.numpy()
            out["H"] = out["S"] = np.sqrt(var[i] + var[j])
        return out

    def spread_and_error(self, model, graphs) -> dict:
        """As :func:`hedgenet.training.committee.spread_and_error`, for the single model: ``{q: (spread, error)}``."""
        from hedgenet.training.committee import prediction_errors

        out: dict[str, list] = {}
        for g, (phi, species, pred) in zip(graphs, last_layer_features(model, graphs)):
            spread = self.spreads(g, phi, species)
            for q, err in prediction_errors(g, pred).items():
                out.setdefault(q, []).append((spread[q], err))
        return {q: tuple(np.concatenate(parts) for parts in zip(*v)) for q, v in out.items()}
