import os

# One OpenMP/BLAS thread for the in-process tests unless the caller chose otherwise. On a 2-core machine like CI
# two threads per process were slower, not faster: the in-process modules (test_fermi_velocity, test_models,
# test_epi, test_unfold, ...) took 106 s with 2 threads and 67 s with 1, and every CLI the tests start
# already runs with OMP_NUM_THREADS=1 (cli_runner).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import graphene


@pytest.fixture(scope="module")
def float64_one_thread():
    """float64 as torch's default dtype and one thread for a test module (restored after it): exact comparisons
    of models built in the default dtype."""
    import torch

    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


@pytest.fixture
def graphene_sheet():
    """Rattled monolayer graphene supercell factory: n×n cells, a = 2.46 Å, 20 Å vacuum."""

    def make(n: int, rattle: float = 0.02, seed: int = 0) -> Atoms:
        at = graphene(a=2.46, vacuum=10.0).repeat((n, n, 1))
        at.arrays["layer"] = np.zeros(len(at), dtype=np.int64)
        if rattle:
            at.rattle(rattle, seed=seed)
        return at

    return make


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """3 rattled 4×4 AB bilayer graphene cells (64 atoms, a = 2.458 Å, d = 3.32 Å) labelled by GFN1-xTB with
    blocks within 3.5 Å; returns the HDF5 path. Labelled once per session and shared by every module that
    trains on it (test_training, test_baselines, test_sweeps, test_compare): modules that need it under
    their own HEDGENET_ROOT copy it there with ``tiny_root``. Train on it with TINY_TRAIN (tiny models,
    cutoffs that fit)."""
    from cli_runner import tiny_xtb_dataset

    return tiny_xtb_dataset(tmp_path_factory.mktemp("tiny_dataset"))


@pytest.fixture(scope="session")
def tiny_root(tiny_dataset):
    """``tiny_root(path)``: a fresh HEDGENET_ROOT at ``path`` holding a copy of the session's
    ``tiny_dataset`` as ``path/data/tiny.h5`` (no xTB relabelling)."""
    import shutil
    from pathlib import Path

    def make(path) -> Path:
        root = Path(path)
        (root / "data").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_dataset, root / "data" / "tiny.h5")
        return root

    return make


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("learning_curves")``: a script of benchmarks/ imported as a module (for its pure parts)."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        if str(bench) not in sys.path:  # the scripts import their neighbours (_common, interlayer_ablation)
            sys.path.insert(0, str(bench))
        spec = importlib.util.spec_from_file_location(f"{name}_bench", bench / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
