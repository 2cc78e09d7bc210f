"""torchmetrics MAE/RMSE for energy (meV/atom), forces (meV/Å), each layer's mean force per atom
(``layer_forces``, meV/Å: the interlayer force; ``layer_forces_in_plane``: its x, y components, the sliding
force), the virial per atom (``virial``, meV/atom, where labelled) and H (meV) / S blocks per block kind; for a
model with a Hamiltonian shift E (its H head predicts H − E·S) also ``H_fermi`` (meV): the error of H − E·S, the
matrix whose errors move the states near E_F.

Metrics accumulate over an epoch and are synchronised across DDP ranks by torchmetrics.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from hedgenet.training.losses import BLOCK_KINDS, layer_mean_forces


class ErrorMetrics(nn.Module):
    """MAE and RMSE of every predicted quantity, in meV (energy per atom, forces, H) or 1e-3 (S).
    ``distributed=False``: computed from this process's updates alone, also when a DDP process group exists
    (the evaluation rank 0 runs alone after training; a synchronising compute would wait for ranks that
    have finished)."""

    def __init__(self, quantities: tuple[str, ...], distributed: bool = True):
        super().__init__()
        names = []
        for q in quantities:
            if q in ("H", "S"):
                names += [f"{q}_{kind}" for kind in ("all", *BLOCK_KINDS)]
            if q == "H" and "S" in quantities:
                names.append("H_fermi_all")
            else:
                names.append(q)
            if q == "forces":
                names += ["forces_out_of_plane", "layer_forces", "layer_forces_in_plane", "virial"]
        self.names = names
        # float64 accumulators: a float32 sum loses digits that model comparisons need
        sync = {} if distributed else {"sync_on_compute": False}
        self.mae = nn.ModuleDict({n: MeanAbsoluteError(**sync).set_dtype(torch.float64) for n in names})
        self.mse = nn.ModuleDict({n: MeanSquaredError(**sync).set_dtype(torch.float64) for n in names})

    def _add(self, name: str, pred: torch.Tensor, target: torch.Tensor) -> None:
        if name in self.mae and pred.numel():
            p, t = 1e3 * pred.detach().double().flatten(), 1e3 * target.detach().double().flatten()
            self.mae[name].update(p, t)
            self.mse[name].update(p, t)

    def update(self, pred: dict, batch, hamiltonian_shift_eV: float = 0.0) -> None:
        if "energy" in pred:
            n = batch.n_atoms.to(pred["energy"].dtype)
            self._add("energy", pred["energy"] / n, batch.energy / n)
        if "forces" in pred:
            self._add("forces", pred["forces"], batch.forces)
            self._add("forces_out_of_plane", pred["forces"][:, 2], batch.forces[:, 2])
            pl, tl = layer_mean_forces(pred["forces"], batch), layer_mean_forces(batch.forces, batch)
            self._add("layer_forces", pl, tl)
            self._add("layer_forces_in_plane", pl[:, :2], tl[:, :2])
        if "virial" in pred and batch.virial is not None:
            n = batch.n_atoms.to(pred["virial"].dtype)[:, None, None]
            known = torch.isfinite(batch.virial)
            self._add("virial", (pred["virial"] / n)[known], (batch.virial / n)[known])
        for q in ("H", "S"):
            if q not in pred:
                continue
            mask = batch.block_mask
            self._add(f"{q}_all", pred[q][mask], getattr(batch, q)[mask])
            for kind, code in BLOCK_KINDS.items():
                sel = mask & (batch.block_kind == code)[:, None, None]
                self._add(f"{q}_{kind}", pred[q][sel], getattr(batch, q)[sel])
        if hamiltonian_shift_eV and "H" in pred and "S" in pred:
            mask, e = batch.block_mask, hamiltonian_shift_eV
            self._add("H_fermi_all", (pred["H"] - e * pred["S"])[mask], (batch.H - e * batch.S)[mask])

    def compute(self, prefix: str) -> dict[str, float]:
        """``{prefix}/{name}_mae`` and ``_rmse`` (units: meV, meV/atom, meV/Å; S in 1e-3)."""
        out = {}
        for n in self.names:
            if self.mae[n].total > 0:
                out[f"{prefix}/{n}_mae"] = self.mae[n].compute()
                out[f"{prefix}/{n}_rmse"] = self.mse[n].compute().sqrt()
        return out

    def reset(self) -> None:
        for m in (*self.mae.values(), *self.mse.values()):
            m.reset()
