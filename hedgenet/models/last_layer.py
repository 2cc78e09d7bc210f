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

These are relative numbers: a calibration on held-out cells (``calibration``: per quantity the scale s and the
held-out RMS error) turns them into eV/Å or eV. One forward pass per structure, so it costs a committee's 1/K.

This module holds what using a fitted estimate needs (the calculators apply it); fitting and calibrating it on
labelled cells is :mod:`hedgenet.training.last_layer`. ``hedgenet-train`` stores it in ``model.pt`` (``extra``,
key ``uncertainty``), where :meth:`LastLayerEstimate.from_model` finds it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["BLOCK_BIN_A", "LastLayerEstimate", "readout_features", "readout_output_layer"]

BLOCK_BIN_A = 0.25  # Å: width of the block-length bins of the training error table
STATE_KEY = "uncertainty"  # the model file's extra entry that holds a fitted estimate
METHOD = "last_layer"


def readout_output_layer(model) -> torch.nn.Linear:
    """The energy readout's last linear layer (features in, one energy per atom out); a ValueError for a model
    without one."""
    readout = getattr(model, "readout", None)
    last = readout[-1] if isinstance(readout, torch.nn.Sequential) and len(readout) else None
    if not isinstance(last, torch.nn.Linear) or last.out_features != 1:
        raise ValueError(f"{type(model).__name__} has no energy readout ending in a linear layer (readout: "
                         f"{type(readout).__name__}): the last-layer estimate needs one. Fix: use a committee "
                         "(hedgenet-train committee.size=K) for this model")
    return last


@contextlib.contextmanager
def readout_features(model):
    """Within the block, every forward pass of ``model`` appends its atoms' last hidden features φ (N, d;
    detached, on the model's device) to the yielded list."""
    captured: list = []
    hook = readout_output_layer(model).register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    try:
        yield captured
    finally:
        hook.remove()


def block_bins(graph) -> tuple[np.ndarray, np.ndarray]:
    """Kind (0 on-site, 1 intralayer, 2 interlayer) and length bin (width BLOCK_BIN_A) of every block of ``graph``."""
    i, j = graph.block_index.cpu().numpy()
    pos = graph.pos.detach().double().cpu().numpy()
    cell = graph.cell.detach().double().cpu().numpy().reshape(3, 3)
    length = np.linalg.norm(pos[j] + graph.block_shift.double().cpu().numpy() @ cell - pos[i], axis=1)
    return graph.block_kind.cpu().numpy().astype(int), (length / BLOCK_BIN_A).astype(int)


@dataclass
class LastLayerEstimate:
    """Per species, the inverse regularized feature covariance of the training atoms; see the module docstring.
    ``calibration``: ``{"forces_scale", "H_scale", "S_scale", "<q>_rms_error", "<q>_spearman", "trust_factor",
    "n_cells", "measured_on"}`` from held-out cells, or None (raw, relative spreads)."""

    inverse: dict  # species index -> (d, d)
    regularization: float
    mean_variance: float  # σ̄²: mean σ_i² of the training atoms
    block_rms: dict  # "H", "S" -> (3 kinds, n bins) RMS training error per block (eV, dimensionless)
    calibration: dict | None = field(default=None)

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

    def spreads(self, graph, phi: np.ndarray, species: np.ndarray, novelty: bool = True) -> dict:
        """Raw (relative) spreads of one structure: ``forces`` per atom (N,), ``H`` and ``S`` per block (E,) when
        the graph has blocks (``novelty=False``: the training error of the block's kind and length alone,
        without the atoms' variance). Times :meth:`scale` they are eV/Å and eV."""
        from hedgenet.models.committee import FORCE_SPREAD_RADIUS_A, pooled_over_neighbours

        var = self.atom_variance(np.asarray(phi, dtype=float), np.asarray(species))
        out = {"forces": np.sqrt(pooled_over_neighbours(var, graph.pos.detach().double().cpu().numpy(),
                                                         graph.cell.detach().double().cpu().numpy().reshape(3, 3),
                                                         FORCE_SPREAD_RADIUS_A))}
        if graph.block_index is not None:
            i, j = graph.block_index.cpu().numpy()
            factor = np.sqrt((var[i] + var[j]) / (2 * self.mean_variance)) if novelty else 1.0
            kind, b = block_bins(graph)
            for q, table in self.block_rms.items():  # a length beyond the block cutoff: the last bin's
                out[q] = table[kind, np.minimum(b, table.shape[1] - 1)] * factor
        return out

    def scale(self, quantity: str) -> float:
        """The calibration's scale of ``quantity`` (1 when uncalibrated): raw spread × scale is eV/Å or eV."""
        return float((self.calibration or {}).get(f"{quantity}_scale") or 1.0)

    def to_state(self) -> dict:
        """Plain data for a model file's ``extra`` (:data:`STATE_KEY`)."""
        return {"method": METHOD, "regularization": float(self.regularization), "mean_variance": float(self.mean_variance),
                "inverse": {str(s): np.asarray(a).tolist() for s, a in self.inverse.items()},
                "block_rms": {q: np.asarray(t).tolist() for q, t in self.block_rms.items()},
                "calibration": self.calibration}

    @classmethod
    def from_state(cls, state: dict) -> "LastLayerEstimate":
        if state.get("method") != METHOD:
            raise ValueError(f"uncertainty method {state.get('method')!r} unknown; this hedgenet reads {METHOD!r}")
        return cls({int(s): np.asarray(a, dtype=float) for s, a in state["inverse"].items()},
                   float(state["regularization"]), float(state["mean_variance"]),
                   {q: np.asarray(t, dtype=float) for q, t in state["block_rms"].items()}, state.get("calibration"))

    @classmethod
    def from_model(cls, model) -> "LastLayerEstimate | None":
        """The estimate ``hedgenet-train`` stored with ``model`` (loaded by :func:`~hedgenet.models.io.load_model`),
        or None when its file holds none (trained with ``train.uncertainty=null``, a model without a linear
        energy readout, or written before the estimate existed)."""
        state = (getattr(model, "extra", None) or {}).get(STATE_KEY)
        return None if not state else cls.from_state(state)
