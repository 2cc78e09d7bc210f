"""Orbital blocks H_ij(R), S_ij(R) as edge lists, Γ-point splitting by minimum image, and folding.

``H_ij(R)`` is the block between the orbitals of atom i in cell 0 and atom j in cell R (eV), shape
(n_orb(Z_i), n_orb(Z_j)), stored padded to (n_max, n_max). Edges list every ordered pair (i, j, R) whose
distance |r_j + R·cell − r_i| is within the block cutoff (Å), both directions, and the self edges
(i, i, 0) that carry the on-site blocks. Hermiticity ``H_ij(R) = H_ji(−R)^T`` holds exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from hedgenet.orbitals.cells import (
    CellTooSmallError,
    cell_widths,
    check_cell_for_cutoff,
)
from hedgenet.orbitals.layout import OrbitalLayout

__all__ = ["BlockDerivatives", "BlockSet", "CellTooSmallError", "block_edges", "blocks_on_edges", "edge_positions", "cell_widths", "check_cell_for_cutoff", "eigen_error_of_truncation",
           "split_gamma_matrices"]


@dataclass
class BlockSet:
    """Orbital blocks of one structure in hedgenet's convention (e3nn orbital order, eV)."""

    edge_index: np.ndarray  # (2, E) int64, i -> j
    cell_shift: np.ndarray  # (E, 3) int64, R in units of the lattice vectors
    H: np.ndarray  # (E, n_max, n_max) float64, eV
    S: np.ndarray  # (E, n_max, n_max) float64, dimensionless
    n_orb: np.ndarray  # (N,) orbitals per atom

    @property
    def n_edges(self) -> int:
        return self.edge_index.shape[1]

    def reverse_index(self) -> np.ndarray:
        """For every edge e = (i, j, R), the index of (j, i, −R)."""
        keys = {
            (int(i), int(j), *map(int, r)): e
            for e, (i, j, r) in enumerate(zip(*self.edge_index, self.cell_shift))
        }
        return np.array(
            [keys[(int(j), int(i), *map(int, -r))] for i, j, r in zip(*self.edge_index, self.cell_shift)]
        )

    def fold(self, kpoint_frac=(0.0, 0.0, 0.0), which: str = "H") -> np.ndarray:
        """M(k) = Σ_R e^{2πi k·R} M(R) for k in fractional coordinates of the (super)cell's reciprocal
        lattice; at k = 0 this is the Γ-point matrix the solver diagonalised (minus truncated blocks)."""
        from hedgenet.orbitals.bloch import bloch_matrix

        blocks = self.H if which == "H" else self.S
        return bloch_matrix(blocks, self.edge_index, self.cell_shift, self.n_orb, kpoint_frac)


def block_edges(atoms: Atoms, block_cutoff: float):
    """All (i, j, R) with |r_j + R − r_i| ≤ cutoff, plus self edges (i, i, 0); sorted by (i, j, R).

    Returns ``edge_index (2, E)``, ``cell_shift (E, 3)`` and distances ``(E,)`` in Å.
    """
    i, j, shift, dist = neighbor_list("ijSd", atoms, block_cutoff)
    n = len(atoms)
    i = np.concatenate([np.arange(n), i])
    j = np.concatenate([np.arange(n), j])
    shift = np.concatenate([np.zeros((n, 3), dtype=np.int64), shift.astype(np.int64)])
    dist = np.concatenate([np.zeros(n), dist])
    order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], j, i))
    return np.stack([i[order], j[order]]).astype(np.int64), shift[order], dist[order]


