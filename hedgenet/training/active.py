"""Active learning: how unsure a committee (or one model with its own estimate) is of each candidate
configuration, which candidates a round labels, and the record of the rounds.

``hedgenet-active`` (:mod:`hedgenet.cli.active`) runs the loop: a committee (``hedgenet-train committee.size=K``)
trained on the labelled cells so far scores every unlabelled candidate of a pool (the configurations the physics
will visit: thermal samples at the target temperatures, rigid-layer moves, rattles), the ``batch_size`` most
uncertain ones (``stratified``: the most uncertain of each kind of candidate, the batch shared among the kinds as
the pool is; or random ones, the baseline) are labelled by the reference, and the next round retrains.

Uncertainty of a candidate (:func:`candidate_spreads`; the members' spreads of :mod:`hedgenet.models.committee`,
times the committee's calibrated scales when it has them, so they estimate the RMS error; or, for a single
model, :func:`model_spreads`: its last-layer estimate of :mod:`hedgenet.models.last_layer`, calibrated on the
validation cells by ``hedgenet-train`` — one forward pass per candidate instead of one per member):

- ``force_spread_eV_A``: the mean over atoms of the per-atom force spread (eV/Å);
- ``force_spread_max_eV_A``: the largest per-atom force spread (eV/Å);
- ``H_spread_eV``: the mean over orbital blocks of the per-block H spread (eV).

- ``force_rms_eV_A``: the RMS over atoms of the committee's mean force (eV/Å), for the relative score.

The score a round ranks by (``active.score``): ``forces`` (the mean force spread), ``H`` (the mean H spread),
``both`` (each divided by its mean over the pool, then added: the two count equally whatever their units) or
``relative`` (the mean force spread over the RMS force: the absolute spreads grow with the forces and so favour
the most displaced cells; the relative one weighs nearly undisplaced cells, e.g. rigid-layer shifts, alike) or
``phonons`` (one model only: not a score per candidate but a greedy batch, the candidates whose forces would most
shrink the uncertainty of the model's force constants on the relaxed cell; :mod:`hedgenet.training.phonon_aware`).

The ``oracle`` strategy ranks by the round's actual errors instead (:func:`candidate_errors`, :func:`error_score`:
the same ``forces``, ``H`` or ``both`` combination of the mean per-atom force error and the mean per-block H error),
which needs every candidate labelled beforehand (``active.labels_from``): not a way to save reference calls but
the benchmark's bound on them — what ranking by a perfect per-candidate uncertainty would pick from this pool.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SCORES = ("forces", "H", "both", "relative", "phonons")
STRATEGIES = ("uncertainty", "stratified", "random", "oracle")
ORACLE_SCORES = ("forces", "H", "both")


def candidate_spreads(committee, structures, calibrated: bool = True) -> dict[str, np.ndarray]:
    """The committee's spread on each of ``structures`` (ASE Atoms): ``{"force_spread_eV_A": (C,),
    "force_spread_max_eV_A": (C,), "H_spread_eV": (C,)}`` (the keys of the quantities its members predict),
    calibrated by the scales in the committee file when it has them and ``calibrated``."""
    from hedgenet.models.committee import (
        block_statistics,
        force_statistics,
        read_committee,
    )
    from hedgenet.models.io import load_model
    from hedgenet.training.committee import member_predictions

    info = read_committee(committee)
    cal = (info.get("calibration") or {}) if calibrated else {}
    scale = {q: float(cal.get(f"{q}_scale") or 1.0) for q in ("forces", "H")}
    radius = float(cal.get("forces_spread_radius_A") or 0.0)  # the force spread as it was calibrated
    models = [load_model(p) for p in info["member_paths"]]
    builder = models[0].graph_builder()
    out: dict[str, list] = {}
    for atoms in structures:
        graph = builder.from_atoms(atoms)
        (preds,) = member_predictions(models, [graph])
        if "forces" in preds[0]:
            mean, std = force_statistics(np.stack([p["forces"] for p in preds]), atoms.positions, atoms.cell.array,
                                         radius)
            std = scale["forces"] * std
            out.setdefault("force_rms_eV_A", []).append(float(np.sqrt(np.mean(np.sum(mean**2, axis=-1)))))
            out.setdefault("force_spread_eV_A", []).append(float(std.mean()))
            out.setdefault("force_spread_max_eV_A", []).append(float(std.max()))
        if "H" in preds[0]:
            _, std = block_statistics(np.stack([p["H"] for p in preds]), graph.block_mask.numpy().astype(bool))
            out.setdefault("H_spread_eV", []).append(float(scale["H"] * std.mean()))
    return {k: np.asarray(v) for k, v in out.items()}


def model_spreads(model_path, structures, calibrated: bool = True) -> dict[str, np.ndarray]:
    """:func:`candidate_spreads` of one model (a ``model.pt`` of ``hedgenet-train``) from its own last-layer
    estimate: the same keys, the estimate's calibrated scales applied when ``calibrated``; a ValueError naming the
    fix for a model file without an estimate."""
    from hedgenet.models.io import load_model
    from hedgenet.models.last_layer import LastLayerEstimate, readout_features

    model = load_model(model_path)
    estimate = LastLayerEstimate.from_model(model)
    if estimate is None:
        raise ValueError(f"{model_path} holds no uncertainty estimate (trained with train.uncertainty.method=null, or "
                         "a family without a linear energy readout such as the MACE baseline), so one model cannot "
                         "rank candidates. Fix: train.uncertainty.method=last_layer with a HedgeNet or DeepH-E3 "
                         "model, or active.committee_size=3")
    builder = model.graph_builder()
    scale = estimate.scale if calibrated else (lambda quantity: 1.0)
    out: dict[str, list] = {}
    for atoms in structures:
        graph = builder.from_atoms(atoms)
        with readout_features(model) as captured:
            pred = model(graph)
        raw = estimate.spreads(graph, captured[-1].double().cpu().numpy(), graph.species.cpu().numpy())
        if "forces" in pred:
            forces = pred["forces"].detach().double().cpu().numpy()
            std = scale("forces") * raw["forces"]
            out.setdefault("force_rms_eV_A", []).append(float(np.sqrt(np.mean(np.sum(forces**2, axis=-1)))))
            out.setdefault("force_spread_eV_A", []).append(float(std.mean()))
            out.setdefault("force_spread_max_eV_A", []).append(float(std.max()))
        if "H" in raw:
            out.setdefault("H_spread_eV", []).append(float(scale("H") * raw["H"].mean()))
    return {k: np.asarray(v) for k, v in out.items()}


def uncertainty_score(spreads: dict[str, np.ndarray], score: str) -> np.ndarray:
    """The ranking score per candidate (module docstring); ValueError naming the fix when the committee does
    not predict what ``score`` needs."""
    if score not in SCORES:
        raise ValueError(f"active.score={score!r} unknown; valid: {list(SCORES)}")
    if score == "phonons":
        raise ValueError("active.score=phonons picks a batch greedily (hedgenet.training.phonon_aware), not by a "
                         "score per candidate")
    need = {"forces": ["force_spread_eV_A"], "H": ["H_spread_eV"], "both": ["force_spread_eV_A", "H_spread_eV"],
            "relative": ["force_spread_eV_A", "force_rms_eV_A"]}[score]
    missing = [k for k in need if k not in spreads]
    if missing:
        raise ValueError(f"active.score={score} needs {missing}, which this committee does not predict (task?). Fix: "
                         "active.score=forces for task=forces, active.score=H for task=hamiltonian, or train "
                         "with task=joint")
    if score == "relative":
        return spreads["force_spread_eV_A"] / np.maximum(spreads["force_rms_eV_A"], 1e-12)
    return _combined(spreads, need)


def _combined(values: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    """One quantity as it is, or several each divided by its mean over the pool and added (equal weight
    whatever their units)."""
    if len(keys) == 1:
        return values[keys[0]]
    return np.sum([values[k] / max(float(np.mean(values[k])), 1e-300) for k in keys], axis=0)


def candidate_errors(result_path, samples) -> dict[str, np.ndarray]:
    """The actual error, per labelled sample (dicts of :meth:`~hedgenet.data.store.DatasetStore.read_sample`), of
    a round's result — one ``model.pt``, or the members' mean of a ``committee.json`` —: ``force_error_eV_A``,
    the mean over atoms of the force error's norm (eV/Å), and ``H_error_eV``, the mean over orbital blocks of the
    error's Frobenius norm (eV), where the model predicts them."""
    from hedgenet.models.committee import read_committee
    from hedgenet.models.io import load_model
    from hedgenet.training.committee import member_predictions, prediction_errors

    path = Path(result_path)
    paths = read_committee(path)["member_paths"] if path.suffix == ".json" else [path]
    models = [load_model(p) for p in paths]
    builder = models[0].graph_builder()
    out: dict[str, list] = {}
    for sample in samples:
        graph = builder(sample)
        (preds,) = member_predictions(models, [graph])
        mean = {q: np.mean([p[q] for p in preds], axis=0) for q in preds[0]}
        errors = prediction_errors(graph, mean)
        if "forces" in errors:
            out.setdefault("force_error_eV_A", []).append(float(errors["forces"].mean()))
        if "H" in errors:
            out.setdefault("H_error_eV", []).append(float(errors["H"].mean()))
    return {k: np.asarray(v) for k, v in out.items()}


