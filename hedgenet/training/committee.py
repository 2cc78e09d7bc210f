"""Committees of models: training K members in one command and calibrating their spread on held-out cells.

``hedgenet-train committee.size=K`` trains K members one after another in the same process, each a complete
training run (its own seed ``seed + k``, optionally its own bootstrap resample of the training split) in
``<run dir>/members/<k>/`` (model.pt, metrics.json, checkpoints, ...), with the run's trainer, logger and
callbacks: whatever trains one model trains a member. It then writes ``<run dir>/committee.json`` and, on the
held-out cells of the run (``data.test_paths``, else the test split, else the validation split), the calibration
(:func:`calibrate_committee`). A rerun in the same run directory keeps the finished members (model.pt present),
resumes an interrupted one from its ``checkpoints/last.ckpt`` and trains the missing ones.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from hedgenet.config import ConfigError

MEMBER_KEYS = ("task", "seed", "model", "relations", "data", "train", "material", "reference")
"""The config sections a finished member must share with the command that reuses it."""


def check_committee_config(cfg: DictConfig) -> int | None:
    """The committee size (None: a single model); ConfigError naming the fix for a size below 2 or a
    ``train.resume`` (a committee resumes its members itself)."""
    section = cfg.get("committee") or {}
    size = section.get("size")
    if size is None:
        if section.get("bootstrap"):
            raise ConfigError("committee.bootstrap=true needs a committee. Fix: add committee.size=K (K ≥ 2)")
        return None
    if int(size) < 2:
        raise ConfigError(f"committee.size={size}: a committee needs at least 2 members (the spread of one model is "
                          "undefined). Fix: committee.size=4 (or leave committee.size unset for a single model)")
    if cfg.train.resume not in (None, "auto"):
        raise ConfigError("train.resume is set together with committee.size: a committee resumes by itself. Fix: drop "
                          "train.resume and rerun the same command with the same hydra.run.dir (finished members are "
                          "kept, an interrupted one continues from its last checkpoint)")
    return int(size)


def member_config(cfg: DictConfig, k: int, member_dir: Path) -> DictConfig:
    """Member ``k``'s config, resolved: the command's, seed ``seed + k``, no committee, and
    ``paths.output_dir`` its own directory (checkpoints, history, logs go there)."""
    member = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    member.paths.output_dir = str(member_dir)
    OmegaConf.resolve(member)
    member.seed = int(cfg.seed) + k
    member.committee.size = None
    member.committee.bootstrap = False
    return member


def _fingerprint(cfg: DictConfig) -> dict:
    out = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
           for k in MEMBER_KEYS if k in cfg}
    out.get("train", {}).pop("resume", None)
    out.get("train", {}).pop("max_epochs", None)  # more epochs on a rerun: finished members are kept
    return out


def train_committee(cfg: DictConfig, run_dir: Path, extra_callbacks: list, train_one) -> dict:
    """Train (or keep) the members, write committee.json and calibrate on the held-out cells; returns the
    committee's metrics (per member, their mean, the calibration). ``train_one(cfg, run_dir, callbacks,
    bootstrap_seed)`` is one training run (:func:`hedgenet.training.run._run_train`)."""
    from hedgenet.models.committee import COMMITTEE_FILE, write_committee

    size = check_committee_config(cfg)
    bootstrap = bool(cfg.committee.bootstrap)
    members, member_metrics, trained = [], [], []
    t0 = time.perf_counter()
    for k in range(size):
        mdir = run_dir / "members" / str(k)
        mdir.mkdir(parents=True, exist_ok=True)
        mcfg = member_config(cfg, k, mdir)
        fingerprint = _fingerprint(mcfg) | {"bootstrap": bootstrap}
        stamp = mdir / "member.json"
        if stamp.exists():
            old = json.loads(stamp.read_text())
            if old != json.loads(json.dumps(fingerprint)):
                changed = sorted(key for key in set(old) | set(fingerprint)
                                 if old.get(key) != json.loads(json.dumps(fingerprint.get(key))))
                raise ConfigError(f"member {k} in {mdir} was trained with another config (differs in {changed}). "
                                  "Fix: train this committee in a new run directory (another hydra.run.dir), or "
                                  f"delete {mdir} to retrain that member")
        if (mdir / "model.pt").exists() and (mdir / "metrics.json").exists():
            print(f"committee member {k}/{size}: finished before ({mdir / 'model.pt'}), kept", file=sys.stderr)
            member_metrics.append(json.loads((mdir / "metrics.json").read_text()))
        else:
            stamp.write_text(json.dumps(fingerprint, indent=1))
            mcfg.train.resume = "auto"
            if (mdir / "checkpoints" / "last.ckpt").exists():
                print(f"committee member {k}/{size}: resuming from {mdir / 'checkpoints' / 'last.ckpt'}", file=sys.stderr)
            else:
                print(f"committee member {k}/{size}: training (seed {mcfg.seed}"
                      f"{', bootstrap resample' if bootstrap else ''})", file=sys.stderr)
            (mdir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(mcfg))
            metrics = train_one(mcfg, mdir, list(extra_callbacks), int(mcfg.seed) if bootstrap else None)
            if not metrics:  # a DDP rank other than 0: rank 0 writes the files
                continue
            member_metrics.append(metrics)
            trained.append(k)
        members.append(mdir / "model.pt")
    if len(member_metrics) < size:
        return {}
    path = write_committee(run_dir / COMMITTEE_FILE, members,
                           {"seeds": [int(cfg.seed) + k for k in range(size)], "bootstrap": bootstrap})
    out = {"committee_size": size, "members_trained": trained, "committee_train_time_s": time.perf_counter() - t0,
           "committee_file": str(path)}
    for key in sorted({k for m in member_metrics for k in m}):
        values = [m.get(key) for m in member_metrics]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[f"members_mean/{key}"] = float(np.mean(values))
    out["train_time_s"] = float(sum(m.get("train_time_s", 0.0) for m in member_metrics))
    held_out, label = held_out_samples(cfg)
    if held_out:
        result = calibrate_committee(path, held_out, run_dir, label=label)
        out.update({f"calibration/{k}": v for k, v in flatten(result).items()})
    return out


def held_out_samples(cfg: DictConfig) -> tuple[list, str]:
    """The cells a committee is calibrated on after training: ``data.test_paths``, else the test split, else the
    validation split (used by the members only for the learning-rate schedule and checkpoints)."""
    from hedgenet.training.data import load_samples, split_indices

    test_paths = list(cfg.data.get("test_paths") or [])
    if test_paths:
        return load_samples(test_paths)[0], "test_paths"
    samples = load_samples(list(cfg.data.paths))[0]
    split = split_indices(len(samples), cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed)
    name = "test" if len(split["test"]) else "val"
    return [samples[i] for i in split[name]], f"{name} split"


def flatten(result: dict) -> dict:
    out = {}
    for q, v in result.items():
        if isinstance(v, dict):
            out.update({f"{q}_{k}": x for k, x in v.items() if not isinstance(x, (list, dict))})
        elif not isinstance(v, (list, dict)):
            out[q] = v
    return out


def numpy_prediction(pred: dict) -> dict:
    """A model's prediction dict as numpy float64 arrays of the quantities the errors are measured on (forces, H, S)."""
    return {k: v.double().cpu().numpy() for k, v in pred.items() if k in ("forces", "H", "S")}


