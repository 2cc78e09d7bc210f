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

A twisted bilayer is a supercell of neither layer's primitive cell as a whole, but of each layer's alone:
:func:`layer_primitive_cell` finds one layer's primitive cell from the atoms (its in-plane lattice, rotated
with the layer) and ``SupercellMap.build(..., atoms=<that layer's indices>)`` maps only that layer's atoms;
the other layer's orbitals stay out of the sums above, so W_J(k) is the weight of state J on the chosen
layer's Bloch state k (Σ_J W_J(k) = that layer's primitive orbitals; W < 1 where the layers hybridize).
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
    def build(cls, supercell: Atoms, primitive: Atoms, tol: float = 1e-3, atoms=None) -> "SupercellMap":
        """Map an undisplaced supercell onto ``primitive`` (ValueError if it is not a supercell of it).
        ``atoms``: indices of the supercell atoms to map (one layer of a twisted bilayer onto that layer's
        primitive cell); the others get site −1 and stay out of the unfolding."""
        A = primitive.cell.array
        M = supercell.cell.array @ np.linalg.inv(A)
        Mi = np.rint(M)
        if np.abs(M - Mi).max() > 1e-6:
            raise ValueError("the supercell's lattice is not an integer multiple of the primitive cell's; "
                             "unfolding needs the undisplaced supercell built from this primitive cell")
        frac = supercell.positions @ np.linalg.inv(A)
        pfrac = primitive.positions @ np.linalg.inv(A)
        chosen = np.zeros(len(supercell), dtype=bool)
        chosen[np.arange(len(supercell)) if atoms is None else np.asarray(atoms, dtype=int)] = True
        site = np.full(len(supercell), -1)
        R = np.zeros((len(supercell), 3))
        for s, (pf, z) in enumerate(zip(pfrac, primitive.numbers)):
            d = frac - pf
            n = np.rint(d)
            n[:, 2] = 0  # slabs: no periodic images along z
            ok = (np.linalg.norm((d - n) @ A, axis=1) < tol) & (supercell.numbers == z) & chosen
            site[ok] = s
            R[ok] = n[ok] @ A
        if (site[chosen] < 0).any():
            raise ValueError(f"{int((site[chosen] < 0).sum())} supercell atoms match no primitive site: pass the "
                             "undisplaced supercell (displacements are applied to the Hamiltonian, not the map)")
        n_cells = int(round(abs(np.linalg.det(Mi))))
        counts = np.bincount(site[chosen], minlength=len(primitive))
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
    """(primitive orbital of every mapped supercell orbital, its supercell orbital index, its atom, number of
    primitive orbitals); orbitals of unmapped atoms (site −1) are left out."""
    n_orb = np.asarray(n_orb)
    atom_of_orb = np.repeat(np.arange(len(n_orb)), n_orb)
    offsets = np.concatenate([[0], np.cumsum(n_orb)])
    orb_in_atom = np.arange(offsets[-1]) - offsets[atom_of_orb]
    mapped = cmap.site >= 0
    n_prim_orb = np.zeros(cmap.site.max() + 1, dtype=int)
    n_prim_orb[cmap.site[mapped]] = n_orb[mapped]
    prim_off = np.concatenate([[0], np.cumsum(n_prim_orb)])
    keep = np.flatnonzero(mapped[atom_of_orb])
    atom = atom_of_orb[keep]
    return prim_off[cmap.site[atom]] + orb_in_atom[keep], keep, atom, int(prim_off[-1])


def unfolded_states(blocks: BlockSet, cmap: SupercellMap, k_cart, window_eV=None,
                    precision: str = "double") -> tuple[np.ndarray, np.ndarray]:
    """Supercell eigenvalues ε_J (eV) and their weights W_J(k) at the primitive wave vector ``k_cart``;
    only the states with lo < ε ≤ hi for ``window_eV=(lo, hi)`` (partial eigensolve), else all;
    ``precision`` as in :func:`~hedgenet.orbitals.bloch.generalized_eigh`.

    The plain implementation, one k at a time; :class:`Unfolder` gives the same numbers (to ≈ 1e-12) for
    many k of one block set at a fraction of the cost."""
    Hk, Sk = bloch_pair(blocks, cmap.supercell_kfrac(k_cart))
    eps, C = generalized_eigh(Hk, Sk, window_eV=window_eV, precision=precision)
    return eps, scatter_weights(blocks, cmap, C, Sk @ C, k_cart)


def bloch_pair(blocks: BlockSet, kfrac) -> tuple[np.ndarray, np.ndarray]:
    """H(k), S(k) (S symmetrised) at supercell wave vector ``kfrac``, one :func:`bloch_matrix` each."""
    Hk = bloch_matrix(blocks.H, blocks.edge_index, blocks.cell_shift, blocks.n_orb, kfrac)
    Sk = bloch_matrix(blocks.S, blocks.edge_index, blocks.cell_shift, blocks.n_orb, kfrac)
    return Hk, 0.5 * (Sk + Sk.conj().T)