def error_score(errors: dict[str, np.ndarray], score: str) -> np.ndarray:
    """The ``oracle`` ranking score per candidate from :func:`candidate_errors`, combined as ``score`` combines
    the spreads (``forces``, ``H`` or ``both``); ValueError naming the fix otherwise."""
    if score not in ORACLE_SCORES:
        raise ValueError(f"active.strategy=oracle ranks by actual errors with active.score in {list(ORACLE_SCORES)}, "
                         f"not {score!r}. Fix: active.score=both")
    need = {"forces": ["force_error_eV_A"], "H": ["H_error_eV"], "both": ["force_error_eV_A", "H_error_eV"]}[score]
    missing = [k for k in need if k not in errors]
    if missing:
        raise ValueError(f"active.score={score} needs {missing}, which this model does not predict. Fix: "
                         "active.score=forces or H, or train with task=joint")
    return _combined(errors, need)


def kind_quotas(kinds, n: int) -> dict[str, int]:
    """How many of ``n`` picks each candidate kind gets under ``stratified``: in proportion to its share of the
    candidates (largest remainder; ties by kind name), never more than it has."""
    names, counts = np.unique(np.asarray(kinds, dtype=str), return_counts=True)
    n = min(int(n), int(counts.sum()))
    exact = n * counts / counts.sum()
    quota = np.floor(exact).astype(int)
    for i in sorted(range(len(names)), key=lambda i: (-(exact[i] - quota[i]), names[i]))[: n - int(quota.sum())]:
        quota[i] += 1
    return {str(k): int(q) for k, q in zip(names, quota) if q}


