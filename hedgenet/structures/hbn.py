"""Monolayer and bilayer hexagonal boron nitride (lengths in Å).

Hexagonal primitive cell, 120° convention: a1 = a(1, 0, 0), a2 = a(−1/2, √3/2, 0). Fractional in-plane
sites: (0, 0) -> origin, (1/3, 2/3) -> (a1 + 2 a2)/3 = (0, a/√3), (2/3, 1/3) -> hexagon centre. B–N bond
length a/√3 (1.446 Å for a = 2.504 Å).
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

__all__ = ["monolayer_hbn", "bilayer_hbn", "HBN_STACKINGS"]

HBN_STACKINGS: tuple[str, ...] = ("AA'", "AA")
"""Stackings accepted by :func:`bilayer_hbn` (``"AA′"`` with a typographic prime is accepted too)."""

_SITE_B = np.array([0.0, 0.0])
_SITE_N = np.array([1.0 / 3.0, 2.0 / 3.0])


def monolayer_hbn(a: float = 2.504, vacuum: float = 20.0) -> Atoms:
    """Monolayer h-BN primitive cell (2 atoms).

    Parameters
    ----------
    a:
        Lattice constant (Å).
    vacuum:
        Vacuum (Å); c_z = vacuum, the sheet at z = c_z/2.

    Atom positions (in-plane, Cartesian): B at 0, N at (a1 + 2 a2)/3 = (0, a/√3). ``arrays["layer"]`` = 0.
    """
    a = check_positive("a", a)
    cell = hexagonal_cell_2d(a)
    xy = np.vstack([_SITE_B, _SITE_N]) @ cell[:, :2]
    atoms = assemble_slab(cell, ["B", "N"], xy, np.zeros(2), np.zeros(2, dtype=np.int64), vacuum)
    atoms.info["builder"] = "monolayer_hbn"
    return atoms


def bilayer_hbn(a: float = 2.504, d: float = 3.33, stacking: str = "AA'", vacuum: float = 20.0) -> Atoms:
    """Bilayer h-BN primitive cell (4 atoms: B and N in each layer).

    Parameters
    ----------
    a:
        Lattice constant (Å).
    d:
        Interlayer distance (Å); c_z = d + vacuum, the bilayer centred in z.
    stacking:
        ``"AA'"`` (default; the stacking of bulk hexagonal BN: B above N and N above B; bilayer space group
        P-3m1, No. 164) or ``"AA"`` (B above B, N above N; P-6m2, No. 187).
    vacuum:
        Vacuum (Å).

    Atom positions (in-plane, Cartesian):

    * bottom layer (layer 0): B at 0, N at (a1 + 2 a2)/3 = (0, a/√3);
    * top layer (layer 1), AA′: N at 0 (above bottom B), B at (a1 + 2 a2)/3 (above bottom N), i.e. the
      bottom layer rotated by 180° about the z axis through the midpoint of a B–N bond;
    * top layer, AA: B at 0, N at (a1 + 2 a2)/3.
    """
    a = check_positive("a", a)
    d = check_positive("d", d)
    stacking = normalise_choice("stacking", stacking, HBN_STACKINGS)
    cell = hexagonal_cell_2d(a)
    if stacking == "AA'":
        top_symbols, top_frac = ["N", "B"], [_SITE_B, _SITE_N]
    else:
        top_symbols, top_frac = ["B", "N"], [_SITE_B, _SITE_N]
    frac = np.vstack([_SITE_B, _SITE_N, *top_frac])
    xy = frac @ cell[:, :2]
    z = np.array([0.0, 0.0, d, d])
    layer = np.array([0, 0, 1, 1], dtype=np.int64)
    atoms = assemble_slab(cell, ["B", "N", *top_symbols], xy, z, layer, vacuum)
    atoms.info["builder"] = "bilayer_hbn"
    atoms.info["stacking"] = stacking
    return atoms
