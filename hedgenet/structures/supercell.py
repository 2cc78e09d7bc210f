"""Supercells of layered structures and cell-geometry helpers (lengths in Å)."""

from __future__ import annotations

import copy

import numpy as np
from ase import Atoms
from ase.build import make_supercell as _ase_make_supercell
from ase.cell import Cell
from numpy.typing import ArrayLike

from hedgenet.orbitals.cells import cell_widths
from hedgenet.structures._common import LAYER_KEY, sort_atoms

__all__ = ["make_supercell", "supercell_matrix", "cell_widths", "in_plane_width", "lattice_translations", "primitive_cell", "make_phonopy", "supercell_atoms",
           "to_phonopy_atoms"]


def supercell_matrix(matrix: ArrayLike) -> np.ndarray:
    """Validate a 2x2 (in-plane) or 3x3 supercell matrix (or its diagonal) and return it as 3x3 int64."""
    try:
        m = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"supercell matrix must be a 2x2 or 3x3 array of integers, got {matrix!r}") from None
    if m.shape in ((2,), (3,)):  # diagonal shorthand, e.g. [6, 6] for a 6x6 in-plane supercell
        m = np.diag(m)
    if m.shape == (2, 2):
        full = np.eye(3)
        full[:2, :2] = m
        m = full
    elif m.shape != (3, 3):
        raise ValueError(
            "supercell matrix must have shape (2, 2) (in-plane; z is kept) or (3, 3), or be a diagonal of "
            f"length 2 or 3, got shape {m.shape}"
        )
    if not np.all(np.isfinite(m)):
        raise ValueError(f"supercell matrix has non-finite entries: {m.tolist()}")
    rounded = np.rint(m)
    if not np.allclose(m, rounded, rtol=0.0, atol=1e-8):
        bad = m[~np.isclose(m, rounded, rtol=0.0, atol=1e-8)]
        raise ValueError(
            f"supercell matrix must contain integers only; got non-integer entries {bad.tolist()} "
            f"in {m.tolist()}"
        )
    mi = rounded.astype(np.int64)
    det = int(round(np.linalg.det(mi)))
    if det == 0:
        raise ValueError(
            f"supercell matrix {mi.tolist()} is singular (determinant 0); its rows must be linearly independent"
        )
    return mi


def make_supercell(atoms: Atoms, matrix: ArrayLike) -> Atoms:
    """Supercell of ``atoms`` with new cell vectors ``matrix @ atoms.cell``.

    Parameters
    ----------
    atoms:
        Input structure (Å). Per-atom arrays, in particular ``arrays["layer"]``, are tiled into the supercell;
        ``info`` is copied and ``info["supercell_matrix"]`` records the 3x3 matrix used (composed with any
        earlier one).
    matrix:
        Integer 2x2 matrix acting on the in-plane vectors (a1, a2), embedded as ``[[M, 0], [0, 1]]`` so the
        out-of-plane vector is kept, or a general integer 3x3 matrix. Rows are the new vectors in units of
        the old ones. A length-2 or length-3 sequence is shorthand for a diagonal matrix (``[6, 6]`` ->
        6x6 in-plane supercell).

    Returns
    -------
    ase.Atoms with ``|det(matrix)| * len(atoms)`` atoms, wrapped into the new cell and sorted by layer, then
    z, y, x (deterministic).

    Raises
    ------
    ValueError
        If the matrix is not 2x2/3x3, has non-integer entries, or is singular.
    """
    mi = supercell_matrix(matrix)
    # order="cell-major": atom i of image k is at index k * len(atoms) + i, so labels tile with np.tile.
    sc = _ase_make_supercell(atoms, mi, wrap=True, order="cell-major")
    if LAYER_KEY in atoms.arrays:
        # ase (3.29) tiles per-atom arrays itself; keep a fallback so the labels survive regardless.
        layer = sc.arrays.get(LAYER_KEY)
        if layer is None or len(layer) != len(sc):
            layer = np.tile(atoms.arrays[LAYER_KEY], len(sc) // len(atoms))
        sc.set_array(LAYER_KEY, np.asarray(layer, dtype=np.int64))
    sc.info = copy.deepcopy(atoms.info)
    previous = np.asarray(atoms.info.get("supercell_matrix", np.eye(3, dtype=np.int64)), dtype=np.int64)
    sc.info["supercell_matrix"] = (mi @ previous).tolist()
    return sort_atoms(sc)


def in_plane_width(cell: Atoms | Cell | ArrayLike) -> float:
    """Smallest perpendicular width (Å) of the cell within the plane: ``min(cell_widths(cell)[:2])``."""
    return float(np.min(cell_widths(cell)[:2]))


def to_phonopy_atoms(atoms: Atoms):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell.array,
        positions=atoms.positions,
        masses=atoms.get_masses(),
    )


def make_phonopy(unit: Atoms, supercell_matrix, symprec: float = 1e-4):
    """Phonopy object for ``unit`` (primitive = unit cell) and an integer supercell matrix (2×2 or 3×3)."""
    from phonopy import Phonopy

    m = np.asarray(supercell_matrix, dtype=int)
    if m.shape == (2,):
        m = np.diag([m[0], m[1], 1])
    elif m.shape == (2, 2):
        m = np.block([[m, np.zeros((2, 1), int)], [np.zeros((1, 2), int), np.ones((1, 1), int)]])
    if m.shape != (3, 3) or round(abs(np.linalg.det(m))) == 0:
        raise ValueError(
            f"supercell matrix {supercell_matrix!r} must be [n1, n2], a 2×2 or a 3×3 non-singular "
            "integer matrix"
        )
    return Phonopy(to_phonopy_atoms(unit), supercell_matrix=m, primitive_matrix=None, symprec=symprec)


