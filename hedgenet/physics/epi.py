"""Electron–phonon couplings in the orbital basis: derivatives dH_ij(R)/du_aα (eV/Å) and dS_ij(R)/du_aα (1/Å)
of the blocks with respect to atomic displacements.

Two routes, one result format (:class:`BlockDerivatives`):

* :func:`finite_difference_block_derivatives`: central differences of ``calc.predict_hamiltonian`` (a
  reference solver or a model, the same code) at ± ``delta_A``. In a supercell of a crystal only the atoms
  of one unit cell are displaced; the others follow by lattice translation (exact, and
  ``n_cells`` times fewer solver calls), unless ``use_translations=False``.
* :func:`autograd_block_derivatives`: the model's exact derivatives by forward-mode autodiff (one
  Jacobian–vector product per atom and direction), no step size.

Blocks are always expressed on the edge list of the undisplaced structure (``block_edges``); an edge of a
displaced structure that is not on it (crossing the cutoff) is dropped, an edge missing there counts as 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from hedgenet.orbitals.blocks import BlockSet


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
        rep = sorted({int(min(p[a] for p in perms)) for a in range(n)})
        todo = rep
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


def autograd_block_derivatives(model, atoms: Atoms) -> BlockDerivatives:
    """The model's exact dH/du and dS/du by forward-mode autodiff (torch.func.jvp), one product per
    atom and direction, on the edge list of ``atoms``."""
    import torch
    from torch.func import jvp

    from hedgenet.calculators import ModelCalculator

    calc = ModelCalculator(model)
    b0 = calc.predict_hamiltonian(atoms)
    dtype = next(model.parameters()).dtype
    graph = model.graph_builder().from_atoms(atoms).to(dtype=dtype)
    n_max = b0.H.shape[-1]

    def blocks(pos):
        g = graph
        g.pos = pos
        out = model(g, compute_forces=False, training=True)
        return out["H"][:, :n_max, :n_max], out["S"][:, :n_max, :n_max]

    n = len(atoms)
    dH = np.zeros((n, 3) + b0.H.shape)
    dS = np.zeros_like(dH)
    pos0 = graph.pos.detach().clone()
    for a in range(n):
        for x in range(3):
            tangent = torch.zeros_like(pos0)
            tangent[a, x] = 1.0
            _, (tH, tS) = jvp(blocks, (pos0,), (tangent,))
            dH[a, x], dS[a, x] = tH.detach().double().numpy(), tS.detach().double().numpy()
    return BlockDerivatives(b0, dH, dS)


def dirac_point_couplings(deriv: BlockDerivatives, modes, cmap, e_cnp_eV: float, n_states: int = 4,
                          cutoff_frequency_THz: float = 0.1) -> dict:
    """First-order coupling strengths |g_ν| (meV) of every supercell phonon ν to the Dirac-point states.

    The states are the ``n_states`` supercell eigenstates closest to the charge-neutrality level at the
    supercell wave vector onto which the primitive K folds (in an n×n cell with n ≡ 0 mod 3 that is Γ, and
    K' folds there too, so intervalley phonons at K are included). For a mode of frequency ω_ν with
    mass-weighted eigenvector e_ν,

        g_mn^ν = ⟨ψ_m| ∂_ν H − ε_n ∂_ν S |ψ_n⟩,   ∂_ν = Σ_aα √(ħ/2ω_ν) e_{aα,ν}/√M_a ∂/∂u_aα,

    and ``g_abs_meV[ν]`` = √(Σ_mn |g_mn^ν|² / n_states), invariant under unitary mixing of the states.
    Returns frequencies (THz), |g| (meV) and the state energies (eV)."""
    from hedgenet.orbitals.bloch import bloch_matrix, generalized_eigh
    from hedgenet.physics.sampling import mode_variances
    from hedgenet.physics.unfold import primitive_kpoints_cart

    b = deriv.blocks0
    k = primitive_kpoints_cart(cmap.primitive_cell, [(1 / 3, 1 / 3, 0)])[0]
    kf = cmap.supercell_kfrac(k)
    Hk = bloch_matrix(b.H, b.edge_index, b.cell_shift, b.n_orb, kf)
    Sk = bloch_matrix(b.S, b.edge_index, b.cell_shift, b.n_orb, kf)
    eps, C = generalized_eigh(Hk, Sk)
    pick = np.sort(np.argsort(np.abs(eps - e_cnp_eV))[:n_states])
    psi, e = C[:, pick], eps[pick]
    n_atoms = deriv.dH.shape[0]
    M = np.zeros((n_atoms, 3, n_states, n_states), dtype=complex)
    for a in range(n_atoms):
        for x in range(3):
            dHk = bloch_matrix(deriv.dH[a, x], b.edge_index, b.cell_shift, b.n_orb, kf)
            dSk = bloch_matrix(deriv.dS[a, x], b.edge_index, b.cell_shift, b.n_orb, kf)
            M[a, x] = psi.conj().T @ dHk @ psi - (psi.conj().T @ dSk @ psi) * e[None, :]
    # zero-point length √(ħ/2ω) = σ_ν at T = 0 (amu^½·Å), ∂_ν = σ_ν Σ e_aα/√M_a ∂_aα
    sigma = np.sqrt(mode_variances(modes, 0.0, True, cutoff_frequency_THz))
    coef = modes.eigenvectors.reshape(n_atoms, 3, -1) / np.sqrt(modes.masses)[:, None, None] * sigma[None, None, :]
    g = np.einsum("axv,axmn->vmn", coef, M)  # eV
    g_abs = 1e3 * np.sqrt(np.sum(np.abs(g) ** 2, axis=(1, 2)) / n_states)
    return {"frequencies_THz": modes.frequencies_THz, "g_abs_meV": g_abs, "state_energies_eV": e}
