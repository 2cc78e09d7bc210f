"""Fitting and calibrating the single-model uncertainty (:mod:`hedgenet.models.last_layer`) on labelled cells.

:func:`fit_last_layer` builds the estimate from the cells a model was trained on (the training atoms' feature
covariance per species, the training RMS error per block kind and length); :func:`calibrate_last_layer` fits its
scales on held-out cells (the spread that matches the RMS error, the Spearman rank correlation of spread and
error, the held-out RMS error that the trust signal compares with); :func:`spread_and_error` gives both per atom
and per block for a benchmark. ``hedgenet-train`` runs the first two after training (``train.uncertainty``) and
stores the estimate in ``model.pt``.
"""

from __future__ import annotations

import numpy as np

from hedgenet.models.last_layer import BLOCK_BIN_A, LastLayerEstimate, block_bins, readout_features

__all__ = ["calibrate_last_layer", "fit_last_layer", "fit_uncertainty", "last_layer_features", "spread_and_error"]


def last_layer_features(model, graphs) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """Per graph: the readout's last hidden features φ (N, d) float64, the species index (N,) and the model's
    prediction dict (numpy, float64: forces, H, S as the model predicts them)."""
    from hedgenet.training.committee import numpy_prediction
    from hedgenet.training.evaluate import predict_batches

    out = []
    with readout_features(model) as captured:
        for pred, batch in predict_batches(model, graphs, batch_size=1):
            phi = captured.pop().double().cpu().numpy()
            captured.clear()
            out.append((phi, batch.species.cpu().numpy(), numpy_prediction(pred)))
    return out