def split_gamma_matrices(
    atoms: Atoms,
    H_gamma: np.ndarray,
    S_gamma: np.ndarray,
    layout: OrbitalLayout,
    block_cutoff: float,
) -> tuple[BlockSet, dict]:
    """Split Γ-point supercell matrices (e3nn order, eV) into blocks H_ij(R) by the minimum-image rule.

    A Γ-point matrix is Σ_R H_ij(R) over all images. When every periodic width exceeds 2 × cutoff at
    most one image of j lies within the cutoff of i, and the whole Γ element is assigned to it. Pairs
    with no image inside the cutoff are dropped: that is the truncation, and its size is returned in
    ``stats`` (largest dropped |H| in eV and |S|), so it is measured rather than assumed.
    """
    check_cell_for_cutoff(atoms, block_cutoff)
    numbers = atoms.numbers
    offsets = layout.orbital_offsets(numbers)
    n_orb = np.diff(offsets)
    n_max = int(n_orb.max())
    H_gamma = 0.5 * (H_gamma + H_gamma.T)
    S_gamma = 0.5 * (S_gamma + S_gamma.T)
    edge_index, cell_shift, dist = block_edges(atoms, block_cutoff)
    E = edge_index.shape[1]
    H = np.zeros((E, n_max, n_max))
    S = np.zeros((E, n_max, n_max))
    kept = np.zeros((len(numbers), len(numbers)), dtype=bool)
    for e in range(E):
        i, j = edge_index[:, e]
        si, sj = slice(offsets[i], offsets[i + 1]), slice(offsets[j], offsets[j + 1])
        H[e, : n_orb[i], : n_orb[j]] = H_gamma[si, sj]
        S[e, : n_orb[i], : n_orb[j]] = S_gamma[si, sj]
        kept[i, j] = True
    # Size of what was truncated: atom pairs none of whose images lies within the cutoff.
    atom_of_orb = np.repeat(np.arange(len(numbers)), n_orb)
    dropped = ~kept[atom_of_orb][:, atom_of_orb]
    stats = {
        "block_cutoff_A": float(block_cutoff),
        "n_edges": int(E),
        "max_dropped_abs_H_eV": float(np.abs(H_gamma[dropped]).max()) if dropped.any() else 0.0,
        "max_dropped_abs_S": float(np.abs(S_gamma[dropped]).max()) if dropped.any() else 0.0,
    }
    return BlockSet(edge_index, cell_shift, H, S, n_orb.astype(np.int64)), stats


def eigen_error_of_truncation(
    blocks: BlockSet, orbital_energies_eV: np.ndarray, window_eV: tuple[float, float] | None = None
) -> float:
    """Max |ε_folded − ε_solver| (eV) of the generalized eigenvalues of the refolded (H, S).

    ``window_eV`` restricts the comparison to solver eigenvalues inside (lo, hi)."""
    from scipy.linalg import eigh

    w = eigh(blocks.fold(which="H"), blocks.fold(which="S"), eigvals_only=True)
    ref = np.sort(orbital_energies_eV)
    diff = np.abs(w - ref)
    if window_eV is not None:
        sel = (ref > window_eV[0]) & (ref < window_eV[1])
        diff = diff[sel]
    return float(diff.max())


def _edge_keys(edge_index: np.ndarray, cell_shift: np.ndarray, n_atoms: int) -> np.ndarray:
    """One int64 per edge (i, j, R) for |R| < 500."""
    r = np.asarray(cell_shift, dtype=np.int64) + 500
    return ((edge_index[0] * n_atoms + edge_index[1]) * 1000 + r[:, 0]) * 1000 * 1000 + r[:, 1] * 1000 + r[:, 2]


def edge_positions(edge_index, cell_shift, target_index, target_shift, n_atoms: int) -> np.ndarray:
    """Position of every edge of (edge_index, cell_shift) in the target list, −1 where absent."""
    src = _edge_keys(np.asarray(edge_index), cell_shift, n_atoms)
    dst = _edge_keys(np.asarray(target_index), target_shift, n_atoms)
    order = np.argsort(dst)
    pos = np.searchsorted(dst[order], src)
    pos = np.clip(pos, 0, len(dst) - 1)
    found = dst[order][pos] == src
    return np.where(found, order[pos], -1)


def blocks_on_edges(blocks: BlockSet, edge_index, cell_shift) -> tuple[np.ndarray, np.ndarray]:
    """H and S of ``blocks`` re-expressed on the given edge list (zeros for edges ``blocks`` lacks)."""
    n_atoms = len(blocks.n_orb)
    where = edge_positions(edge_index, cell_shift, blocks.edge_index, blocks.cell_shift, n_atoms)
    shape = (len(where),) + blocks.H.shape[1:]
    H, S = np.zeros(shape), np.zeros(shape)
    ok = where >= 0
    H[ok], S[ok] = blocks.H[where[ok]], blocks.S[where[ok]]
    return H, S


@dataclass
class BlockDerivatives:
    """dH/du (eV/Å) and dS/du (1/Å) on the edges of the undisplaced structure.

    ``dH[a, α, e]`` is the derivative of block e = (i, j, R) with respect to the Cartesian displacement
    u_aα of atom ``atoms[a]``; arrays (N, 3, E, n_max, n_max). ``blocks0`` holds H and S at u = 0."""

    blocks0: BlockSet
    dH: np.ndarray
    dS: np.ndarray

    def first_order(self, u: np.ndarray) -> BlockSet:
        """H₀ + Σ_aα dH/du_aα · u_aα (and S likewise) for displacements ``u`` (N, 3) Å: the Hamiltonian of
        linear electron–phonon coupling, on the undisplaced edge list."""
        u = np.asarray(u, dtype=float)
        b = self.blocks0
        return BlockSet(b.edge_index, b.cell_shift, b.H + np.einsum("ax,axenm->enm", u, self.dH),
                        b.S + np.einsum("ax,axenm->enm", u, self.dS), b.n_orb)
