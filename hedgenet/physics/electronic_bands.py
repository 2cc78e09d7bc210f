"""Electronic bands of a cell along a path of its hexagonal Brillouin zone, from orbital blocks (dense
generalized eigensolves; :mod:`hedgenet.physics.sparse_bands` for cells too large for them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hedgenet.orbitals.bloch import band_energies
from hedgenet.orbitals.blocks import BlockSet
from hedgenet.physics.phonons import path_qpoints


@dataclass
class ElectronicBands:
    """``distances`` (n_k,) 1/Å along the path, ``energies_eV`` (n_k, n_bands), ``ticks`` distances of the
    labelled points and their ``labels``, ``kpoints_frac`` (n_k, 3), the number of occupied bands of the
    neutral cell ``n_occupied``, the charge-neutrality level ``e_cnp_eV`` (midpoint between the highest occupied
    and the lowest empty band over the path) and ``gap_eV`` between them on the path (≤ 0: a metal)."""

    distances: np.ndarray
    energies_eV: np.ndarray
    ticks: np.ndarray
    labels: list
    kpoints_frac: np.ndarray
    n_occupied: int
    e_cnp_eV: float
    gap_eV: float


def electronic_bands(blocks: BlockSet, cell, numbers, path: str = "GMKG", npoints: int = 51) -> ElectronicBands:
    """Bands of the cell ``cell`` (3×3 Å) with atoms ``numbers`` along ``path`` (:func:`path_qpoints` labels),
    ``npoints`` per segment."""
    from hedgenet.orbitals.layout import valence_electron_count

    segments, _, labels = path_qpoints(path, npoints)
    recip = 2 * np.pi * np.linalg.inv(np.asarray(cell, dtype=float)).T
    kpts, dist, ticks, start = [], [], [0.0], 0.0
    for seg in segments:
        seg = np.asarray(seg, dtype=float)
        steps = np.linalg.norm(np.diff(seg @ recip, axis=0), axis=1)
        d = start + np.concatenate([[0.0], np.cumsum(steps)])
        kpts.append(seg)
        dist.append(d)
        start = float(d[-1])
        ticks.append(start)
    kpts, dist = np.concatenate(kpts), np.concatenate(dist)
    eps = band_energies(blocks.H, blocks.S, blocks.edge_index, blocks.cell_shift, blocks.n_orb, kpts)
    n_occ = valence_electron_count(numbers) // 2
    if not 0 < n_occ < eps.shape[1]:
        return ElectronicBands(dist, eps, np.array(ticks), labels, kpts, n_occ, float("nan"), float("nan"))
    top, bottom = float(eps[:, n_occ - 1].max()), float(eps[:, n_occ].min())
    return ElectronicBands(dist, eps, np.array(ticks), labels, kpts, n_occ, 0.5 * (top + bottom), bottom - top)
