"""Run a hedgenet console script in a subprocess with its own HEDGENET_ROOT and run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def run_cli(prog: str, root: Path, name: str, args, check: bool = True, timeout: int = 900):
    """``prog args hydra.run.dir=root/runs/name`` with one OpenMP thread; returns (process, run dir)."""
    env = {**os.environ, "HEDGENET_ROOT": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = [str(BIN / prog), *args, f"hydra.run.dir={root}/runs/{name}"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{prog} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc, root / "runs" / name
