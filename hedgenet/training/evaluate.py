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


def evaluate(model, graphs=None, batch_size: int = 2, prefix: str = "val", predictions=None) -> tuple[dict, dict]:
    """Metrics (MAE/RMSE in meV, meV/atom, meV/Å) and parity arrays (eV, eV/Å) over ``graphs``, or over
    ``predictions`` already made (``(pred, batch)`` pairs of :func:`predict_batches`)."""
    metrics = ErrorMetrics(tuple(model.outputs), distributed=False)  # rank 0 alone, after training
    parity: dict[str, list] = {}
    if predictions is None:
        predictions = predict_batches(model, graphs, batch_size)
    shift = float(getattr(model, "hamiltonian_shift_eV", 0.0))
    for pred, batch in predictions:
        metrics.update(pred, batch, shift)
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


BAND_KPOINTS_FRAC = ((0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (1 / 3, 1 / 3, 0.0))
"""Γ, M and K of the (super)cell's hexagonal reciprocal lattice: where the band-level error is taken."""


def band_errors(model, predictions, kpoints_frac=BAND_KPOINTS_FRAC, window_eV: float = 2.0, prefix: str = "test"):
    """Band-level error of the predicted (H, S) against the reference blocks of the same graphs
    (``predictions``: ``(pred, graph)`` pairs of :func:`predict_batches` with ``batch_size=1``): MAE
    and max (meV) of the generalized eigenvalues within ``E_F ± window_eV`` (E_F of each sample, eV) at
    ``kpoints_frac`` of each cell. Both sides are folded from blocks with the same cutoff, so this is the
    model's error alone (the cutoff's own effect is measured by ``benchmarks/block_truncation.py``).
    Graphs lacking H/S labels or a Fermi level are skipped; ``{}`` when none is left."""
    from hedgenet.orbitals.bloch import band_energies, band_energy_error

    if "H" not in model.outputs:
        return {}
    errors = []
    for pred, g in predictions:
        if g.num_graphs != 1:
            raise ValueError("band_errors needs one graph per prediction: predict with batch_size=1")
        ef = g.info.get("fermi_level_eV")
        if g.H is None or g.S is None or ef is None:
            continue
        n_orb = np.array([model.layout.n_orb(int(z)) for z in g.numbers])
        ei, shift = g.block_index.numpy(), g.block_shift.numpy().round().astype(np.int64)
        ref = band_energies(g.H.double().numpy(), g.S.double().numpy(), ei, shift, n_orb, kpoints_frac)
        got = band_energies(pred["H"].double().numpy(), pred["S"].double().numpy(), ei, shift, n_orb, kpoints_frac)
        errors.append(band_energy_error(got, ref, float(ef), window_eV))
    if not errors:
        return {}
    err = 1e3 * np.concatenate(errors)
    return {f"{prefix}/bands_mae": float(err.mean()), f"{prefix}/bands_max": float(err.max()),
            f"{prefix}/bands_n": int(err.size)}


def element_block_errors(model, predictions, prefix: str = "test") -> dict:
    """H-block MAE (meV) per ordered element pair and block kind, e.g. ``test/H_C-C_inter_mae``, over
    ``(pred, batch)`` pairs of :func:`predict_batches`."""
    from ase.data import chemical_symbols

    from hedgenet.training.losses import BLOCK_KINDS

    if "H" not in model.outputs:
        return {}
    sums: dict[str, list] = {}
    for pred, batch in predictions:
        if batch.H is None:
            continue
        i, j = batch.block_index
        zi, zj = batch.numbers[i], batch.numbers[j]
        diff = (pred["H"] - batch.H).abs().double() * batch.block_mask
        for kind, code in BLOCK_KINDS.items():
            for a in torch.unique(zi).tolist():
                for b in torch.unique(zj).tolist():
                    sel = (batch.block_kind == code) & (zi == a) & (zj == b)
                    if sel.any():
                        key = f"{prefix}/H_{chemical_symbols[a]}-{chemical_symbols[b]}_{kind}_mae"
                        acc = sums.setdefault(key, [0.0, 0])
                        acc[0] += float(diff[sel].sum())
                        acc[1] += int(batch.block_mask[sel].sum())
    return {k: 1e3 * s / max(n, 1) for k, (s, n) in sums.items()}


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