def pick(ids, scores, n: int, strategy: str, seed: int, kinds=None) -> list[int]:
    """The ``n`` candidate ids to label: the highest ``scores`` (``uncertainty``; ties by id), the highest within
    each candidate kind (``stratified``: rattle, thermal, rigid, strain, ...; ``kinds[i]`` is the kind of
    ``ids[i]``) with the batch shared among the kinds as the candidates are (:func:`kind_quotas`) — the random
    baseline's mix of configurations, each kind's most uncertain first; or ``n`` drawn uniformly without
    replacement with a generator seeded by ``seed`` (``random``). ``oracle`` takes the highest ``scores`` as
    ``uncertainty`` does (its scores are actual errors, :func:`error_score`)."""
    ids = np.asarray(ids, dtype=int)
    n = min(int(n), len(ids))
    if strategy in ("uncertainty", "oracle"):
        order = np.lexsort((ids, -np.asarray(scores, dtype=float)))
        return sorted(int(i) for i in ids[order[:n]])
    if strategy == "stratified":
        if kinds is None or len(kinds) != len(ids):
            raise ValueError("active.strategy=stratified needs the kind of every candidate")
        kinds = np.asarray(kinds, dtype=str)
        scores = np.asarray(scores, dtype=float)
        out: list[int] = []
        for kind, quota in kind_quotas(kinds, n).items():
            mine = kinds == kind
            out += pick(ids[mine], scores[mine], quota, "uncertainty", seed)
        return sorted(out)
    if strategy == "random":
        return sorted(int(i) for i in np.random.default_rng(seed).choice(ids, size=n, replace=False))
    raise ValueError(f"active.strategy={strategy!r} unknown; valid: {list(STRATEGIES)}")


# --- the record of the rounds -----------------------------------------------------------------------------------

ROUNDS_FILE = "rounds.jsonl"