def supercell_atoms(phonon, unit: Atoms) -> Atoms:
    """The labelling supercell as ``ase.Atoms`` with the layer index carried over from ``unit``."""
    sc = phonon.supercell
    atoms = Atoms(
        numbers=sc.numbers, positions=sc.positions, cell=sc.cell, pbc=unit.pbc, masses=sc.masses
    )
    u2u = sc.u2u_map  # supercell index of a unit-cell atom's first image -> unit-cell index
    unit_index = np.array([u2u[int(s)] for s in sc.s2u_map])
    atoms.arrays["layer"] = np.asarray(unit.arrays["layer"])[unit_index].astype(np.int64)
    return atoms


def lattice_translations(atoms: Atoms, decimals: int = 4):
    """Translations of an undisplaced periodic structure onto itself (the lattice of its unit cell inside
    a supercell), found from the atoms equivalent to atom 0: ``(perms, wraps)`` with ``perms[t, a]`` the
    atom at r_a + t and ``wraps[t, a]`` the integer cell vector W with r_perm = r_a + t − W·cell (identity
    first). A cell with no translation symmetry (a moiré cell, a rattled cell) gives only the identity."""
    cell = atoms.cell.array
    frac = atoms.positions @ np.linalg.inv(cell)
    scale = 10**decimals

    def keys(f):
        g = np.rint(f * scale).astype(np.int64)
        g[:, :2] %= scale  # periodic in plane; z is not wrapped (slab)
        return [tuple(r) for r in np.column_stack([g, atoms.numbers])]

    index = {k: a for a, k in enumerate(keys(frac))}
    perms, wraps = [], []
    for b in np.flatnonzero(atoms.numbers == atoms.numbers[0]):
        t = frac[b] - frac[0]
        t[2] = 0.0 if abs(t[2]) < 0.5 / scale else t[2]
        if t[2] != 0.0:
            continue
        perm = np.array([index.get(k, -1) for k in keys(frac + t)])
        if (perm < 0).any():
            continue
        wrap = np.rint(frac + t - frac[perm]).astype(np.int64)
        perms.append(perm)
        wraps.append(wrap)
    order = np.argsort([0 if np.array_equal(p, np.arange(len(atoms))) else 1 for p in perms], kind="stable")
    return np.array(perms)[order], np.array(wraps)[order]


def orbit_representatives(perms: np.ndarray) -> np.ndarray:
    """The lowest atom index of each orbit under the translations ``perms`` (T, N) of :func:`lattice_translations`,
    ascending: the atoms whose rows of Φ or dH/du are computed (the rest follow by translation)."""
    return np.unique(np.asarray(perms).min(axis=0))


def primitive_cell(atoms: Atoms, decimals: int = 4) -> tuple[Atoms, np.ndarray]:
    """(primitive cell, ``orbit``) of an undisplaced periodic slab: the cell spanned by the two shortest
    non-parallel lattice translations of :func:`lattice_translations` (a3 kept), whose atoms are each orbit's
    first atom, and ``orbit[a]`` the primitive atom that supercell atom ``a`` is an image of. Per-atom arrays
    (``layer``) are carried over. A cell without translation symmetry is its own primitive cell (orbit = identity).
    A pattern that is the same on every image (a rigid layer translation) then has Φv on the primitive cell equal
    to Φv on the supercell at any image: the whole supercell's Hessian–vector product for the price of a few atoms."""
    perms, wraps = lattice_translations(atoms, decimals)
    cell = atoms.cell.array
    orbit = perms.min(axis=0)  # each atom's orbit named by its lowest index
    reps = orbit_representatives(perms)
    if len(perms) == 1:
        return atoms.copy(), orbit
    t = atoms.positions[perms[:, 0]] - atoms.positions[0] + wraps[:, 0] @ cell  # Cartesian translations (Å)
    frac = t @ np.linalg.inv(cell)
    frac[:, :2] -= np.rint(frac[:, :2])  # minimal image in plane
    t = frac @ cell
    norms = np.linalg.norm(t[:, :2], axis=1)
    order = [i for i in np.argsort(norms, kind="stable") if norms[i] > 10.0**-decimals]
    v1 = t[order[0]]
    area = abs(np.cross(cell[0], cell[1])[2]) / len(perms)
    v2 = next(t[i] for i in order[1:] if abs(np.cross(v1, t[i])[2]) > 1e-6 * area)
    if abs(abs(np.cross(v1, v2)[2]) - area) > 1e-6 * area:
        raise ValueError(f"the two shortest lattice translations span {abs(np.cross(v1, v2)[2]):.4f} Å², not the "
                         f"primitive area {area:.4f} Å² ({len(perms)} translations): not a simple lattice")
    if np.cross(v1, v2)[2] < 0:
        v2 = -v2
    prim = Atoms(numbers=atoms.numbers[reps], positions=atoms.positions[reps], cell=[v1, v2, cell[2]],
                 pbc=atoms.pbc, masses=atoms.get_masses()[reps])
    for key, value in atoms.arrays.items():
        if key not in prim.arrays and len(value) == len(atoms):
            prim.set_array(key, np.asarray(value)[reps])
    prim.wrap()
    return prim, np.searchsorted(reps, orbit)
