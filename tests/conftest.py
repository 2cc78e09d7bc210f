import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("WANDB_MODE", "offline")

import numpy as np
import pytest
from ase import Atoms
from ase.build import graphene


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
    blocks within 3.5 Å; returns the HDF5 path. Train on it with TINY_TRAIN (tiny models, cutoffs that fit)."""
    from hedgenet.data.displacements import rattle_specs
    from hedgenet.data.labelling import label_dataset
    from hedgenet.data.store import DatasetStore
    from hedgenet.reference import make_reference
    from hedgenet.structures import build_structure, make_supercell

    root = tmp_path_factory.mktemp("tiny_dataset")
    atoms = make_supercell(build_structure("bilayer_graphene", a=2.458, d=3.32, stacking="AB"), [4, 4])
    ref = make_reference("xtb", block_cutoff=3.5)
    store = DatasetStore(root / "tiny.h5")
    store.create({"fingerprint": "tiny", "solver_settings": ref.settings(), "orbital_layout": ref.layout.to_json()}, atoms)
    label_dataset(store, atoms, rattle_specs(len(atoms), [0.04], 3, seed=1), make_reference,
                  {"name": "xtb", "block_cutoff": 3.5}, progress=False, reference=ref)
    assert len(store) == 3
    return store.path

