"""Sparse shift-invert bands against the dense generalized solve on a mid-size twisted cell (xTB blocks)."""

from __future__ import annotations

import numpy as np
import pytest

from hedgenet.orbitals.bloch import band_energies, bloch_matrix
from hedgenet.orbitals.blocks import BlockSet
from hedgenet.orbitals.layout import valence_electron_count
from hedgenet.physics import sparse_bands
from hedgenet.physics.sparse_bands import (
    bands_near,
    charge_neutrality_point,
    eigenvalues_near,
    sparse_bloch_pair,
)
from hedgenet.reference import make_reference
from hedgenet.structures import build_structure

K_GENERAL = (0.13, 0.29, 0.0)


@pytest.fixture(scope="module")
def twisted():
    """Rattled 13.17° twisted bilayer (76 atoms, 304 orbitals), GFN1-xTB blocks within 4 Å (cell 9.3 Å wide)."""
    atoms = build_structure("twisted_bilayer_graphene", m=2, n=3, a=2.458, d=3.35)
    atoms.rattle(0.02, seed=1)
    blocks = make_reference("xtb", block_cutoff=4.0).compute(atoms, with_blocks=True).blocks
    return atoms, blocks


def dense(blocks, k):
    return band_energies(blocks.H, blocks.S, blocks.edge_index, blocks.cell_shift, blocks.n_orb, [k])[0]


@pytest.mark.parametrize("k", [(0.0, 0.0, 0.0), K_GENERAL])
def test_sparse_eigenvalues_match_dense_solve(twisted, k):
    atoms, blocks = twisted
    H, S = sparse_bloch_pair(blocks, k)
    assert np.allclose(H.toarray(), bloch_matrix(blocks.H, blocks.edge_index, blocks.cell_shift, blocks.n_orb, k))
    assert H.dtype == (np.float64 if k == (0.0, 0.0, 0.0) else np.complex128)  # Γ stays real
    w = dense(blocks, k)
    n_occ = valence_electron_count(atoms.numbers) // 2
    sigma = 0.5 * (w[n_occ - 1] + w[n_occ])
    res = bands_near(blocks, sigma, [k], n_bands=12)[0]
    nearest = np.sort(np.argsort(np.abs(w - sigma))[:12])
    assert np.abs(res.eigenvalues_eV - w[nearest]).max() < 1e-8  # eV
    # Sylvester inertia gives the global band index without the states below σ.
    assert res.n_below_sigma == n_occ and res.first_index == nearest[0]
    # An off-centre σ inside the valence band: still the 12 nearest, still indexed.
    sigma2 = w[n_occ - 5] + 1e-3
    res2 = eigenvalues_near(H, S, sigma2, 12, kpoint_frac=k)
    nearest2 = np.sort(np.argsort(np.abs(w - sigma2))[:12])
    assert np.abs(res2.eigenvalues_eV - w[nearest2]).max() < 1e-8 and res2.first_index == nearest2[0]


@pytest.mark.parametrize("offset_eV", [-1.5, 2.0])
def test_charge_neutrality_point_from_a_distant_guess(twisted, offset_eV):
    atoms, blocks = twisted
    w = dense(blocks, K_GENERAL)
    n_occ = valence_electron_count(atoms.numbers) // 2
    cnp = 0.5 * (w[n_occ - 1] + w[n_occ])
    e, res = charge_neutrality_point(blocks, atoms.numbers, cnp + offset_eV, K_GENERAL, n_bands=10)
    assert abs(e - cnp) < 1e-8
    assert res.first_index <= n_occ - 1 < n_occ <= res.first_index + 9


def test_bad_input_is_refused_with_the_reason(twisted, monkeypatch):
    atoms, blocks = twisted
    H, S = sparse_bloch_pair(blocks)
    n = H.shape[0]
    with pytest.raises(ValueError, match="band_energies"):
        eigenvalues_near(H, S, -9.0, n)  # all bands: ARPACK cannot, the dense solver should
    with pytest.raises(ValueError, match="finite"):
        eigenvalues_near(H, S, float("nan"), 5)
    with pytest.raises(ValueError, match="same size"):
        eigenvalues_near(H, S[:-4, :-4], -9.0, 5)
    # S not positive definite (overlaps scaled down below the on-site identity's reach): refused by the
    # exact inertia check and by the Lanczos check used for large cells.
    bad = BlockSet(blocks.edge_index, blocks.cell_shift, blocks.H, blocks.S * 3.0, blocks.n_orb)
    on_site = blocks.edge_index[0] == blocks.edge_index[1]
    bad.S[on_site] = blocks.S[on_site]  # 3× the off-site overlaps, on-site unchanged: indefinite
    assert np.linalg.eigvalsh(bloch_matrix(bad.S, bad.edge_index, bad.cell_shift, bad.n_orb)).min() < 0
    with pytest.raises(ValueError, match="not positive definite"):
        bands_near(bad, -9.0, n_bands=5)
    monkeypatch.setattr(sparse_bands, "EXACT_OVERLAP_CHECK_MAX_ORBITALS", 0)
    with pytest.raises(ValueError, match="not positive definite"):
        bands_near(bad, -9.0, n_bands=5)
    assert len(bands_near(blocks, -9.0, n_bands=5)[0].eigenvalues_eV) == 5  # the good S passes that check too
    # σ on an eigenvalue: H = 2 S makes every eigenvalue 2 eV and H − 2S exactly zero.
    flat = BlockSet(blocks.edge_index, blocks.cell_shift, 2.0 * blocks.S, blocks.S, blocks.n_orb)
    with pytest.raises(ValueError, match="coincides with an eigenvalue"):
        bands_near(flat, 2.0, n_bands=5)
