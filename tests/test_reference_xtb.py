"""GFN1-xTB reference: exact Hermiticity, Γ folding, eigenvalues, forces, truncation, bad inputs."""

import numpy as np
import pytest
from ase import Atoms
from scipy.linalg import eigh

from hedgenet.orbitals.blocks import eigen_error_of_truncation
from hedgenet.reference import (
    CellTooSmallError,
    UnsupportedElementError,
    make_reference,
)
from hedgenet.reference.xtb import XTBReference


@pytest.fixture(scope="module")
def sheet6():
    from ase.build import graphene

    at = graphene(a=2.46, vacuum=10.0).repeat((6, 6, 1))  # 12.78 Å wide
    at.arrays["layer"] = np.zeros(len(at), dtype=np.int64)
    at.rattle(0.03, seed=2)
    return at


def test_hermiticity_is_exact(sheet6):
    res = XTBReference(block_cutoff=6.0).compute(sheet6)
    b = res.blocks
    rev = b.reverse_index()
    assert np.array_equal(b.H, np.transpose(b.H[rev], (0, 2, 1)))
    assert np.array_equal(b.S, np.transpose(b.S[rev], (0, 2, 1)))
    self_edges = (b.edge_index[0] == b.edge_index[1]) & (np.abs(b.cell_shift).sum(1) == 0)
    assert self_edges.sum() == len(sheet6)


def test_folding_reproduces_gamma_matrix_and_orbital_energies(sheet6):
    ref = XTBReference(block_cutoff=6.0)
    H, S, eps = ref.gamma_matrices(sheet6)
    res = ref.compute(sheet6)
    Hf, Sf = res.blocks.fold(which="H"), res.blocks.fold(which="S")
    kept = Hf != 0
    np.testing.assert_array_equal(Hf[kept], H[kept])  # kept elements are the solver's, bit for bit
    assert np.abs(H[~kept]).max() == pytest.approx(res.stats["max_dropped_abs_H_eV"])
    assert res.stats["max_dropped_abs_H_eV"] < 1e-3
    # generalized eigenvalues of the refolded (H, S) reproduce the solver's orbital energies
    w = eigh(Hf, Sf, eigvals_only=True)
    err_meV = 1e3 * np.abs(w - np.sort(eps)).max()
    assert err_meV < 1.0, err_meV
    # the untruncated Γ matrices reproduce them to machine precision
    assert np.abs(eigh(H, S, eigvals_only=True) - np.sort(eps)).max() < 1e-9


def test_truncation_error_shrinks_with_block_cutoff(sheet6):
    errors = []
    for rc in (4.0, 5.0, 6.0):
        res = XTBReference(block_cutoff=rc).compute(sheet6)
        errors.append((res.stats["max_dropped_abs_H_eV"], eigen_error_of_truncation(res.blocks, res.orbital_energies_eV)))
    dropped, eig = zip(*errors)
    assert dropped[0] > dropped[1] > dropped[2]
    assert eig[0] > eig[1] > eig[2]
    assert eig[2] < 1e-3 < eig[0]


def test_forces_are_minus_energy_gradient():
    from ase.build import graphene

    at = graphene(a=2.46, vacuum=10.0).repeat((3, 3, 1))
    at.rattle(0.05, seed=5)
    ref = XTBReference()
    f = ref.forces(at)
    h = 1e-4
    rng = np.random.default_rng(0)
    for a, c in [(0, 0), (3, 2), (int(rng.integers(len(at))), 1), (7, 0)]:
        p, m = at.copy(), at.copy()
        p.positions[a, c] += h
        m.positions[a, c] -= h
        fd = -(ref.energy(p) - ref.energy(m)) / (2 * h)
        assert abs(fd - f[a, c]) < 1e-3, (a, c, fd, f[a, c])  # < 1 meV/Å


def test_cell_too_small_is_refused_with_the_fix(sheet6):
    with pytest.raises(CellTooSmallError, match=r"2 × cutoff = 14.00 Å.*larger supercell.*≤ 6.3"):
        XTBReference(block_cutoff=7.0).compute(sheet6)


def test_unknown_element_and_bad_settings_are_clear():
    at = Atoms("FeC", positions=[[0, 0, 0], [1.8, 0, 0]])
    with pytest.raises(UnsupportedElementError, match=r"Fe \(Z=26\).*Supported: .*C"):
        XTBReference().compute(at)
    with pytest.raises(ValueError, match=r"block_cuttoff.*did you mean 'block_cutoff'"):
        make_reference("xtb", block_cuttoff=5.0)
    with pytest.raises(ValueError, match=r"unknown reference 'xtbb'.*did you mean 'xtb'"):
        make_reference("xtbb")
