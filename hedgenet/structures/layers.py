"""The layer index of every atom: the stored one (``atoms.arrays["layer"]``) or, when a structure carries none
(read from a file, built by hand), detected from its covalent bonds.

Rule (:func:`detect_layers`): two atoms are bonded when closer than 1.2 × the sum of their covalent radii
(ASE's ``natural_cutoffs``: C–C 1.82 Å, B–N 1.86 Å, Mo–S 3.1 Å, while van der Waals gaps are ≥ 2.9 Å between
the nearest atoms of two layers); a layer is a connected set of bonded atoms (through the periodic in-plane
boundaries); layers are numbered 0, 1, … from the lowest mean z up, as the builders number them. Set
``atoms.arrays["layer"]`` yourself to override it (e.g. a molecule on a layer that should count as part of it).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from hedgenet.structures._common import LAYER_KEY

BOND_FACTOR = 1.2
"""Bonded when closer than this factor × the sum of the two covalent radii."""


def detect_layers(atoms: Atoms, bond_factor: float = BOND_FACTOR) -> np.ndarray:
    """(N,) int64 layer index of every atom from covalent connectivity (module docstring)."""
    from ase.neighborlist import natural_cutoffs, neighbor_list
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(atoms)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=bond_factor))
    n_comp, comp = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    z = atoms.positions[:, 2]
    mean_z = np.array([z[comp == c].mean() for c in range(n_comp)])
    rank = np.empty(n_comp, dtype=np.int64)
    rank[np.argsort(mean_z, kind="stable")] = np.arange(n_comp)
    return rank[comp]


def layer_index(atoms: Atoms) -> np.ndarray:
    """``atoms.arrays["layer"]`` when set, else :func:`detect_layers` (never "all one layer" by default)."""
    if LAYER_KEY in atoms.arrays:
        return np.asarray(atoms.arrays[LAYER_KEY], dtype=np.int64)
    return detect_layers(atoms)
