"""Monolayer and bilayer MoS2 in the trigonal-prismatic (H) phase (lengths in Å).

Hexagonal primitive cell, 120° convention: a1 = a(1, 0, 0), a2 = a(−1/2, √3/2, 0). Fractional in-plane
sites: (0, 0) -> origin, (1/3, 2/3) -> (a1 + 2 a2)/3 = (0, a/√3), (2/3, 1/3) -> (2 a1 + a2)/3.
A single 1H layer has Mo at z = 0 and the two S at z = ±sulfur_height on the same in-plane site
(Mo–S bond length √(a²/3 + sulfur_height²) = 2.41 Å for the defaults).
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

__all__ = ["monolayer_mos2", "bilayer_mos2", "MOS2_STACKINGS"]

MOS2_STACKINGS: tuple[str, ...] = ("2H", "3R")
"""Stackings accepted by :func:`bilayer_mos2`."""

_ORIGIN = np.array([0.0, 0.0])
_SITE_1 = np.array([1.0 / 3.0, 2.0 / 3.0])
_SITE_2 = np.array([2.0 / 3.0, 1.0 / 3.0])


def _layer(mo_site: np.ndarray, s_site: np.ndarray, z_mo: float, h: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    frac = np.vstack([mo_site, s_site, s_site])
    z = np.array([z_mo, z_mo - h, z_mo + h])
    return ["Mo", "S", "S"], frac, z


def monolayer_mos2(a: float = 3.16, sulfur_height: float = 1.56, vacuum: float = 20.0) -> Atoms:
    """Monolayer (1H) MoS2 primitive cell (3 atoms).

    Parameters
    ----------
    a:
        Lattice constant (Å).
    sulfur_height:
        Height of each S plane above/below the Mo plane (Å), i.e. half the S–S distance within the layer.
    vacuum:
        Vacuum (Å); c_z = 2 sulfur_height + vacuum, the layer centred in z.

    Atom positions (Cartesian, z relative to the Mo plane): Mo at (0, 0, 0); S at ((a1 + 2 a2)/3, ∓h), i.e.
    (0, a/√3, −h) and (0, a/√3, +h) with h = sulfur_height. ``arrays["layer"]`` = 0. Space group P-6m2 (187).
    """
    a = check_positive("a", a)
    h = check_positive("sulfur_height", sulfur_height)
    cell = hexagonal_cell_2d(a)
    symbols, frac, z = _layer(_ORIGIN, _SITE_1, 0.0, h)
    atoms = assemble_slab(cell, symbols, frac @ cell[:, :2], z, np.zeros(3, dtype=np.int64), vacuum)
    atoms.info["builder"] = "monolayer_mos2"
    return atoms


def bilayer_mos2(
    a: float = 3.16,
    d: float = 6.15,
    sulfur_height: float = 1.56,
    stacking: str = "2H",
    vacuum: float = 20.0,
) -> Atoms:
    """Bilayer MoS2 primitive cell (6 atoms: Mo + 2 S per layer).

    Parameters
    ----------
    a:
        Lattice constant (Å).
    d:
        Mo–Mo interlayer distance (Å) (the S–S gap between the layers is d − 2 sulfur_height).
    sulfur_height:
        Half the S–S distance within a layer (Å).
    stacking:
        ``"2H"`` (default; as in bulk 2H-MoS2: the top layer is the bottom layer rotated by 180° about z,
        bilayer space group P-3m1, No. 164) or ``"3R"`` (the top layer is the bottom layer translated by
        (a1 + 2 a2)/3; P3m1, No. 156).
    vacuum:
        Vacuum (Å); c_z = d + 2 sulfur_height + vacuum, the bilayer centred in z.

    Atom positions (Cartesian; z relative to the bottom Mo plane, h = sulfur_height):

    * bottom layer (layer 0): Mo at (0, 0, 0); S at ((a1 + 2 a2)/3, −h) and ((a1 + 2 a2)/3, +h);
    * top layer (layer 1), 2H: Mo at ((a1 + 2 a2)/3, d), above the bottom S; S at (0, 0, d ∓ h), above
      the bottom Mo — the bottom layer rotated by 180° about the z axis through (a1 + 2 a2)/6 and raised by d;
    * top layer, 3R: Mo at ((a1 + 2 a2)/3, d), above the bottom S; S at ((2 a1 + a2)/3, d ∓ h), above the
      hollow site.
    """
    a = check_positive("a", a)
    d = check_positive("d", d)
    h = check_positive("sulfur_height", sulfur_height)
    stacking = normalise_choice("stacking", stacking, MOS2_STACKINGS)
    cell = hexagonal_cell_2d(a)
    sym0, frac0, z0 = _layer(_ORIGIN, _SITE_1, 0.0, h)
    if stacking == "2H":
        sym1, frac1, z1 = _layer(_SITE_1, _ORIGIN, d, h)
    else:
        sym1, frac1, z1 = _layer(_SITE_1, _SITE_2, d, h)
    frac = np.vstack([frac0, frac1])
    z = np.concatenate([z0, z1])
    layer = np.array([0, 0, 0, 1, 1, 1], dtype=np.int64)
    atoms = assemble_slab(cell, sym0 + sym1, frac @ cell[:, :2], z, layer, vacuum)
    atoms.info["builder"] = "bilayer_mos2"
    atoms.info["stacking"] = stacking
    return atoms
