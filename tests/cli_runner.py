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
    proc = subprocess.run(cmd, cwd=root, env=program_env(root), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_cli(prog: str, root: Path, name: str, args, check: bool = True, timeout: int = 900):
    """``prog args hydra.run.dir=root/runs/name`` with one OpenMP thread; returns (process, run dir)."""
    proc = _run([str(BIN / prog), *args, f"hydra.run.dir={root}/runs/{name}"], root, check, timeout)
    return proc, root / "runs" / name


def untrained_model(path: Path, block_cutoff: float = 3.0) -> Path:
    """An untrained small carbon HedgeNet (joint task, xTB orbitals) saved as hedgenet-train saves one:
    for tests of the pipeline around a model, not of its accuracy (docs/results_training.md measures that)."""
    import torch

    from hedgenet.models import HedgeNet
    from hedgenet.models.io import save_model
    from hedgenet.reference import make_reference

    torch.manual_seed(0)
    layout = make_reference("xtb").layout
    kwargs = dict(elements=[6], r_intra=3.0, r_inter=3.5, size={"channels": 8, "lmax": 1, "num_layers": 1},
                  task="joint", layout=layout.to_json(), block_cutoff=block_cutoff, num_basis=4, radial_hidden=8,
                  dtype="float64")
    save_model(path, "hedgenet", kwargs, HedgeNet(**kwargs))
    return path


def tiny_xtb_dataset(root: Path, name: str = "tiny", n_samples: int = 3, block_cutoff: float = 3.5,
                     rigid_shifts_A=()) -> Path:
    """``root/data/<name>.h5``: ``n_samples`` rattled (0.04 Å) 4×4 AB bilayer graphene cells (64 atoms) and one
    rigid-layer cell per ``rigid_shifts_A`` ([dx, dy, dz] Å of the top layer) labelled by GFN1-xTB with blocks
    within ``block_cutoff`` Å (3.5 Å includes the interlayer dimer pairs at 3.32 Å). About 1 s per sample."""
    from hedgenet.data.displacements import rattle_specs, rigid_layer_specs
    from hedgenet.data.labelling import label_dataset
    from hedgenet.data.store import DatasetStore
    from hedgenet.reference import make_reference
    from hedgenet.structures import build_structure, make_supercell

    atoms = make_supercell(build_structure("bilayer_graphene", a=2.458, d=3.32, stacking="AB"), [4, 4])
    ref = make_reference("xtb", block_cutoff=block_cutoff)
    store = DatasetStore(Path(root) / "data" / f"{name}.h5")
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.create({"fingerprint": name, "solver_settings": ref.settings(), "orbital_layout": ref.layout.to_json()},
                 atoms)
    specs = rattle_specs(len(atoms), [0.04], n_samples, seed=1)
    specs += rigid_layer_specs(atoms.arrays["layer"], list(rigid_shifts_A), seed=1, start_id=n_samples)
    label_dataset(store, atoms, specs, make_reference, {"name": "xtb", "block_cutoff": block_cutoff},
                  progress=False, reference=ref)
    assert len(store) == len(specs)
    return store.path


def run_sweep(prog: str, root: Path, name: str, args, check: bool = True, timeout: int = 900):
    """A Hydra multirun ``prog -m args hydra.sweep.dir=root/multiruns/name``; returns (process, sweep dir)."""
    proc = _run([str(BIN / prog), "-m", *args, f"hydra.sweep.dir={root}/multiruns/{name}"], root, check, timeout)
    return proc, root / "multiruns" / name


def run_program(prog: str, root: Path, args, check: bool = True, timeout: int = 900):
    """A console script without a run directory of its own (e.g. hedgenet-sweep) in ``root``; returns the process."""
    return _run([str(BIN / prog), *args], root, check, timeout)


def program_env(root: Path) -> dict:
    """The environment the commands above run in (for a process started with Popen)."""
    return {**os.environ, "HEDGENET_ROOT": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def run_module(module: str, root: Path, args, check: bool = True, timeout: int = 900):
    """``python -m module args`` (a CLI without Hydra, e.g. hedgenet.cli.compare) in ``root``."""
    return _run([sys.executable, "-m", module, *args], root, check, timeout)
