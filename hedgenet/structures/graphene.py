"""Monolayer and bilayer graphene (lengths in Å).

Hexagonal primitive cell in ASE's 120° convention: a1 = a(1, 0, 0), a2 = a(−1/2, √3/2, 0). In fractional
in-plane coordinates the three high-symmetry sites of this cell are

* (0, 0)        -> Cartesian (0, 0)            : sublattice A,
* (1/3, 2/3)    -> (a1 + 2 a2)/3 = (0, a/√3)   : sublattice B,
* (2/3, 1/3)    -> (2 a1 + a2)/3 = (a/2, a/(2√3)) : hexagon centre (hollow site).

The C–C bond length is a/√3 (1.420 Å for a = 2.46 Å).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from hedgenet.structures._common import (
    assemble_slab,
    check_positive,
    hexagonal_cell_2d,
    normalise_choice,
)

__all__ = ["monolayer_graphene", "bilayer_graphene", "GRAPHENE_STACKINGS", "GRAPHENE_SITES_FRAC"]

GRAPHENE_STACKINGS: tuple[str, ...] = ("AB", "AA")
"""Stackings accepted by :func:`bilayer_graphene`."""

GRAPHENE_SITES_FRAC: np.ndarray = np.array([[0.0, 0.0], [1.0 / 3.0, 2.0 / 3.0]])
"""Fractional in-plane coordinates (w.r.t. a1, a2) of sublattices A and B of the bottom layer."""

_TOP_SHIFT_FRAC: dict[str, np.ndarray] = {
    # AB (Bernal): shift by (a1 + 2 a2)/3 puts top A on bottom B and top B on the bottom hexagon centre.
    "AB": np.array([1.0 / 3.0, 2.0 / 3.0]),
    "AA": np.array([0.0, 0.0]),
}


def monolayer_graphene(a: float = 2.46, vacuum: float = 20.0) -> Atoms:
    """Monolayer graphene primitive cell (2 atoms).

    Parameters
    ----------
    a:
        Lattice constant (Å); C–C bond length a/√3.
    vacuum:
        Vacuum (Å); c_z = vacuum (the monolayer has zero thickness), the sheet sits at z = c_z/2.

    Atom positions (in-plane, Cartesian): A at 0, B at (a1 + 2 a2)/3 = (0, a/√3). ``arrays["layer"]`` = 0.
    """
    a = check_positive("a", a)
    cell = hexagonal_cell_2d(a)
    xy = GRAPHENE_SITES_FRAC @ cell[:, :2]
    atoms = assemble_slab(cell, ["C", "C"], xy, np.zeros(2), np.zeros(2, dtype=np.int64), vacuum)
    atoms.info["builder"] = "monolayer_graphene"
    return atoms


def bilayer_graphene(a: float = 2.46, d: float = 3.35, stacking: str = "AB", vacuum: float = 20.0) -> Atoms:
    """Bilayer graphene primitive cell (4 atoms: 2 per layer).

    Parameters
    ----------
    a:
        Lattice constant (Å).
    d:
        Interlayer distance (Å); c_z = d + vacuum, the bilayer centred in z.
    stacking:
        ``"AB"`` (Bernal, default; space group P-3m1, No. 164) or ``"AA"`` (eclipsed; P6/mmm, No. 191).
    vacuum:
        Vacuum (Å).

    Atom positions (in-plane, Cartesian):

    * bottom layer (layer 0): A at 0, B at (a1 + 2 a2)/3 = (0, a/√3);
    * top layer (layer 1), AB: A at (a1 + 2 a2)/3 — exactly above bottom B — and B at
      (2 a1 + 4 a2)/3 ≡ (2 a1 + a2)/3 = (a/2, a/(2√3)) — above the centre of a bottom hexagon;
    * top layer, AA: A at 0, B at (a1 + 2 a2)/3 (directly above the bottom atoms).

    Note: a shift of (a1 + a2)/3 in this 120° cell is *not* AB stacking (it lands on a bridge-like site).
    """
    a = check_positive("a", a)
    d = check_positive("d", d)
    stacking = normalise_choice("stacking", stacking, GRAPHENE_STACKINGS)
    cell = hexagonal_cell_2d(a)
    frac = np.vstack([GRAPHENE_SITES_FRAC, GRAPHENE_SITES_FRAC + _TOP_SHIFT_FRAC[stacking]])
    xy = frac @ cell[:, :2]
    z = np.array([0.0, 0.0, d, d])
    layer = np.array([0, 0, 1, 1], dtype=np.int64)
    atoms = assemble_slab(cell, ["C"] * 4, xy, z, layer, vacuum)
    atoms.info["builder"] = "bilayer_graphene"
    atoms.info["stacking"] = stacking
    return atoms
