"""Unfolding: an undisplaced supercell gives the primitive bands with weights 0 or 1; a displaced one
spreads weight but conserves it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import eigh

from hedgenet.physics.unfold import (
    SupercellMap,
    primitive_kpoints_cart,
    spectral_function,
    unfolded_states,
)
from hedgenet.reference import make_reference
from hedgenet.structures import build_structure, make_supercell


def primitive_hamiltonian(blocks, supercell, cmap, k_cart):
    """Independent check: primitive H(k), S(k) from the supercell blocks of one image of every site."""
    n_orb_site = np.zeros(cmap.site.max() + 1, dtype=int)
    n_orb_site[cmap.site] = blocks.n_orb
    off = np.concatenate([[0], np.cumsum(n_orb_site)])
    rep = {s: int(np.flatnonzero(cmap.site == s)[0]) for s in range(len(n_orb_site))}
    Hk = np.zeros((off[-1], off[-1]), dtype=complex)
    Sk = np.zeros_like(Hk)
    cell = supercell.cell.array
    for e, (i, j) in enumerate(blocks.edge_index.T):
        s = cmap.site[i]
        if rep[s] != i:
            continue
        t = cmap.site[j]
        dR = cmap.R[j] + blocks.cell_shift[e] @ cell - cmap.R[i]
        ph = np.exp(1j * dR @ k_cart)
        ni, nj = n_orb_site[s], n_orb_site[t]
        Hk[off[s] : off[s] + ni, off[t] : off[t] + nj] += ph * blocks.H[e, :ni, :nj]
        Sk[off[s] : off[s] + ni, off[t] : off[t] + nj] += ph * blocks.S[e, :ni, :nj]
    return Hk, Sk


@pytest.fixture(scope="module")
def system():
    unit = build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB")
    sc = make_supercell(unit, [4, 4])
    ref = make_reference("xtb", block_cutoff=4.0)
    return unit, sc, SupercellMap.build(sc, unit), ref.compute(sc, with_blocks=True).blocks, ref


@pytest.mark.parametrize("kfrac", [(1 / 3, 1 / 3, 0), (0.13, 0.05, 0), (0.5, 0, 0)], ids=["K", "generic", "M"])
def test_undisplaced_supercell_unfolds_to_primitive_bands(system, kfrac):
    unit, sc, cmap, blocks, _ = system
    k = primitive_kpoints_cart(unit.cell.array, [kfrac])[0]
    eps, W = unfolded_states(blocks, cmap, k)
    assert W.sum() == pytest.approx(16.0, abs=1e-6)  # 4 atoms × 4 orbitals (GFN1 C: s, p)
    Hk, Sk = primitive_hamiltonian(blocks, sc, cmap, k)
    prim = eigh(Hk, Sk, eigvals_only=True)
    E = np.linspace(prim.min() - 1, prim.max() + 1, 3000)
    # the same spectral function (degenerate supercell states may mix images of k, e.g. the three M points)
    a_unf, a_prim = spectral_function(eps, W, E, 0.01), spectral_function(prim, np.ones(16), E, 0.01)
    assert np.abs(a_unf - a_prim).max() < 1e-4 * a_prim.max()
    if kfrac[0] != 0.5:  # no degeneracy between different primitive k: every weight is 0 or 1
        assert np.allclose(W[np.abs(W) > 1e-6], 1.0, atol=1e-6)
        assert np.allclose(np.sort(eps[W > 0.5]), prim, atol=1e-6)


def test_displaced_supercell_spreads_and_conserves_weight(system):
    unit, sc, cmap, _, ref = system
    displaced = sc.copy()
    displaced.rattle(0.05, seed=3)
    blocks = ref.compute(displaced, with_blocks=True).blocks
    k = primitive_kpoints_cart(unit.cell.array, [(1 / 3, 1 / 3, 0)])[0]
    eps, W = unfolded_states(blocks, cmap, k)
    assert W.sum() == pytest.approx(16.0, abs=1e-6)
    assert ((W > 0.02) & (W < 0.98)).any()  # weight shared between supercell states
    E = np.linspace(eps.min() - 1, eps.max() + 1, 4000)
    A = spectral_function(eps, W, E, sigma_eV=0.05)
    assert np.trapezoid(A, E) == pytest.approx(16.0, rel=1e-3)


def test_map_rejects_a_displaced_or_foreign_cell(system):
    unit, sc, _, _, _ = system
    moved = sc.copy()
    moved.rattle(0.05, seed=1)
    with pytest.raises(ValueError, match="undisplaced supercell"):
        SupercellMap.build(moved, unit)
