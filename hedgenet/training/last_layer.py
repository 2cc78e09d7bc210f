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
* H and S blocks: the model's RMS error on the training cells' blocks of the same kind (on-site, intralayer,
  interlayer) and length (bins of :data:`BLOCK_BIN_A`), times √((σ_i² + σ_j²) / (2 σ̄²)) with σ̄² the training
  atoms' mean variance: block errors differ by orders of magnitude with the block's kind and length, which the
  atoms' variance alone cannot know.

These are relative numbers: a scale fitted on held-out cells (:func:`hedgenet.training.committee.calibration_statistics`)
turns them into eV/Å or eV. One forward pass per structure, so it costs a committee's 1/K; whether it ranks
errors as well is measured in docs/results_training.md (committees, calibration and active learning).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["BLOCK_BIN_A", "LastLayerEstimate", "last_layer_features"]

BLOCK_BIN_A = 0.25  # Å: width of the block-length bins of the training error table


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
    mean_variance: float  # σ̄²: mean σ_i² of the training atoms
    block_rms: dict  # "H", "S" -> (3 kinds, n bins) RMS training error per block (eV, dimensionless)

    @classmethod
    def fit(cls, model, graphs, regularization: float = 1e-3) -> "LastLayerEstimate":
        """From the training cells ``graphs`` (as the model's graph builder makes them); ``regularization``: λ,
        relative to the mean eigenvalue of ΦᵀΦ."""
        if regularization <= 0:
            raise ValueError(f"regularization={regularization}: must be > 0 (it keeps ΦᵀΦ invertible)")
        if not graphs:
            raise ValueError("no training cells: the last-layer estimate is fitted on the cells the model was trained on")
        from hedgenet.training.committee import prediction_errors

        feats = last_layer_features(model, graphs)
        phi = np.concatenate([f[0] for f in feats])
        species = np.concatenate([f[1] for f in feats])
        inverse = {}
        for s in np.unique(species):
            x = phi[species == s]
            gram = x.T @ x
            lam = regularization * np.trace(gram) / gram.shape[0]
            inverse[int(s)] = np.linalg.inv(gram + lam * np.eye(gram.shape[0]))
        # no block is longer than the model's block cutoff: one bin per BLOCK_BIN_A up to it
        n_bins = int(float(getattr(model, "block_cutoff", 0.0)) / BLOCK_BIN_A) + 1
        counts = np.zeros((3, n_bins))
        sums: dict[str, np.ndarray] = {}
        for g, (_, _, pred) in zip(graphs, feats):
            errors = {q: e for q, e in prediction_errors(g, pred).items() if q in ("H", "S")}
            if g.block_index is None or not errors:
                continue
            kind, b = _block_bins(g)
            b = np.minimum(b, n_bins - 1)
            np.add.at(counts, (kind, b), 1)
            for q, e in errors.items():
                np.add.at(sums.setdefault(q, np.zeros((3, n_bins))), (kind, b), e**2)
        with np.errstate(invalid="ignore", divide="ignore"):
            block_rms = {q: _filled(np.sqrt(v / counts)) for q, v in sums.items()}
        return cls(inverse, regularization, float(np.mean(_variance(inverse, phi, species))), block_rms)

    def atom_variance(self, phi: np.ndarray, species: np.ndarray) -> np.ndarray:
        """σ_i² (N,) of atoms with features ``phi`` (N, d) and ``species`` (N,)."""
        return _variance(self.inverse, phi, species)

    def spreads(self, graph, phi: np.ndarray, species: np.ndarray, novelty: bool = True) -> dict:
        """Spreads of one structure, to be scaled by a calibration: ``forces`` per atom (N,), ``H`` and ``S`` per
        block (E,) when the graph has blocks (``novelty=False``: the training error of the block's kind and length
        alone, without the atoms' variance)."""
        from hedgenet.models.committee import FORCE_SPREAD_RADIUS_A, pooled_over_neighbours

        var = self.atom_variance(phi, species)
        out = {"forces": np.sqrt(pooled_over_neighbours(var, graph.pos.double().numpy(),
                                                         graph.cell.double().numpy().reshape(3, 3),
                                                         FORCE_SPREAD_RADIUS_A))}
        if graph.block_index is not None:
            i, j = graph.block_index.numpy()
            factor = np.sqrt((var[i] + var[j]) / (2 * self.mean_variance)) if novelty else 1.0
            kind, b = _block_bins(graph)
            for q, table in self.block_rms.items():  # a length beyond the block cutoff: the last bin's
                out[q] = table[kind, np.minimum(b, table.shape[1] - 1)] * factor
        return out

    def spread_and_error(self, model, graphs, novelty: bool = True) -> dict:
        """As :func:`hedgenet.training.committee.spread_and_error`, for the single model: ``{q: (spread, error)}``."""
        from hedgenet.training.committee import prediction_errors

        out: dict[str, list] = {}
        for g, (phi, species, pred) in zip(graphs, last_layer_features(model, graphs)):
            spread = self.spreads(g, phi, species, novelty)
            for q, err in prediction_errors(g, pred).items():
                out.setdefault(q, []).append((spread[q], err))
        return {q: tuple(np.concatenate(parts) for parts in zip(*v)) for q, v in out.items()}


def _block_bins(graph) -> tuple[np.ndarray, np.ndarray]:
    """Kind (0 on-site, 1 intralayer, 2 interlayer) and length bin (width BLOCK_BIN_A) of every block of ``graph``."""
    i, j = graph.block_index.numpy()
    pos = graph.pos.double().numpy()
    cell = graph.cell.double().numpy().reshape(3, 3)
    length = np.linalg.norm(pos[j] + graph.block_shift.double().numpy() @ cell - pos[i], axis=1)
    return graph.block_kind.numpy().astype(int), (length / BLOCK_BIN_A).astype(int)


def _filled(table: np.ndarray) -> np.ndarray:
    """A bin without training blocks takes the largest error of its kind; a kind without any, the largest of all."""
    table = table.copy()
    top = np.nanmax(table) if np.isfinite(table).any() else 0.0
    for k in range(table.shape[0]):
        row = table[k]
        row[~np.isfinite(row)] = np.nanmax(row) if np.isfinite(row).any() else top
    return table


def _variance(inverse: dict, phi: np.ndarray, species: np.ndarray) -> np.ndarray:
    """φ_iᵀ A_s⁻¹ φ_i per atom, with A_s⁻¹ = ``inverse[species_i]``."""
    var = np.zeros(len(phi))
    for s in np.unique(species):
        if int(s) not in inverse:
            raise ValueError(f"species index {int(s)} has no training atoms: the estimate cannot rank it. Fix: "
                             "fit on cells that contain every element the model is used on")
        sel = species == s
        var[sel] = np.einsum("nd,de,ne->n", phi[sel], inverse[int(s)], phi[sel])
    return var