def fit_last_layer(model, graphs, regularization: float = 1e-3) -> LastLayerEstimate:
    """The estimate of ``model`` from its training cells ``graphs`` (as the model's graph builder makes them);
    ``regularization``: λ, relative to the mean eigenvalue of ΦᵀΦ. Uncalibrated."""
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
    # no block is longer than the model's block cutoff: one bin per BLOCK_BIN_A up to it (a forces-only model
    # has no blocks and no cutoff)
    n_bins = int(float(getattr(model, "block_cutoff", None) or 0.0) / BLOCK_BIN_A) + 1
    counts = np.zeros((3, n_bins))
    sums: dict[str, np.ndarray] = {}
    for g, (_, _, pred) in zip(graphs, feats):
        errors = {q: e for q, e in prediction_errors(g, pred).items() if q in ("H", "S")}
        if g.block_index is None or not errors:
            continue
        kind, b = block_bins(g)
        b = np.minimum(b, n_bins - 1)
        np.add.at(counts, (kind, b), 1)
        for q, e in errors.items():
            np.add.at(sums.setdefault(q, np.zeros((3, n_bins))), (kind, b), e**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        block_rms = {q: _filled(np.sqrt(v / counts)) for q, v in sums.items()}
    estimate = LastLayerEstimate(inverse, regularization, 0.0, block_rms)
    estimate.mean_variance = float(np.mean(estimate.atom_variance(phi, species)))
    return estimate


def spread_and_error(estimate: LastLayerEstimate, model, graphs, novelty: bool = True) -> dict:
    """As :func:`hedgenet.training.committee.spread_and_error`, for one model and its estimate: per quantity
    (``forces`` per atom, ``H``, ``S`` per block) the raw spread and the model's error against the graphs'
    labels, concatenated over the graphs: ``{q: (spread, error)}``."""
    from hedgenet.training.committee import prediction_errors

    out: dict[str, list] = {}
    for g, (phi, species, pred) in zip(graphs, last_layer_features(model, graphs)):
        spread = estimate.spreads(g, phi, species, novelty)
        for q, err in prediction_errors(g, pred).items():
            out.setdefault(q, []).append((spread[q], err))
    return {q: tuple(np.concatenate(parts) for parts in zip(*v)) for q, v in out.items()}


def calibrate_last_layer(estimate: LastLayerEstimate, model, graphs, label: str = "held-out",
                         trust_factor: float = 2.0, n_bins: int = 8) -> dict:
    """Calibrate ``estimate`` on held-out labelled ``graphs`` (cells the model was not trained on): sets
    ``estimate.calibration`` (per quantity the scale s, Spearman ρ and held-out RMS error; ``trust_factor``;
    the force pooling radius) and returns the full statistics per quantity
    (:func:`~hedgenet.training.committee.calibration_statistics`, reliability curve included)."""
    from hedgenet.models.committee import FORCE_SPREAD_RADIUS_A
    from hedgenet.training.committee import calibration_statistics

    if not graphs:
        raise ValueError("no held-out cells to calibrate on. Fix: give labelled cells the model was not trained on "
                         "(data.val_fraction > 0)")
    result = {q: calibration_statistics(s, e, n_bins) for q, (s, e) in spread_and_error(estimate, model, graphs).items()}
    calibration: dict = {"method": "last_layer", "measured_on": label, "n_cells": len(graphs),
                         "trust_factor": float(trust_factor), "forces_spread_radius_A": FORCE_SPREAD_RADIUS_A}
    for q, r in result.items():
        calibration.update({f"{q}_scale": r["scale"], f"{q}_spearman": r["spearman"], f"{q}_rms_error": r["rms_error"]})
    estimate.calibration = calibration
    return result


def fit_uncertainty(settings, model, train_graphs, val_graphs, test_graphs, run_dir=None) -> tuple[dict | None, dict]:
    """``hedgenet-train``'s estimate (``train.uncertainty``): fitted on the training cells, calibrated on the
    validation cells (their reliability plot in ``run_dir/reliability.png``), its Spearman correlations measured
    on the test cells. Returns the state to store in ``model.pt`` (None: no estimate) and the metrics
    (``val/uncertainty_<q>_spearman``, ``test/uncertainty_<q>_spearman``, ``uncertainty``: the method or why
    there is none)."""
    from hedgenet.config import ConfigError
    from hedgenet.models.last_layer import METHOD, readout_output_layer
    from hedgenet.training.committee import calibration_statistics

    method = settings.method if settings is not None else None
    if method is None:
        return None, {"uncertainty": "none (train.uncertainty.method=null)"}
    if method != METHOD:
        raise ConfigError(f"train.uncertainty.method={method!r} unknown; valid: {METHOD}, null")
    if not float(settings.trust_factor) > 0:
        raise ConfigError(f"train.uncertainty.trust_factor={settings.trust_factor} must be > 0 (e.g. 2)")
    try:
        readout_output_layer(model)
    except ValueError as err:  # a model family without a linear energy readout: a committee gives its spread
        return None, {"uncertainty": f"none ({err})"}
    estimate = fit_last_layer(model, train_graphs)
    metrics: dict = {"uncertainty": METHOD}
    if val_graphs:
        result = calibrate_last_layer(estimate, model, val_graphs, "validation", float(settings.trust_factor))
        metrics.update({f"val/uncertainty_{q}_spearman": r["spearman"] for q, r in result.items()})
        if run_dir is not None:
            from pathlib import Path

            from hedgenet.training.committee import reliability_plot

            reliability_plot(result, Path(run_dir) / "reliability.png",
                             f"last-layer estimate on {len(val_graphs)} validation cells")
    if test_graphs:
        for q, (spread, error) in spread_and_error(estimate, model, test_graphs).items():
            metrics[f"test/uncertainty_{q}_spearman"] = calibration_statistics(spread, error)["spearman"]
    return estimate.to_state(), metrics


def _filled(table: np.ndarray) -> np.ndarray:
    """A bin without training blocks takes the largest error of its kind; a kind without any, the largest of all."""
    table = table.copy()
    top = np.nanmax(table) if np.isfinite(table).any() else 0.0
    for k in range(table.shape[0]):
        row = table[k]
        row[~np.isfinite(row)] = np.nanmax(row) if np.isfinite(row).any() else top
    return table
