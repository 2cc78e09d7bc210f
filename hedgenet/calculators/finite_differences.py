"""Finite-difference routes behind every calculator's ``force_constants`` and ``block_derivatives``: the
same code for a reference solver and a model, so "model vs reference" differs only in the calculator.

* force constants Φ (eV/Å²): phonopy's symmetry-reduced ± displacements of the supercell, forces from
  the calculator (no sum rule imposed here: :func:`hedgenet.physics.phonons.enforce_acoustic_sum_rule`);
* dH/du (eV/Å), dS/du (1/Å): central differences of ``calc.predict_hamiltonian`` at ± ``delta_A``. In a
  supercell of a crystal only the atoms of one unit cell are displaced; the others follow by lattice
  translation (exact, and ``n_cells`` times fewer calls), unless ``use_translations=False``.

Blocks are always expressed on the edge list of the undisplaced structure; an edge of a displaced structure
that is not on it (crossing the cutoff) is dropped, an edge missing there counts as 0.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from hedgenet.orbitals.blocks import BlockDerivatives, blocks_on_edges, edge_positions
from hedgenet.structures.supercell import (
    lattice_translations,
    make_phonopy,
    orbit_representatives,
    supercell_atoms,
)


def finite_difference_force_constants(calc, unit: Atoms, supercell_matrix, distance_A: float = 0.01,
                                      progress: bool = False):
    """Phonopy object with force constants (eV/Å²) from ``calc``'s forces at ± ``distance_A`` (Å)
    symmetry-reduced displacements of the supercell of ``unit``. ``calc``: any ASE calculator
    (a :class:`hedgenet.calculators.ReferenceCalculator` or :class:`~hedgenet.calculators.ModelCalculator`).
    No sum rule is imposed here: see :func:`enforce_acoustic_sum_rule`."""
    if distance_A <= 0:
        raise ValueError(f"displacement distance must be > 0 Å, got {distance_A}")
    phonon = make_phonopy(unit, supercell_matrix)
    phonon.generate_displacements(distance=distance_A, is_plusminus=True)
    base = supercell_atoms(phonon, unit)
    cells = phonon.supercells_with_displacements
    if progress:
        from tqdm import tqdm

        cells = tqdm(cells, desc="force constants", unit="disp")
    forces = []
    for sc in cells:
        displaced = base.copy()
        displaced.positions = sc.positions
        displaced.calc = calc
        forces.append(np.array(displaced.get_forces(), dtype=float))
    phonon.forces = np.array(forces)
    phonon.produce_force_constants()
    return phonon


def _translation_edge_maps(edge_index, cell_shift, perms, wraps, n_atoms):
    """For every translation t: position of the translated edge (T i, T j, R + W_j − W_i) of each edge."""
    maps = []
    for perm, wrap in zip(perms, wraps):
        i, j = edge_index
        new_index = np.stack([perm[i], perm[j]])
        new_shift = cell_shift + wrap[j] - wrap[i]
        where = edge_positions(new_index, new_shift, edge_index, cell_shift, n_atoms)
        if (where < 0).any():
            raise RuntimeError("a translated block edge is missing from the edge list: the structure is not periodic "
                               "under this translation")
        maps.append(where)
    return maps


def finite_difference_block_derivatives(calc, atoms: Atoms, delta_A: float = 0.005, use_translations: bool = True,
                                        progress: bool = False) -> BlockDerivatives:
    """dH/du and dS/du by central differences of ``calc.predict_hamiltonian`` (eV/Å, 1/Å).

    With ``use_translations`` (and ``atoms`` an undisplaced supercell) only one atom per translation orbit
    is displaced: 6·N/n_cells solver calls instead of 6·N."""
    if delta_A <= 0:
        raise ValueError(f"displacement delta_A must be > 0 Å, got {delta_A}")
    b0 = calc.predict_hamiltonian(atoms)
    ei, shift = b0.edge_index, b0.cell_shift
    n = len(atoms)
    todo = list(range(n))
    perms = wraps = None
    if use_translations:
        perms, wraps = lattice_translations(atoms)
        todo = orbit_representatives(perms).tolist()
    dH = np.zeros((n, 3) + b0.H.shape)
    dS = np.zeros_like(dH)
    iterator = [(a, x) for a in todo for x in range(3)]
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="dH/du", unit="disp")
    for a, x in iterator:
        hs = []
        for sign in (1.0, -1.0):
            displaced = atoms.copy()
            displaced.positions[a, x] += sign * delta_A
            hs.append(blocks_on_edges(calc.predict_hamiltonian(displaced), ei, shift))
        dH[a, x] = (hs[0][0] - hs[1][0]) / (2 * delta_A)
        dS[a, x] = (hs[0][1] - hs[1][1]) / (2 * delta_A)
    if perms is not None:
        maps = _translation_edge_maps(ei, shift, perms, wraps, n)
        for a in todo:
            for perm, where in zip(perms, maps):
                b = perm[a]
                if b != a:
                    dH[b][:, where] = dH[a]
                    dS[b][:, where] = dS[a]
    return BlockDerivatives(b0, dH, dS)
