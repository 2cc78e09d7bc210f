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


def untrained_model(path: Path) -> Path:
    """An untrained small carbon HedgeNet (joint task, xTB orbitals) saved as hedgenet-train saves one:
    for tests of the pipeline around a model, not of its accuracy (docs/training.md measures that)."""
    import torch

    from hedgenet.models import HedgeNet
    from hedgenet.models.io import save_model
    from hedgenet.reference import make_reference

    torch.manual_seed(0)
    layout = make_reference("xtb").layout
    kwargs = dict(elements=[6], r_intra=3.0, r_inter=3.5, size={"channels": 8, "lmax": 1, "num_layers": 1},
                  task="joint", layout=layout.to_json(), block_cutoff=3.0, num_basis=4, radial_hidden=8,
                  dtype="float64")
    save_model(path, "hedgenet", kwargs, HedgeNet(**kwargs))
    return path
