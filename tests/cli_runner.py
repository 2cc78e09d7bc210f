"""Run a hedgenet console script in a subprocess with its own HEDGENET_ROOT and run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent

# hedgenet-train overrides for the `tiny_dataset` fixture: a small model, cutoffs that fit the 4×4 cell,
# the material at the dataset's geometry (no relaxation), one epoch
TINY_TRAIN = [
    "relations.r_intra=3.0", "relations.r_inter=3.5", "relations.r_single=3.5", "data.batch_size=2",
    "data.val_fraction=0.34", "model.size.channels=8", "model.num_basis=4", "model.radial_hidden=8",
    "train.max_epochs=1", "+material.params.a=2.458", "+material.params.d=3.32", "material.relax=[]",
]


def _run(cmd, root: Path, check: bool, timeout: int):
    env = {**os.environ, "HEDGENET_ROOT": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_cli(prog: str, root: Path, name: str, args, check: bool = True, timeout: int = 900):
    """``prog args hydra.run.dir=root/runs/name`` with one OpenMP thread; returns (process, run dir)."""
    proc = _run([str(BIN / prog), *args, f"hydra.run.dir={root}/runs/{name}"], root, check, timeout)
    return proc, root / "runs" / name


def run_sweep(prog: str, root: Path, name: str, args, check: bool = True, timeout: int = 900):
    """A Hydra multirun ``prog -m args hydra.sweep.dir=root/multiruns/name``; returns (process, sweep dir)."""
    proc = _run([str(BIN / prog), "-m", *args, f"hydra.sweep.dir={root}/multiruns/{name}"], root, check, timeout)
    return proc, root / "multiruns" / name


def run_module(module: str, root: Path, args, check: bool = True, timeout: int = 900):
    """``python -m module args`` (a CLI without Hydra, e.g. hedgenet.cli.compare) in ``root``."""
    return _run([sys.executable, "-m", module, *args], root, check, timeout)