def scatter_weights(blocks: BlockSet, cmap: SupercellMap, C: np.ndarray, SC: np.ndarray, k_cart) -> np.ndarray:
    """W_J(k) of the eigenvectors ``C`` (``SC`` = S(k) C) by scatter-adding every supercell orbital onto its
    primitive orbital (module docstring)."""
    target, orb, atom_of_orb, n_prim = _primitive_orbital_map(blocks.n_orb, cmap)
    phase = np.exp(-1j * (cmap.R[atom_of_orb] @ np.asarray(k_cart)))[:, None]
    A = np.zeros((n_prim, C.shape[1]), dtype=complex)
    B = np.zeros_like(A)
    np.add.at(A, target, phase * C[orb])
    np.add.at(B, target, phase * SC[orb])
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
        self.target, self.orb, atom_of_orb, self.n_prim = _primitive_orbital_map(blocks.n_orb, cmap)
        self.n = int(np.sum(blocks.n_orb))
        self.R = cmap.R[atom_of_orb]

    def matrices(self, k_cart) -> tuple[np.ndarray, np.ndarray]:
        """H(k), S(k) (S symmetrised) at the primitive wave vector ``k_cart``."""
        Hk, Sk = self.sums.at(self.cmap.supercell_kfrac(k_cart))
        return Hk, 0.5 * (Sk + Sk.conj().T)

    def weights(self, C: np.ndarray, SC: np.ndarray, k_cart) -> np.ndarray:
        """W_J(k) of the eigenvectors ``C`` (columns) with ``SC`` = S(k) C (module docstring)."""
        U = np.zeros((self.n_prim, self.n), dtype=complex)
        U[self.target, self.orb] = np.exp(-1j * (self.R @ np.asarray(k_cart)))
        A, B = U @ C, U @ SC
        return np.real(np.sum(A.conj() * B, axis=0)) / self.cmap.n_cells

    def states(self, k_cart, window_eV=None, precision: str = "double") -> tuple[np.ndarray, np.ndarray]:
        """As :func:`unfolded_states`."""
        return self.states_with_partners(k_cart, (), window_eV, precision)[0]

    def states_with_partners(self, k_cart, partners, window_eV=None,
                             precision: str = "double") -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`states` at ``k_cart`` and at every wave vector of ``partners`` from one eigensolve: each
        partner's supercell wave vector must be −k modulo the supercell's reciprocal lattice and the blocks
        real (:func:`time_reversal_groups` finds them). Then H(k') = H(k)* and S(k') = S(k)* (lattice gauge),
        so k' has the same energies and the conjugate eigenvectors; only its weights are computed."""
        Hk, Sk = self.matrices(k_cart)
        eps, C = generalized_eigh(Hk, Sk, window_eV=window_eV, precision=precision)
        SC = Sk @ C
        out = [(eps, self.weights(C, SC, k_cart))]
        if len(partners):
            C, SC = C.conj(), SC.conj()
            out += [(eps, self.weights(C, SC, kp)) for kp in partners]
        return out


def time_reversal_groups(blocks: BlockSet, cmap: SupercellMap, points, tol: float = 1e-9) -> list[tuple[int, list[int]]]:
    """The eigensolves that the states at ``points`` (primitive wave vectors, Cartesian 1/Å) need:
    ``(i, [j, ...])`` per solve, point i solved and the points j taken from it by time reversal.

    Real orbital blocks give H(−k) = H(k)*, and the lattice gauge of the Bloch sums gives H(k + G) = H(k) for a
    supercell reciprocal vector G, so a point whose supercell wave vector is minus another's modulo G has the
    same energies and the conjugate eigenvectors (:meth:`Unfolder.states_with_partners`): exact, not an
    approximation. On the straight line through K (K–Γ one way, K–M the other) of a supercell that folds K
    onto its Γ (n×n with n a multiple of 3, e.g. the 6×6 sampling cell) the two halves are partners point by
    point; elsewhere (7×7, complex blocks) every point is solved."""
    kf = [cmap.supercell_kfrac(k) for k in points]
    real = not (np.iscomplexobj(blocks.H) or np.iscomplexobj(blocks.S))
    groups: list[tuple[int, list[int]]] = []
    taken: set[int] = set()
    for i in range(len(points)):
        if i in taken:
            continue
        partners = []
        if real:
            for j in range(i + 1, len(points)):
                s = kf[i] + kf[j]
                if j not in taken and np.abs(s - np.rint(s)).max() < tol:
                    partners.append(j)
                    taken.add(j)
        groups.append((i, partners))
    return groups


def spectral_function(eps: np.ndarray, weights: np.ndarray, energies_eV: np.ndarray, sigma_eV: float = 0.02):
    """A(E) = Σ_J W_J g(E − ε_J) with a normalized Gaussian g of width ``sigma_eV`` (states/eV)."""
    d = (np.asarray(energies_eV)[:, None] - np.asarray(eps)[None, :]) / sigma_eV
    return (np.exp(-0.5 * d**2) @ np.asarray(weights)) / (sigma_eV * np.sqrt(2 * np.pi))


