"""Shared helpers for the layered-structure builders (internal).

Conventions used by every builder in :mod:`hedgenet.structures` (lengths in Å):

* ``pbc = (True, True, True)``; the in-plane lattice vectors a1, a2 lie in the xy plane and the third cell
  vector is c = (0, 0, c_z) with c_z = slab thickness + ``vacuum``, where the slab thickness is the spread
  of the atomic z coordinates. The slab is centred in z.
* Every atom carries its layer index in ``atoms.arrays["layer"]`` (int64; 0 = bottom, 1 = top).
* Hexagonal primitive cell in ASE's 120° convention: a1 = a(1, 0, 0), a2 = a(-1/2, √3/2, 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from ase import Atoms

LAYER_KEY = "layer"
"""Name of the per-atom int64 array holding the layer index (0 = bottom, 1 = top)."""

SQRT3 = math.sqrt(3.0)


def hexagonal_cell_2d(a: float) -> np.ndarray:
    """In-plane hexagonal lattice vectors (2, 3) in Å, 120° convention: a1 = a(1,0,0), a2 = a(-1/2,√3/2,0)."""
    return np.array([[a, 0.0, 0.0], [-0.5 * a, 0.5 * SQRT3 * a, 0.0]], dtype=float)


def check_positive(name: str, value: float) -> float:
    """Return ``float(value)``; raise ``ValueError`` naming ``name`` if it is not a finite positive number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number (Å), got {value!r}") from None
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name} must be a positive number (Å), got {value!r}")
    return v


def normalise_choice(name: str, value: str, valid: Sequence[str], aliases: dict[str, str] | None = None) -> str:
    """Match ``value`` against ``valid`` (case-insensitive, with optional aliases); raise a helpful ``ValueError``."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")
    key = value.strip().upper().replace("\u2032", "'")  # accept the typographic prime (AA′)
    table = {v.upper(): v for v in valid}
    if aliases:
        table.update({k.upper(): v for k, v in aliases.items()})
    if key not in table:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {list(valid)}")
    return table[key]


def assemble_slab(
    cell_2d: np.ndarray,
    symbols: Iterable[str],
    xy: np.ndarray,
    z: np.ndarray,
    layer: np.ndarray,
    vacuum: float,
) -> Atoms:
    """Build a periodic slab ``Atoms`` from in-plane cell vectors and Cartesian coordinates.

    Parameters
    ----------
    cell_2d:
        (2, 3) in-plane lattice vectors (Å), z components zero.
    symbols:
        Chemical symbols, one per atom.
    xy:
        (N, 2) or (N, 3) Cartesian in-plane coordinates (Å); a third column is ignored.
    z:
        (N,) heights (Å) relative to any reference; the slab is re-centred in the cell.
    layer:
        (N,) integer layer index per atom.
    vacuum:
        Vacuum (Å) added to the slab thickness: c_z = (max z − min z) + vacuum.

    Returns
    -------
    ase.Atoms with pbc=(True, True, True), c = (0, 0, c_z), atoms wrapped into the cell and sorted by
    layer, then z, y, x (deterministic), and ``arrays["layer"]`` set (int64).
    """
    vacuum = check_positive("vacuum", vacuum)
    xy = np.asarray(xy, dtype=float)
    z = np.asarray(z, dtype=float)
    layer = np.asarray(layer, dtype=np.int64)
    thickness = float(z.max() - z.min()) if len(z) else 0.0
    c_z = thickness + vacuum
    z_centred = z - z.min() + 0.5 * (c_z - thickness)
    positions = np.column_stack([xy[:, 0], xy[:, 1], z_centred])
    cell = np.zeros((3, 3))
    cell[:2] = cell_2d
    cell[2, 2] = c_z
    atoms = Atoms(symbols=list(symbols), positions=positions, cell=cell, pbc=(True, True, True))
    atoms.set_array(LAYER_KEY, layer)
    wrap_in_plane(atoms)
    return sort_atoms(atoms)


def wrap_in_plane(atoms: Atoms, eps: float = 1e-9) -> None:
    """Wrap fractional coordinates into [−eps, 1 − eps) along the first two cell vectors (in place)."""
    frac = np.linalg.solve(atoms.cell.array.T, atoms.positions.T).T
    frac[:, :2] -= np.floor(frac[:, :2] + eps)
    atoms.positions = frac @ atoms.cell.array


def sort_atoms(atoms: Atoms, decimals: int = 6) -> Atoms:
    """Return a copy sorted by layer, then z, y, x (rounded to ``decimals`` Å so float noise cannot reorder)."""
    pos = np.round(atoms.positions, decimals) + 0.0  # "+ 0.0" turns -0.0 into 0.0
    layer = atoms.arrays[LAYER_KEY] if LAYER_KEY in atoms.arrays else np.zeros(len(atoms), dtype=np.int64)
    order = np.lexsort((pos[:, 0], pos[:, 1], pos[:, 2], layer))
    out = atoms[order]
    out.info = dict(atoms.info)
    return out
