"""The ground every layer stands on: the orbital basis and its blocks.

- :mod:`~hedgenet.orbitals.layout`: :class:`OrbitalLayout` (shells per element, e3nn order, padding);
- :mod:`~hedgenet.orbitals.blocks`: :class:`BlockSet` (H_ij(R), S_ij(R) as edge lists), block edges within a
  cutoff, Γ-point splitting by minimum image;
- :mod:`~hedgenet.orbitals.cells`: cell widths and the one check that a cell is wide enough for a cutoff;
- :mod:`~hedgenet.orbitals.bloch`: Bloch sums H(k), S(k) and generalized eigenvalues (band energies).

Imports nothing else of hedgenet; reference solvers, graphs, models and physics all import it.
"""

from hedgenet.orbitals.bloch import band_energies, bloch_matrix, generalized_eigh
from hedgenet.orbitals.blocks import BlockSet, block_edges, split_gamma_matrices
from hedgenet.orbitals.cells import (
    CellTooSmallError,
    cell_widths,
    check_cell_for_cutoff,
)
from hedgenet.orbitals.layout import OrbitalLayout, valence_electron_count

__all__ = [
    "BlockSet",
    "CellTooSmallError",
    "OrbitalLayout",
    "band_energies",
    "block_edges",
    "bloch_matrix",
    "cell_widths",
    "check_cell_for_cutoff",
    "generalized_eigh",
    "split_gamma_matrices",
    "valence_electron_count",
]