def member_predictions(models, graphs) -> list[list[dict]]:
    """Per graph, per member: the prediction dict (numpy, float64) of forces, H, S where the members predict them."""
    from hedgenet.training.evaluate import predict_batches

    per_member = []
    for model in models:
        preds = []
        for pred, _ in predict_batches(model, graphs, batch_size=1):
            preds.append(numpy_prediction(pred))
        per_member.append(preds)
    return [list(p) for p in zip(*per_member)]


def prediction_errors(graph, pred: dict) -> dict:
    """Error of one prediction (numpy, float64) against ``graph``'s labels: ``forces`` per atom (norm, eV/Å),
    ``H`` (eV) and ``S`` per block (Frobenius norm over the block's valid orbital entries)."""
    out = {}
    if "forces" in pred and graph.forces is not None:
        out["forces"] = np.linalg.norm(pred["forces"] - graph.forces.double().numpy(), axis=-1)
    mask = graph.block_mask.numpy().astype(bool) if graph.block_mask is not None else None
    for q in ("H", "S"):
        ref = getattr(graph, q, None)
        if q in pred and ref is not None:
            out[q] = np.sqrt((((pred[q] - ref.double().numpy()) * mask) ** 2).sum(axis=(-2, -1)))
    return out


def spread_and_error(models, graphs) -> dict:
    """Per quantity (``forces`` per atom in eV/Å, ``H`` per block in eV, ``S`` per block): the committee's spread
    and the error of its mean against the graphs' labels, concatenated over the graphs: ``{q: (spread, error)}``."""
    from hedgenet.models.committee import FORCE_SPREAD_RADIUS_A, block_statistics, force_statistics

    out: dict[str, list] = {}
    for g, preds in zip(graphs, member_predictions(models, graphs)):
        mean, spread = {}, {}
        if "forces" in preds[0]:
            mean["forces"], spread["forces"] = force_statistics(
                np.stack([p["forces"] for p in preds]), g.pos.double().numpy(), g.cell.double().numpy().reshape(3, 3),
                FORCE_SPREAD_RADIUS_A)
        mask = g.block_mask.numpy().astype(bool) if g.block_mask is not None else None
        for q in ("H", "S"):
            if q in preds[0]:
                mean[q], spread[q] = block_statistics(np.stack([p[q] for p in preds]), mask)
        for q, err in prediction_errors(g, mean).items():
            out.setdefault(q, []).append((spread[q], err))
    return {q: tuple(np.concatenate(parts) for parts in zip(*v)) for q, v in out.items()}