def charge_neutrality_level(blocks: BlockSet, cmap: SupercellMap, numbers, kfrac=(1 / 3, 1 / 3, 0.0)) -> float:
    """Midpoint (eV) between the highest occupied and lowest empty supercell state at the primitive wave
    vector ``kfrac`` (default K, where graphene's Dirac states sit) for the neutral valence electron count."""
    from hedgenet.orbitals.bloch import neutral_midgap_eV

    k = primitive_kpoints_cart(cmap.primitive_cell, [kfrac])[0]
    kf = cmap.supercell_kfrac(k)
    Hk = bloch_matrix(blocks.H, blocks.edge_index, blocks.cell_shift, blocks.n_orb, kf)
    Sk = bloch_matrix(blocks.S, blocks.edge_index, blocks.cell_shift, blocks.n_orb, kf)
    return neutral_midgap_eV(Hk, Sk, numbers)


def layer_primitive_cell(atoms: Atoms, layer: int, tol_A: float = 1e-3) -> tuple[Atoms, np.ndarray]:
    """(primitive cell of one layer, indices of that layer's atoms in ``atoms``), found from the atoms alone.

    The layer's lattice: the shortest in-plane vector v1 (of those, the one nearest the +x direction) that maps
    every atom of the layer onto an atom of the same element (modulo the cell) and the shortest such v2 not parallel to it, right-handed and at ≥ 90° to v1
    (120° for a hexagonal layer, hedgenet's convention); the cell's third vector is kept. Its sites are the
    layer's atoms that are distinct modulo that lattice. For a twisted bilayer this is each layer's own
    (rotated) graphene cell; :meth:`SupercellMap.build` with ``atoms=`` the returned indices then maps that
    layer. Layers as :func:`hedgenet.structures.layers.layer_index` (stored, else detected); the structure must
    be undisplaced."""
    from scipy.spatial import cKDTree

    from hedgenet.structures.layers import layer_index

    layers = layer_index(atoms)
    idx = np.flatnonzero(layers == layer)
    if not len(idx):
        raise ValueError(f"no atoms in layer {layer}; the structure has layers {sorted(set(layers.tolist()))}")
    cell = atoms.cell.array
    inv = np.linalg.inv(cell)
    P, Z = atoms.positions[idx], atoms.numbers[idx]
    frac = (P @ inv) % 1.0
    frac[:, 2] = 0.0
    tol = tol_A / np.linalg.norm(cell[:2], axis=1).min()
    trees = {z: cKDTree(frac[Z == z, :2] % 1.0, boxsize=[1.0, 1.0]) for z in set(Z.tolist())}

    def is_translation(v):
        moved = ((P + v) @ inv)[:, :2] % 1.0
        return all(np.all(np.isfinite(trees[z].query(moved[Z == z], distance_upper_bound=tol)[0]))
                   for z in trees)

    d = ((P - P[0]) @ inv)
    d[:, :2] -= np.rint(d[:, :2])
    d[:, 2] = 0.0
    cands = [v for v, z in zip(d @ cell, Z) if z == Z[0] and np.linalg.norm(v) > tol_A]
    # shortest first; among equally short ones the one closest to the +x direction (a1 of an unrotated layer)
    cands.sort(key=lambda v: (round(float(np.linalg.norm(v)) / tol_A), abs(np.arctan2(v[1], v[0]))))
    v1 = next((v for v in cands if is_translation(v)), None)
    if v1 is None:
        raise ValueError(f"layer {layer} has no lattice translation shorter than the cell: it is its own primitive "
                         "cell (nothing to unfold onto)")
    v2 = next((v for v in cands if abs(v1[0] * v[1] - v1[1] * v[0]) > tol_A * np.linalg.norm(v1)
               and is_translation(v)), None)
    if v2 is None:
        raise ValueError(f"layer {layer}: only one independent lattice translation found inside the cell")
    if v1[0] * v2[1] - v1[1] * v2[0] < 0:
        v2 = -v2
    if v1 @ v2 > tol_A:
        v2 = v2 - v1
    prim = np.array([v1, v2, cell[2]])
    pf = P @ np.linalg.inv(prim)
    pf[:, :2] %= 1.0
    reps: list[int] = []
    for i, (f, z) in enumerate(zip(pf, Z)):
        if not any(Z[j] == z and np.linalg.norm(((f - pf[j])[:2] - np.rint((f - pf[j])[:2])) @ prim[:2, :2]) < 10 * tol_A
                   and abs(P[i, 2] - P[j, 2]) < 10 * tol_A for j in reps):
            reps.append(i)
    primitive = Atoms(numbers=Z[reps], positions=P[reps], cell=prim, pbc=atoms.pbc)
    primitive.arrays["layer"] = np.full(len(reps), layer)
    return primitive, idx
