"""A layered structure from a file ASE reads (POSCAR/CONTCAR, extxyz, CIF, xsf, …): the ``file`` material.

The file gives the unit cell as it is (lengths in Å; no relaxation unless the material's ``relax`` list asks
for one). What hedgenet needs of it, and checks with an error that names the fix:

- a slab: lattice vectors a1, a2 in the xy plane and a3 along z, with vacuum along z (at least
  :data:`MIN_VACUUM_A` between the periodic images of the slab; ``vacuum=`` re-centres the slab in a cell of
  that much vacuum instead);
- no two atoms closer than :data:`MIN_DISTANCE_A` (periodic images included);
- a layer index per atom: the file's own (an extxyz ``layer`` column) or detected from covalent bonds
  (:mod:`hedgenet.structures.layers`).

Whether the reference solver or a model knows the elements is checked by the command that uses them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from hedgenet.structures._common import LAYER_KEY
from hedgenet.structures.layers import detect_layers

MIN_VACUUM_A = 8.0
"""Å of vacuum along z a slab needs between its periodic images (the builders use 20 Å)."""

MIN_DISTANCE_A = 0.5
"""Å: two atoms closer than this are the same atom written twice (or a unit mix-up, e.g. nm for Å)."""


def structure_from_file(path: str, vacuum: float | None = None) -> Atoms:
    """The unit cell in ``path`` (any format ``ase.io.read`` knows; the last image of a trajectory) as a slab
    with ``arrays["layer"]`` (module docstring). ``vacuum`` (Å): re-centre the slab along z with this much
    vacuum (e.g. for a file of a bulk-like cell); None keeps the file's cell."""
    import ase.io

    p = Path(str(path)).expanduser()
    fix = "Fix: material.path=<a structure file ASE reads: POSCAR, extxyz, CIF, …>"
    if not p.is_file():
        raise ValueError(f"material.path={path}: no such file. {fix}")
    try:
        atoms = ase.io.read(p)
    except Exception as err:  # ASE raises many types for unreadable files
        raise ValueError(f"material.path={path}: ASE cannot read it ({type(err).__name__}: {err}). {fix}") from None
    if isinstance(atoms, list):
        atoms = atoms[-1]
    if len(atoms) == 0:
        raise ValueError(f"material.path={path}: the file holds no atoms. {fix}")
    cell = atoms.cell.array
    if atoms.cell.rank < 2 or np.abs(cell[:2, 2]).max() > 1e-6 or np.linalg.norm(cell[2, :2]) > 1e-6:
        raise ValueError(
            f"material.path={path}: hedgenet needs a slab cell with a1, a2 in the xy plane and a3 along z, got "
            f"{np.round(cell, 4).tolist()}. Fix: rotate the cell so (e.g. ase.build.niggli_reduce, then a "
            "standard orientation) and write it again")
    if vacuum is not None:
        if float(vacuum) < MIN_VACUUM_A:
            raise ValueError(f"material.params.vacuum={vacuum}: at least {MIN_VACUUM_A} Å of vacuum. Fix: e.g. 20")
        if atoms.cell.rank < 3:
            atoms.cell[2] = [0.0, 0.0, 1.0]
        atoms.center(vacuum=float(vacuum) / 2, axis=2)
    c = atoms.cell.array[2, 2] if atoms.cell.rank == 3 else 0.0
    z = atoms.positions[:, 2]
    gap = c - (z.max() - z.min())
    if gap < MIN_VACUUM_A:
        raise ValueError(
            f"material.path={path}: no vacuum along z (the atoms span {z.max() - z.min():.2f} Å of a {c:.2f} Å "
            f"cell, {gap:.2f} Å free): hedgenet treats layered slabs. Fix: add vacuum with material.params.vacuum=20, "
            f"or write the slab with ≥ {MIN_VACUUM_A:g} Å of vacuum along z")
    atoms.pbc = True
    atoms.wrap()
    _check_distances(atoms, path)
    layer = atoms.arrays.get(LAYER_KEY)
    if layer is None or len(layer) != len(atoms):
        layer = detect_layers(atoms)
    atoms.set_array(LAYER_KEY, np.asarray(layer, dtype=np.int64))
    atoms.info.update(builder="file", source_file=str(p))
    return atoms


def _check_distances(atoms: Atoms, path) -> None:
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, MIN_DISTANCE_A)
    if len(i):
        k = int(np.argmin(d))
        raise ValueError(
            f"material.path={path}: atoms {int(i[k])} and {int(j[k])} ({atoms[int(i[k])].symbol}, "
            f"{atoms[int(j[k])].symbol}) are {d[k]:.3f} Å apart ({len(i) // 2} such pairs; < {MIN_DISTANCE_A} Å): "
            "an atom written twice or lengths not in Å. Fix: remove the duplicates or convert the file to Å")


def file_stem(path: str) -> str:
    """A material name from a file: its stem (anything but letters, digits, '-' and '_' as '_') and the first 8
    hex digits of the SHA-256 of its content, so that an edited file is a new material (new dataset, new
    pipeline stages) and never reuses what was labelled for the old one."""
    import hashlib

    p = Path(str(path)).expanduser()
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in (p.name.split(".")[0] or "structure"))
    return f"{stem}-{hashlib.sha256(p.read_bytes()).hexdigest()[:8]}" if p.is_file() else stem


def label_supercell_for(path: str, block_cutoff_A: float) -> list[int]:
    """[n, n]: the smallest labelling supercell of the file's cell whose perpendicular in-plane widths exceed
    twice the block cutoff (the minimum-image rule the reference's blocks need). [1, 1] when the file cannot
    be read: :func:`structure_from_file` then says why, with the fix."""
    import ase.io

    try:
        atoms = ase.io.read(Path(str(path)).expanduser())
        atoms = atoms[-1] if isinstance(atoms, list) else atoms
        a1, a2 = atoms.cell.array[0, :2], atoms.cell.array[1, :2]
        area = abs(a1[0] * a2[1] - a1[1] * a2[0])
        width = area / max(np.linalg.norm(a1), np.linalg.norm(a2))
    except Exception:  # noqa: BLE001 - any unreadable file: the builder reports it
        return [1, 1]
    if width <= 0:
        return [1, 1]
    return [int(np.floor(2 * float(block_cutoff_A) / width)) + 1] * 2