def calibration_statistics(spread, error, n_bins: int = 8) -> dict:
    """Spearman rank correlation of ``spread`` with ``error``, the scale ``s = sqrt(mean(err²)/mean(spread²))``
    (None when every spread is 0), RMS error and spread, and the reliability curve: the entries sorted by
    spread into ``n_bins`` equal-count bins, each bin's RMS spread and RMS error."""
    from scipy.stats import spearmanr

    spread, error = np.asarray(spread, float), np.asarray(error, float)
    ms, me = float(np.mean(spread**2)), float(np.mean(error**2))
    rho = float(spearmanr(spread, error).statistic) if spread.size > 2 and np.ptp(spread) > 0 else float("nan")
    order = np.argsort(spread)
    bins = [b for b in np.array_split(order, min(n_bins, spread.size)) if b.size]
    return {
        "spearman": rho if math.isfinite(rho) else None,
        "scale": math.sqrt(me / ms) if ms > 0 else None,
        "rms_error": math.sqrt(me), "rms_spread": math.sqrt(ms), "n": int(spread.size),
        "bin_rms_spread": [float(np.sqrt(np.mean(spread[b] ** 2))) for b in bins],
        "bin_rms_error": [float(np.sqrt(np.mean(error[b] ** 2))) for b in bins],
    }


UNITS = {"forces": "eV/Å (per atom)", "H": "eV (per block)", "S": "(per block)"}


def reliability_plot(result: dict, path: Path, title: str = "") -> Path:
    """Binned RMS predicted spread (raw and calibrated) against RMS actual error per quantity, with the
    diagonal (a calibrated committee lies on it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qs = [q for q in ("forces", "H", "S") if q in result]
    fig, axes = plt.subplots(1, len(qs), figsize=(4 * len(qs), 3.8), squeeze=False)
    for ax, q in zip(axes[0], qs):
        r = result[q]
        x, y = np.array(r["bin_rms_spread"]), np.array(r["bin_rms_error"])
        ax.plot(x, y, "o-", label=f"raw (Spearman {r['spearman'] if r['spearman'] is None else round(r['spearman'], 3)})")
        if r["scale"] is not None:
            ax.plot(r["scale"] * x, y, "s--", label=f"calibrated (s = {r['scale']:.3g})")
        hi = max(float(np.max(y, initial=0)), float(np.max(x * (r["scale"] or 1), initial=0)), 1e-12) * 1.1
        ax.plot([0, hi], [0, hi], "k:", lw=0.8)
        ax.set_xlabel(f"predicted spread {UNITS[q]}")
        ax.set_ylabel(f"RMS error {UNITS[q]}")
        ax.set_title(f"{q} ({r['n']})", fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def calibrate_committee(committee, samples, out_dir: Path | None = None, label: str = "held-out",
                        store: bool = True, n_bins: int = 8, trust_factor: float = 2.0) -> dict:
    """Calibrate the committee at ``committee`` (its run directory or committee.json) on held-out labelled
    ``samples`` (dicts of :func:`hedgenet.training.data.load_samples`): per quantity (forces per atom, H and S per
    block) the Spearman correlation of spread and error, the scale s and the reliability curve
    (:func:`calibration_statistics`); the plot ``reliability.png`` in ``out_dir`` (default: the committee's folder)
    and, with ``store``, the scales in the committee file (``calibration``: ``forces_scale``, ``H_scale``,
    ``S_scale``, which :class:`~hedgenet.calculators.CommitteeCalculator` applies)."""
    from hedgenet.models.committee import FORCE_SPREAD_RADIUS_A, read_committee, update_calibration
    from hedgenet.models.io import load_model

    info = read_committee(committee)
    if not samples:
        raise ValueError("no held-out cells to calibrate on. Fix: give a labelled dataset the members were not trained on")
    models = [load_model(p) for p in info["member_paths"]]
    builder = models[0].graph_builder()
    graphs = [builder(s) for s in samples]
    result = {q: calibration_statistics(s, e, n_bins) for q, (s, e) in spread_and_error(models, graphs).items()}
    out_dir = Path(out_dir) if out_dir is not None else info["path"].parent
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = reliability_plot(result, out_dir / "reliability.png",
                            f"committee of {len(models)} on {len(graphs)} {label} cells")
    result.update(n_cells=len(graphs), measured_on=label, plot=str(plot))
    (out_dir / "calibration.json").write_text(json.dumps(result, indent=1))
    if store:
        calibration = {f"{q}_scale": result[q]["scale"] for q in ("forces", "H", "S") if q in result}
        calibration.update({f"{q}_spearman": result[q]["spearman"] for q in ("forces", "H", "S") if q in result})
        # the held-out RMS error (over all atoms or blocks of the held-out cells): a physics run whose calibrated
        # spread exceeds trust_factor times it is warned about (CommitteeCalculator.trust)
        calibration.update({f"{q}_rms_error": result[q]["rms_error"] for q in ("forces", "H", "S") if q in result})
        calibration["trust_factor"] = trust_factor
        calibration.update(measured_on=label, n_cells=len(graphs))
        if "forces" in result:
            calibration["forces_spread_radius_A"] = FORCE_SPREAD_RADIUS_A
        update_calibration(info["path"], calibration)
    return result
