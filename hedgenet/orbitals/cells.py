"""Cell geometry that the orbital blocks depend on: perpendicular widths (Å) and the minimum-image check.

Γ-point supercell matrices are split into blocks H_ij(R) by the minimum-image rule, which is unambiguous
only when every periodic width exceeds twice the block cutoff. :func:`check_cell_for_cutoff` is the one
place that rule is checked; every stage and the pipeline call it.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.cell import Cell
from numpy.typing import ArrayLike


def _cell_array(cell: Atoms | Cell | ArrayLike) -> np.ndarray:
    if isinstance(cell, Atoms):
        return cell.cell.array
    if isinstance(cell, Cell):
        return cell.array
    arr = np.asarray(cell, dtype=float)
    if arr.shape != (3, 3):
        raise ValueError(f"cell must be a 3x3 array of lattice vectors (rows, Å), got shape {arr.shape}")
    return arr


def cell_widths(cell: Atoms | Cell | ArrayLike) -> np.ndarray:
    """Perpendicular distances (Å) between opposite faces of the cell, shape (3,).

    ``widths[i] = V / |a_j × a_k|`` with (i, j, k) cyclic and V = |det(cell)|. A sphere of radius r fits in
    the periodic cell without touching its own images iff 2r < min(widths). ``cell`` may be an ``Atoms``, an
    ``ase.cell.Cell`` or a 3x3 array whose rows are the lattice vectors.
    """
    c = _cell_array(cell)
    volume = abs(float(np.linalg.det(c)))
    if volume <= 0.0:
        raise ValueError("cell is singular (zero volume)")
    areas = np.linalg.norm(np.cross(c[[1, 2, 0]], c[[2, 0, 1]]), axis=1)
    return volume / areas



class CellTooSmallError(ValueError):
    """The supercell is too narrow for minimum-image splitting at the requested block cutoff."""


def check_cell_for_cutoff(atoms: Atoms, block_cutoff: float) -> None:
    """Refuse a periodic cell narrower than twice the block cutoff (minimum image would be ambiguous)."""
    if not atoms.pbc.any():
        return
    widths = cell_widths(atoms)
    narrow = [k for k in range(3) if atoms.pbc[k] and widths[k] <= 2.0 * block_cutoff]
    if narrow:
        axes = ", ".join(f"a{k + 1}: {widths[k]:.2f} Å" for k in narrow)
        raise CellTooSmallError(
            f"cell too small for block_cutoff={block_cutoff:.2f} Å: minimum-image splitting of the "
            f"Γ-point matrices needs every periodic width > 2 × cutoff = {2 * block_cutoff:.2f} Å, but "
            f"{axes}. Fix: use a larger supercell (e.g. dataset.supercell=[7,7]) or a smaller "
            f"reference.block_cutoff (≤ {0.999 * widths[narrow].min() / 2:.2f} Å here)."
        )
