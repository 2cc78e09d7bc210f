"""Evaluate a trained model on graphs (no Trainer): metrics, parity data and plots in physical units."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from hedgenet.graphs import collate
from hedgenet.training.metrics import ErrorMetrics


def predict_batches(model, graphs, batch_size: int = 2):
    """Yield (prediction dict, batch) over ``graphs`` with the model's dtype; forces need autograd."""
    dtype = next(model.parameters()).dtype
    model.eval()
    for k in range(0, len(graphs), batch_size):
        batch = collate(graphs[k : k + batch_size]).to(dtype=dtype)
        with torch.enable_grad():
            pred = model(batch)
        yield {key: v.detach() for key, v in pred.items()}, batch


def evaluate(model, graphs, batch_size: int = 2, prefix: str = "val") -> tuple[dict, dict]:
    """Metrics (MAE/RMSE in meV, meV/atom, meV/Å) and parity arrays (eV, eV/Å) over ``graphs``."""
    metrics = ErrorMetrics(tuple(model.outputs))
    parity: dict[str, list] = {}
    for pred, batch in predict_batches(model, graphs, batch_size):
        metrics.update(pred, batch)
        if "forces" in pred:
            parity.setdefault("forces", []).append((batch.forces.numpy().ravel(), pred["forces"].numpy().ravel()))
        if "energy" in pred:
            n = batch.n_atoms.numpy()
            parity.setdefault("energy_per_atom", []).append((batch.energy.numpy() / n, pred["energy"].numpy() / n))
        for q in ("H", "S"):
            if q in pred:
                m = batch.block_mask.numpy()
                kind = np.broadcast_to(batch.block_kind.numpy()[:, None, None], m.shape)[m]
                parity.setdefault(q, []).append((getattr(batch, q).numpy()[m], pred[q].numpy()[m], kind))
    out = {k: float(v) for k, v in metrics.compute(prefix).items()}
    arrays = {k: tuple(np.concatenate(parts) for parts in zip(*v)) for k, v in parity.items()}
    return out, arrays


def parity_plots(arrays: dict, out_dir: Path) -> list[Path]:
    """Parity plots (reference vs model) of forces (eV/Å) and H blocks (eV, coloured by block kind)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = {"forces": "eV/Å", "energy_per_atom": "eV/atom", "H": "eV", "S": ""}
    written = []
    for key, data in arrays.items():
        ref, pred = data[0], data[1]
        fig, ax = plt.subplots(figsize=(4, 4))
        if key in ("H", "S"):
            for code, (name, color) in enumerate((("on-site", "C0"), ("intra", "C1"), ("inter", "C2"))):
                sel = data[2] == code
                if sel.any():
                    mae = 1e3 * np.abs(ref[sel] - pred[sel]).mean()
                    ax.scatter(ref[sel], pred[sel], s=2, c=color, label=f"{name}: MAE {mae:.2f} m{units[key]}")
            ax.legend(fontsize=7)
        else:
            mae = np.abs(ref - pred).mean()
            ax.scatter(ref, pred, s=2, label=f"MAE {1e3 * mae:.2f} m{units[key]}")
            ax.legend(fontsize=7)
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"reference {key} ({units[key]})")
        ax.set_ylabel(f"model {key} ({units[key]})")
        fig.tight_layout()
        path = out_dir / f"parity_{key}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def learning_curves(history_file: Path, out_dir: Path) -> Path | None:
    """Plot train/val loss and validation MAEs per epoch from the JSON-lines history."""
    if not history_file.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in history_file.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for key in ("train/loss", "val/loss"):
        pts = [(r["epoch"], r[key]) for r in rows if key in r]
        if pts:
            axes[0].semilogy(*zip(*pts), label=key)
    for key in sorted({k for r in rows for k in r if k.startswith("val/") and k.endswith("_all_mae") or k in ("val/forces_mae", "val/energy_mae")}):
        pts = [(r["epoch"], r[key]) for r in rows if key in r]
        axes[1].semilogy(*zip(*pts), label=key)
    axes[0].set_xlabel("epoch"), axes[1].set_xlabel("epoch")
    axes[0].legend(fontsize=7), axes[1].legend(fontsize=7)
    axes[1].set_ylabel("MAE (meV, meV/Å, meV/atom)")
    fig.tight_layout()
    path = out_dir / "learning_curves.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
