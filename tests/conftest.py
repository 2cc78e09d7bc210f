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
