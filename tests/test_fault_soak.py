"""Soak: SIGTERM and SIGKILL at seeded random moments of labelling and training, each followed by a rerun of
the same command (as the pipeline reruns a killed stage). Afterwards nothing is lost (every sample and every
epoch is there, with the numbers of an uninterrupted run), nothing is duplicated, and no rerun got stuck
(every rerun either was killed by us or finished). Slow: about 6 minutes on 2 cores.

    pytest -m slow tests/test_fault_soak.py -s      # prints the counts (also in <tmp>/soak_counts.json)
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_runner import TINY_TRAIN

from hedgenet.data.store import DatasetStore

BIN = Path(sys.executable).parent
SEED = 16
LABEL_KILLS = 14
TRAIN_KILLS = 12
N_SAMPLES = 48
EPOCHS = 200
LABEL = ["dataset.supercell=[4,4]", "reference.block_cutoff=3.5", "dataset.rattle.amplitudes_A=[0.04]",
         f"dataset.rattle.n_per_amplitude={N_SAMPLES}", "dataset.thermal.n_per_temperature=0",
         "dataset.rigid.shifts_A=[]", "dataset.strain.strains=[]", "progress=false", "+material.params.a=2.458", "+material.params.d=3.32",
         "material.relax=[]", "dataset.consolidate_every_s=0"]


def _env(root: Path) -> dict:
    return {**os.environ, "HEDGENET_ROOT": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def _run_and_maybe_kill(cmd, root: Path, delay_s: float | None, sig) -> tuple[str, int]:
    """Run ``cmd``; after ``delay_s`` send ``sig`` unless it has ended. Returns ('killed'|'finished', rc)."""
    proc = subprocess.Popen(cmd, cwd=root, env=_env(root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    if delay_s is not None:
        try:
            proc.wait(timeout=delay_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=300)
            return "killed", proc.returncode
    _, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        print(err[-2000:])
    return "finished", proc.returncode


def _kill_plan(rng, low: float, high: float):
    """Endless seeded (delay s, signal) pairs: SIGTERM or SIGKILL with even odds."""
    while True:
        yield float(rng.uniform(low, high)), signal.SIGTERM if rng.random() < 0.5 else signal.SIGKILL


@pytest.mark.slow
def test_soak_random_kills_in_labelling_and_training(tmp_path, tiny_root):
    rng = np.random.default_rng(SEED)
    counts = {"seed": SEED, "label_kill_points": 0, "train_kill_points": 0, "sigterm": 0, "sigkill": 0,
              "runs_that_ended_before_their_kill": 0, "stuck_reruns": 0}

    # ---- labelling: one dataset, killed and rerun again and again
    root = tmp_path / "label"
    root.mkdir()
    label = [str(BIN / "hedgenet-label"), *LABEL]
    for k, (delay, sig) in enumerate(_kill_plan(rng, 1.5, 6.0)):  # until LABEL_KILLS kills landed
        if counts["label_kill_points"] >= LABEL_KILLS or k >= LABEL_KILLS + 10:
            break
        how, rc = _run_and_maybe_kill([*label, "dataset.name=soak", f"hydra.run.dir={root}/runs/k{k}"], root,
                                      delay, sig)
        if how == "killed":
            counts["label_kill_points"] += 1
            counts["sigterm" if sig == signal.SIGTERM else "sigkill"] += 1
        else:
            counts["runs_that_ended_before_their_kill"] += 1
            counts["stuck_reruns"] += rc != 0
    how, rc = _run_and_maybe_kill([*label, "dataset.name=soak", f"hydra.run.dir={root}/runs/final"], root, None, None)
    counts["stuck_reruns"] += rc != 0
    how, rc = _run_and_maybe_kill([*label, "dataset.name=straight", f"hydra.run.dir={root}/runs/straight"], root,
                                  None, None)
    assert rc == 0
    soak, straight = DatasetStore(root / "data" / "soak.h5"), DatasetStore(root / "data" / "straight.h5")
    with h5py.File(soak.path) as f:
        names = list(f["samples"].keys())
    counts["samples_expected"] = N_SAMPLES
    counts["samples_lost"] = len(set(range(N_SAMPLES)) - {int(n) for n in names})
    counts["samples_duplicated"] = len(names) - len(set(names)) + len(set(soak.ids()) & set(soak.failed_ids()))
    counts["label_failed_samples"] = len(soak.failed_ids())
    counts["label_leftover_files"] = len([p for p in root.joinpath("data").iterdir()
                                          if p.name.endswith("tmp")]) + len(soak.staged_ids())
    for a, b in zip(soak.iter_samples(), straight.iter_samples(), strict=True):  # the numbers of an uninterrupted run
        assert a["sample_id"] == b["sample_id"] and a["seed"] == b["seed"]
        for key in ("positions", "energy", "forces", "H", "S"):
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-9, err_msg=f"sample {a['sample_id']} {key}")

    # ---- training: one run directory, killed and resumed (train.resume=auto, as the pipeline does)
    troot = tiny_root(tmp_path / "train")
    run = troot / "runs" / "soak"
    train = [str(BIN / "hedgenet-train"), f"data.paths=[{troot}/data/tiny.h5]", *TINY_TRAIN, "logger=csv",
             f"train.max_epochs={EPOCHS}"]
    for k, (delay, sig) in enumerate(_kill_plan(rng, 5.0, 14.0)):  # until TRAIN_KILLS kills landed
        if counts["train_kill_points"] >= TRAIN_KILLS or k >= TRAIN_KILLS + 8:
            break
        how, rc = _run_and_maybe_kill([*train, "train.resume=auto", f"hydra.run.dir={run}"], troot, delay, sig)
        if how == "killed":
            counts["train_kill_points"] += 1
            counts["sigterm" if sig == signal.SIGTERM else "sigkill"] += 1
            if sig == signal.SIGTERM:
                assert rc in (128 + signal.SIGTERM, -signal.SIGTERM), rc  # never 0: a stopped run is no success
        else:
            counts["runs_that_ended_before_their_kill"] += 1
            counts["stuck_reruns"] += rc != 0
    if not (run / "model.pt").exists():
        how, rc = _run_and_maybe_kill([*train, "train.resume=auto", f"hydra.run.dir={run}"], troot, None, None)
        counts["stuck_reruns"] += rc != 0
    how, rc = _run_and_maybe_kill([*train, f"hydra.run.dir={troot}/runs/straight"], troot, None, None)
    assert rc == 0
    epochs = [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()]
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        val = [int(float(r["epoch"])) for r in csv.DictReader(fh) if r.get("val/loss")]
    counts["epochs_expected"] = EPOCHS
    counts["history_epochs_lost"] = len(set(range(EPOCHS)) - set(epochs))
    counts["history_epochs_duplicated"] = len(epochs) - len(set(epochs))
    counts["csv_epochs_lost"] = len(set(range(EPOCHS)) - set(val))
    counts["csv_epochs_duplicated"] = len(val) - len(set(val))
    a = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(troot / "runs" / "straight" / "model.pt", weights_only=True)["state_dict"]
    counts["model_max_abs_diff_vs_uninterrupted"] = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].numel())
    counts["kill_points"] = counts["label_kill_points"] + counts["train_kill_points"]

    print("\nsoak counts: " + json.dumps(counts))
    (tmp_path / "soak_counts.json").write_text(json.dumps(counts, indent=1))
    assert counts["kill_points"] >= 20
    assert counts["samples_lost"] == counts["samples_duplicated"] == counts["label_failed_samples"] == 0
    assert counts["label_leftover_files"] == 0
    assert counts["history_epochs_lost"] == counts["history_epochs_duplicated"] == 0
    assert counts["csv_epochs_lost"] == counts["csv_epochs_duplicated"] == 0
    assert counts["stuck_reruns"] == 0
    assert counts["model_max_abs_diff_vs_uninterrupted"] <= 1e-6
