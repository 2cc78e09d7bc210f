"""Bloch sums of orbital blocks: against a direct loop, Hermiticity at any k, band-window selection."""

from __future__ import annotations

import numpy as np

from hedgenet.orbitals.bloch import band_energies, band_energy_error, bloch_matrix
from hedgenet.orbitals.blocks import block_edges
from hedgenet.structures import build_structure, make_supercell


def hermitian_blocks(atoms, cutoff, n_orb, seed=0):
    """Random blocks with M_ij(R) = M_ji(−R)^T (and S positive definite: identity on site)."""
    ei, shift, _ = block_edges(atoms, cutoff)
    n_max = int(n_orb.max())
    rng = np.random.default_rng(seed)
    key = {(int(i), int(j), *map(int, r)): e for e, (i, j, r) in enumerate(zip(*ei, shift))}
    H = np.zeros((ei.shape[1], n_max, n_max))
    S = np.zeros_like(H)
    for e, (i, j, r) in enumerate(zip(*ei, shift)):
        rev = key[(int(j), int(i), *map(int, -r))]
        if rev < e:
            continue
        b = rng.normal(size=(n_max, n_max))
        if rev == e:
            b = b + b.T
            S[e] = np.eye(n_max)
        else:
            S[e] = 0.02 * rng.normal(size=(n_max, n_max))
            S[rev] = S[e].T
        H[e], H[rev] = b, b.T
    return ei, shift, H, S


def test_bloch_matrix_matches_direct_sum_and_is_hermitian():
    atoms = make_supercell(build_structure("bilayer_graphene"), [2, 2])
    n_orb = np.array([4, 3] * (len(atoms) // 2))  # unequal counts exercise the padding
    ei, shift, H, _ = hermitian_blocks(atoms, 3.0, n_orb)
    off = np.concatenate([[0], np.cumsum(n_orb)])
    k = np.array([0.2, -0.1, 0.0])
    direct = np.zeros((off[-1], off[-1]), dtype=complex)
    for e, (i, j) in enumerate(ei.T):
        direct[off[i] : off[i + 1], off[j] : off[j + 1]] += np.exp(2j * np.pi * shift[e] @ k) * H[e, : n_orb[i], : n_orb[j]]
    Hk = bloch_matrix(H, ei, shift, n_orb, k)
    assert np.allclose(Hk, direct, atol=1e-12)
    assert np.allclose(Hk, Hk.conj().T, atol=1e-12)
    assert bloch_matrix(H, ei, shift, n_orb).dtype == np.float64  # Γ: real


def test_band_energies_and_window():
    atoms = make_supercell(build_structure("bilayer_graphene"), [2, 2])
    n_orb = np.full(len(atoms), 2)
    ei, shift, H, S = hermitian_blocks(atoms, 3.0, n_orb, seed=1)
    eps = band_energies(H, S, ei, shift, n_orb, [[0, 0, 0], [1 / 3, 1 / 3, 0]])
    assert eps.shape == (2, int(n_orb.sum()))
    assert np.all(np.diff(eps, axis=1) >= 0)
    shifted = eps + 0.001
    err = band_energy_error(shifted, eps, fermi_level_eV=float(np.median(eps)), window_eV=2.0)
    inside = np.abs(eps - np.median(eps)) <= 2.0
    assert err.size == inside.sum() and np.allclose(err, 0.001)