COLUMNS = (
    ("round", "round"), ("n_labelled", "labelled cells (seed + picked)"), ("n_picked_total", "picked so far"),
    ("val_forces_mae_meV_A", "val force MAE (meV/Å)"), ("test_forces_mae_meV_A", "test force MAE (meV/Å)"),
    ("test_H_mae_meV", "test H MAE (meV)"), ("spearman_forces", "Spearman forces"), ("spearman_H", "Spearman H"),
    ("pool_force_spread_mean_meV_A", "pool force spread mean (meV/Å)"),
    ("pool_force_spread_max_meV_A", "pool force spread max (meV/Å)"), ("pool_H_spread_mean_meV", "pool H spread mean (meV)"),
    ("pool_spearman_forces", "pool Spearman forces (oracle)"), ("pool_spearman_H", "pool Spearman H (oracle)"),
    ("picked", "picked ids"), ("picked_kinds", "picked kinds"), ("train_s", "train (s)"), ("label_s", "label (s)"),
    ("stop", "stop"),
)


def read_rounds(run_dir: Path) -> list[dict]:
    """The finished rounds recorded in ``<run_dir>/rounds.jsonl`` (a line per round, written when it ended)."""
    path = Path(run_dir) / ROUNDS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill mid-write: that round reruns
                break
    return rows


def append_round(run_dir: Path, row: dict) -> None:
    """Record a finished round (one JSON line, flushed and synced before the next round starts)."""
    import os

    with open(Path(run_dir) / ROUNDS_FILE, "a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def round_row(r: int, n_seed: int, picked_before: int, metrics: dict, spreads: dict) -> dict:
    """A round's numbers: its committee's errors (means over members, meV; a single model's own) and calibration,
    and the pool's spreads (meV) before the round picks."""
    def get(*keys):
        for k in keys:
            v = metrics.get(k)
            if isinstance(v, (int, float)):
                return float(v)
        return None

    row = {"round": r, "n_labelled": n_seed + picked_before, "n_picked_total": picked_before,
           "val_forces_mae_meV_A": get("members_mean/val/forces_mae", "val/forces_mae"),
           "test_forces_mae_meV_A": get("members_mean/test/forces_mae", "test/forces_mae"),
           "test_H_mae_meV": get("members_mean/test/H_all_mae", "test/H_all_mae"),
           "spearman_forces": get("calibration/forces_spearman", "test/uncertainty_forces_spearman",
                                  "val/uncertainty_forces_spearman"),
           "spearman_H": get("calibration/H_spearman", "test/uncertainty_H_spearman", "val/uncertainty_H_spearman"),
           "train_s": get("committee_train_time_s", "train_time_s")}
    if "force_spread_eV_A" in spreads and len(spreads["force_spread_eV_A"]):
        row["pool_force_spread_mean_meV_A"] = 1e3 * float(np.mean(spreads["force_spread_eV_A"]))
        row["pool_force_spread_max_meV_A"] = 1e3 * float(np.max(spreads["force_spread_eV_A"]))
    if "H_spread_eV" in spreads and len(spreads["H_spread_eV"]):
        row["pool_H_spread_mean_meV"] = 1e3 * float(np.mean(spreads["H_spread_eV"]))
    return row


def write_rounds_table(rows: list[dict], run_dir: Path) -> tuple[Path, Path]:
    """``rounds.csv`` and ``rounds.md`` (a Markdown table for the report) of the recorded rounds."""
    import csv

    run_dir = Path(run_dir)
    keys = [k for k, _ in COLUMNS]
    with open(run_dir / "rounds.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in row.items()})

    def cell(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return " ".join(map(str, v)) if len(v) <= 8 else f"{' '.join(map(str, v[:8]))} … ({len(v)})"
        return str(v)

    lines = ["| " + " | ".join(t for _, t in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k in keys) + " |" for row in rows]
    (run_dir / "rounds.md").write_text("\n".join(lines) + "\n")
    return run_dir / "rounds.csv", run_dir / "rounds.md"


def plot_rounds(rows: list[dict], path: Path, title: str = "") -> Path:
    """Test (else validation) force MAE and the pool's mean force spread against the number of labelled cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    n = [r["n_labelled"] for r in rows]
    err_key = "test_forces_mae_meV_A" if any(r.get("test_forces_mae_meV_A") is not None for r in rows) \
        else "val_forces_mae_meV_A"
    ax.plot(n, [r.get(err_key) or np.nan for r in rows], "o-", label=err_key.replace("_meV_A", "") + " (meV/Å)")
    ax.plot(n, [r.get("pool_force_spread_mean_meV_A") or np.nan for r in rows], "s--",
            label="pool force spread, mean (meV/Å)")
    ax.set_xlabel("labelled cells (reference calls)")
    ax.set_ylabel("meV/Å")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
