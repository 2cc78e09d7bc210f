"""Band unfolding of supercell eigenstates onto the primitive Brillouin zone with localized orbitals.

A supercell of ``N_c`` primitive cells (lattice M·A, ``M`` integer) is solved at a primitive wave vector k
(which is also a supercell wave vector): ``H(k) C_J = ε_J S(k) C_J`` with ``C_J† S(k) C_J = 1``, Bloch sums
in the lattice gauge of :func:`hedgenet.orbitals.bloch.bloch_matrix`. Each supercell atom a is primitive site
s(a) in primitive cell R_a (from the *undisplaced* supercell). A primitive Bloch state of wave vector k
has coefficients ∝ e^{ik·R_a} on the images of a site, so the spectral weight of state J at k is

    W_J(k) = (1/N_c) Re Σ_{s,μ} conj(A_{sμ}) B_{sμ},   A_{sμ} = Σ_{a∈s} e^{−ik·R_a} C_{aμ,J},
                                                       B_{sμ} = Σ_{a∈s} e^{−ik·R_a} (S(k) C_J)_{aμ}

(Mulliken-type projection for a non-orthogonal basis: Σ_J W_J(k) = number of primitive orbitals, and
W ∈ {0, 1} for an undisplaced supercell). The spectral function is A(k, E) = Σ_J W_J(k) δ(E − ε_J).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from hedgenet.orbitals.bloch import bloch_matrix, generalized_eigh
from hedgenet.orbitals.blocks import BlockSet


@dataclass
class SupercellMap:
    """Supercell → primitive cell: ``site`` (N,) primitive site of every supercell atom, ``R`` (N, 3)
    primitive lattice vector (Å) of its cell, ``matrix`` M (3, 3) with supercell = M · primitive cell,
    ``n_cells`` = |det M|, and the primitive cell (Å)."""

    site: np.ndarray
    R: np.ndarray
    matrix: np.ndarray
    n_cells: int
    primitive_cell: np.ndarray

    @classmethod
    def build(cls, supercell: Atoms, primitive: Atoms, tol: float = 1e-3) -> "SupercellMap":
        """Map an undisplaced supercell onto ``primitive`` (ValueError if it is not a supercell of it)."""
        A = primitive.cell.array
        M = supercell.cell.array @ np.linalg.inv(A)
        Mi = np.rint(M)
        if np.abs(M - Mi).max() > 1e-6:
            raise ValueError("the supercell's lattice is not an integer multiple of the primitive cell's; "
                             "unfolding needs the undisplaced supercell built from this primitive cell")
        frac = supercell.positions @ np.linalg.inv(A)
        pfrac = primitive.positions @ np.linalg.inv(A)
        site = np.full(len(supercell), -1)
        R = np.zeros((len(supercell), 3))
        for s, (pf, z) in enumerate(zip(pfrac, primitive.numbers)):
            d = frac - pf
            n = np.rint(d)
            n[:, 2] = 0  # slabs: no periodic images along z
            ok = (np.linalg.norm((d - n) @ A, axis=1) < tol) & (supercell.numbers == z)
            site[ok] = s
            R[ok] = n[ok] @ A
        if (site < 0).any():
            raise ValueError(f"{int((site < 0).sum())} supercell atoms match no primitive site: pass the "
                             "undisplaced supercell (displacements are applied to the Hamiltonian, not the map)")
        n_cells = int(round(abs(np.linalg.det(Mi))))
        counts = np.bincount(site, minlength=len(primitive))
        if not np.all(counts == n_cells):
            raise ValueError(f"every primitive site must have {n_cells} images, got {counts.tolist()}")
        return cls(site, R, Mi, n_cells, A)

    def supercell_kfrac(self, k_cart: np.ndarray) -> np.ndarray:
        """Fractional supercell coordinates of a Cartesian wave vector (1/Å, with the 2π)."""
        return (self.matrix @ self.primitive_cell) @ np.asarray(k_cart) / (2 * np.pi)


def primitive_kpoints_cart(primitive_cell: np.ndarray, kfrac) -> np.ndarray:
    """Cartesian k (1/Å, 2π included) of fractional primitive reciprocal coordinates (n, 3)."""
    B = 2 * np.pi * np.linalg.inv(primitive_cell).T  # rows b_i, a_i·b_j = 2π δ_ij
    return np.atleast_2d(np.asarray(kfrac, dtype=float)) @ B


def _primitive_orbital_map(n_orb, cmap: SupercellMap) -> tuple[np.ndarray, np.ndarray, int]:
    """(primitive orbital of every supercell orbital, atom of every supercell orbital, number of primitive
    orbitals)."""
    n_orb = np.asarray(n_orb)
    atom_of_orb = np.repeat(np.arange(len(n_orb)), n_orb)
    offsets = np.concatenate([[0], np.cumsum(n_orb)])
    orb_in_atom = np.arange(offsets[-1]) - offsets[atom_of_orb]
    n_prim_orb = np.zeros(cmap.site.max() + 1, dtype=int)
    n_prim_orb[cmap.site] = n_orb
    prim_off = np.concatenate([[0], np.cumsum(n_prim_orb)])
    return prim_off[cmap.site[atom_of_orb]] + orb_in_atom, atom_of_orb, int(prim_off[-1])


def unfolded_states(blocks: BlockSet, cmap: SupercellMap, k_cart, window_eV=None) -> tuple[np.ndarray, np.ndarray]:
    """Supercell eigenvalues ε_J (eV) and their weights W_J(k) at the primitive wave vector ``k_cart``;
    only the states with lo < ε ≤ hi for ``window_eV=(lo, hi)`` (partial eigensolve), else all.

    The plain implementation, one k at a time; :class:`Unfolder` gives the same numbers (to ≈ 1e-12) for
    many k of one block set at a fraction of the cost."""
    Hk, Sk = bloch_pair(blocks, cmap.supercell_kfrac(k_cart))
    eps, C = generalized_eigh(Hk, Sk, window_eV=window_eV)
    return eps, scatter_weights(blocks, cmap, C, Sk @ C, k_cart)


def bloch_pair(blocks: BlockSet, kfrac) -> tuple[np.ndarray, np.ndarray]:
    """H(k), S(k) (S symmetrised) at supercell wave vector ``kfrac``, one :func:`bloch_matrix` each."""
    Hk = bloch_matrix(blocks.H, blocks.edge_index, blocks.cell_shift, blocks.n_orb, kfrac)
    Sk = bloch_matrix(blocks.S, blocks.edge_index, blocks.cell_shift, blocks.n_orb, kfrac)
    return Hk, 0.5 * (Sk + Sk.conj().T)


def scatter_weights(blocks: BlockSet, cmap: SupercellMap, C: np.ndarray, SC: np.ndarray, k_cart) -> np.ndarray:
    """W_J(k) of the eigenvectors ``C`` (``SC`` = S(k) C) by scatter-adding every supercell orbital onto its
    primitive orbital (module docstring)."""
    target, atom_of_orb, n_prim = _primitive_orbital_map(blocks.n_orb, cmap)
    phase = np.exp(-1j * (cmap.R[atom_of_orb] @ np.asarray(k_cart)))[:, None]
    A = np.zeros((n_prim, C.shape[1]), dtype=complex)
    B = np.zeros_like(A)
    np.add.at(A, target, phase * C)
    np.add.at(B, target, phase * SC)
    return np.real(np.sum(A.conj() * B, axis=0)) / cmap.n_cells


class Unfolder:
    """:func:`unfolded_states` of one block set at many k: the Bloch sums come from
    :class:`~hedgenet.orbitals.bloch.BlochSums` (the blocks scattered once, not once per k and matrix), and
    the projection onto primitive Bloch states is one (n_prim_orb × n) phase matrix product instead of a
    scatter-add. The eigensolve is the same windowed one."""

    def __init__(self, blocks: BlockSet, cmap: SupercellMap):
        from hedgenet.orbitals.bloch import BlochSums

        self.cmap = cmap
        self.sums = BlochSums(blocks.edge_index, blocks.cell_shift, blocks.n_orb, blocks.H.shape[-1], blocks.H, blocks.S)
        self.target, atom_of_orb, self.n_prim = _primitive_orbital_map(blocks.n_orb, cmap)
        self.R = cmap.R[atom_of_orb]

    def matrices(self, k_cart) -> tuple[np.ndarray, np.ndarray]:
        """H(k), S(k) (S symmetrised) at the primitive wave vector ``k_cart``."""
        Hk, Sk = self.sums.at(self.cmap.supercell_kfrac(k_cart))
        return Hk, 0.5 * (Sk + Sk.conj().T)

    def weights(self, C: np.ndarray, SC: np.ndarray, k_cart) -> np.ndarray:
        """W_J(k) of the eigenvectors ``C`` (columns) with ``SC`` = S(k) C (module docstring)."""
        U = np.zeros((self.n_prim, len(self.target)), dtype=complex)
        U[self.target, np.arange(len(self.target))] = np.exp(-1j * (self.R @ np.asarray(k_cart)))
        A, B = U @ C, U @ SC
        return np.real(np.sum(A.conj() * B, axis=0)) / self.cmap.n_cells

    def states(self, k_cart, window_eV=None) -> tuple[np.ndarray, np.ndarray]:
        """As :func:`unfolded_states`."""
        Hk, Sk = self.matrices(k_cart)
        eps, C = generalized_eigh(Hk, Sk, window_eV=window_eV)
        return eps, self.weights(C, Sk @ C, k_cart)


def spectral_function(eps: np.ndarray, weights: np.ndarray, energies_eV: np.ndarray, sigma_eV: float = 0.02):
    """A(E) = Σ_J W_J g(E − ε_J) with a normalized Gaussian g of width ``sigma_eV`` (states/eV)."""
    d = (np.asarray(energies_eV)[:, None] - np.asarray(eps)[None, :]) / sigma_eV
    return (np.exp(-0.5 * d**2) @ np.asarray(weights)) / (sigma_eV * np.sqrt(2 * np.pi))


def charge_neutrality_level(blocks: BlockSet, cmap: SupercellMap, numbers, kfrac=(1 / 3, 1 / 3, 0.0)) -> float:
    """Midpoint (eV) between the highest occupied and lowest empty supercell state at the primitive wave
    vector ``kfrac`` (default K, where graphene's Dirac states sit) for the neutral valence electron count."""
    from hedgenet.orbitals.layout import valence_electron_count

    n_el = valence_electron_count(numbers)
    k = primitive_kpoints_cart(cmap.primitive_cell, [kfrac])[0]
    kf = cmap.supercell_kfrac(k)
    Hk = bloch_matrix(blocks.H, blocks.edge_index, blocks.cell_shift, blocks.n_orb, kf)
    Sk = bloch_matrix(blocks.S, blocks.edge_index, blocks.cell_shift, blocks.n_orb, kf)
    w = generalized_eigh(Hk, Sk, eigvals_only=True)
    n_occ = n_el // 2
    return float(0.5 * (w[n_occ - 1] + w[n_occ]))
