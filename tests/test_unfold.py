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


@pytest.fixture(scope="module")
def displaced_blocks(system):
    _, sc, _, _, ref = system
    displaced = sc.copy()
    displaced.rattle(0.05, seed=5)
    return ref.compute(displaced, with_blocks=True).blocks


@pytest.mark.parametrize("kfrac", [(0.0, 0.0, 0.0), (0.37, -0.21, 0.0)], ids=["Gamma", "generic"])
def test_bloch_sums_match_bloch_matrix(displaced_blocks, kfrac):
    """The many-k Bloch sums equal the one-k scatter-add, also when several terms share a matrix entry."""
    from hedgenet.orbitals.bloch import BlochSums, bloch_matrix

    b = displaced_blocks
    sums = BlochSums(b.edge_index, b.cell_shift, b.n_orb, b.H.shape[-1], b.H, b.S)
    assert sums.distinct  # 4×4 cell, 4 Å blocks: one cell shift per atom pair
    for m, ref in zip(sums.at(kfrac), (b.H, b.S)):
        expected = bloch_matrix(ref, b.edge_index, b.cell_shift, b.n_orb, kfrac)
        assert m.dtype == expected.dtype and np.array_equal(m, expected)
    # every edge twice at half weight: terms share entries, the bincount path adds them
    ei, cs = np.concatenate([b.edge_index] * 2, axis=1), np.concatenate([b.cell_shift] * 2)
    doubled = BlochSums(ei, cs, b.n_orb, b.H.shape[-1], np.concatenate([0.5 * b.H] * 2))
    assert not doubled.distinct
    expected = bloch_matrix(b.H, b.edge_index, b.cell_shift, b.n_orb, kfrac)
    assert np.abs(doubled.at(kfrac)[0] - expected).max() < 1e-13


def matched_states(a, b, energy_tol: float, weight_tol: float) -> int:
    """Assert two unfoldings near K hold the same states (counts per k, energies and weights within the
    tolerances); returns the number of states compared."""
    n_states = 0
    for name in a.states:
        for (e1, w1), (e2, w2) in zip(a.states[name], b.states[name]):
            assert len(e1) == len(e2)
            n_states += len(e1)
            assert np.abs(e1 - e2).max(initial=0) < energy_tol and np.abs(w1 - w2).max(initial=0) < weight_tol
    return n_states


def test_unfolder_matches_the_plain_path(system, displaced_blocks):
    """Default (Unfolder) and plain (one k at a time) unfolding near K: the same states and weights."""
    from hedgenet.physics.continuum_fit import near_k_points, unfold_near_k
    from hedgenet.physics.unfold import Unfolder, charge_neutrality_level

    _, sc, cmap, _, _ = system
    b = displaced_blocks
    e_ref = charge_neutrality_level(b, cmap, sc.numbers)
    fast, plain = unfold_near_k(b, cmap, e_ref), unfold_near_k(b, cmap, e_ref, plain=True)
    assert matched_states(plain, fast, 1e-10, 1e-10) > 20
    threaded = unfold_near_k(b, cmap, e_ref, workers=2)  # k-points in 2 worker processes: identical states
    for name in plain.states:
        for (e1, w1), (e2, w2) in zip(fast.states[name], threaded.states[name]):
            assert np.array_equal(e1, e2) and np.array_equal(w1, w2)
    unf = Unfolder(b, cmap)
    ks = near_k_points(cmap)
    assert len(ks) == 17
    for k in (ks[0], ks[5], ks[-1]):  # every state, no window
        (e1, w1), (e2, w2) = unfolded_states(b, cmap, k), unf.states(k)
        assert np.abs(e1 - e2).max() < 1e-10 and np.abs(w1 - w2).max() < 1e-10
        assert w2.sum() == pytest.approx(16.0, abs=1e-6)


def test_unfold_queue_gives_each_hamiltonian_its_own_lines_in_order_whatever_the_workers(system, displaced_blocks):
    """UnfoldQueue (the Monte Carlo samples of every order, one Hamiltonian per job): with 2 worker processes,
    more jobs than may wait at once, the same lines as unfold_near_k one by one, under each key in the order
    they were added, and every key's seconds counted."""
    from hedgenet.physics.continuum_fit import UnfoldQueue, unfold_near_k
    from hedgenet.physics.unfold import charge_neutrality_level

    _, sc, cmap, blocks0, _ = system
    e_ref = charge_neutrality_level(blocks0, cmap, sc.numbers)
    kw = dict(q_max=0.06, n_q=5, window_eV=1.0, precision="single")
    jobs = [("static", blocks0), ("displaced", displaced_blocks)] * 3  # 6 jobs > 2 × 2 workers in flight
    jobs += [("displaced", blocks0)]  # the order within a key is kept: this one comes back last
    expected: dict = {}
    for key, b in jobs:
        expected.setdefault(key, []).append(unfold_near_k(b, cmap, e_ref, **kw))
    for workers in (1, 2):
        queue = UnfoldQueue(cmap, e_ref, workers=workers, **kw)
        for key, b in jobs:
            queue.add(key, b)
        got, seconds = queue.results()
        assert list(got) == ["static", "displaced"] and set(seconds) == {"static", "displaced"}
        assert all(v > 0 for v in seconds.values())
        for key in expected:
            assert len(got[key]) == len(expected[key])
            for a, b in zip(expected[key], got[key]):
                for name in a.states:
                    for (e1, w1), (e2, w2) in zip(a.states[name], b.states[name]):
                        assert np.array_equal(e1, e2) and np.array_equal(w1, w2)
        assert queue.results() == ({}, {})  # collected once


def test_single_precision_unfolding_matches_double(system, displaced_blocks):
    """complex64 eigensolves polished in double precision: the same unfolded states near K as the double
    solve, energies to 1e-8 eV (raw single-precision eigenvalues are off by ~1e-6 eV) and weights to 1e-4."""
    from hedgenet.physics.continuum_fit import unfold_near_k
    from hedgenet.physics.unfold import charge_neutrality_level

    _, sc, cmap, _, _ = system
    b = displaced_blocks
    e_ref = charge_neutrality_level(b, cmap, sc.numbers)
    double = unfold_near_k(b, cmap, e_ref)
    single = unfold_near_k(b, cmap, e_ref, precision="single")
    assert matched_states(double, single, 1e-8, 1e-4) > 20


def test_single_precision_falls_back_to_double_on_an_ill_conditioned_overlap():
    """An overlap with condition number ~1e9 defeats complex64 (residuals ≫ 1e-4 eV): the solve is redone in
    double precision and equals it; a well-conditioned pair keeps the polished single-precision answer."""
    from hedgenet.orbitals import bloch
    from hedgenet.orbitals.bloch import SINGLE_PRECISION_RESIDUAL_EV, generalized_eigh

    rng = np.random.default_rng(3)
    n = 120
    A = rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))
    H = (A + A.conj().T) / np.sqrt(n)  # eigenvalues within ±3
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
    window = (-3.0, 3.0)
    for cond, polished in ((10.0, True), (1e9, False)):
        S = (Q * np.geomspace(1.0, 1.0 / cond, n)) @ Q.conj().T
        e_d, _ = generalized_eigh(H, S, window_eV=window)
        single = bloch._single_precision_pairs(0.5 * (H + H.conj().T), 0.5 * (S + S.conj().T),
                                               {"driver": "gvx", "subset_by_value": window})
        assert (single is not None) == polished
        e_s, C_s = generalized_eigh(H, S, window_eV=window, precision="single")
        assert len(e_s) == len(e_d) > 3
        assert np.abs(e_s - e_d).max() < (1e-8 if polished else 1e-12) * np.abs(e_d).max()
        residual = np.linalg.norm(H @ C_s - S @ C_s * e_s, axis=0).max()
        assert residual < SINGLE_PRECISION_RESIDUAL_EV
    with pytest.raises(ValueError, match="precision='half'"):
        generalized_eigh(H, S, window_eV=window, precision="half")


def test_time_reversal_partners_share_one_eigensolve_and_give_the_solved_states():
    """On a cell that folds K onto its Γ (3×3), K − q on K–Γ and K + q on K–M are time-reversal partners:
    9 eigensolves for the 17 points, and the default path gives the states of solving every point (plain)
    to rounding, in one process and in two. On 4×4 (K not folded onto Γ) and for complex blocks every point
    is solved."""
    import dataclasses

    from hedgenet.physics.continuum_fit import near_k_points, unfold_near_k
    from hedgenet.physics.unfold import charge_neutrality_level, time_reversal_groups

    unit = build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB")
    sc = make_supercell(unit, [3, 3])
    displaced = sc.copy()
    displaced.rattle(0.05, seed=3)
    b = make_reference("xtb", block_cutoff=3.0).compute(displaced, with_blocks=True).blocks
    cmap = SupercellMap.build(sc, unit)
    points = near_k_points(cmap)
    groups = time_reversal_groups(b, cmap, points)
    assert len(points) == 17 and len(groups) == 9
    assert groups[0] == (0, []) and all(len(partners) == 1 for _, partners in groups[1:])
    e_ref = charge_neutrality_level(b, cmap, sc.numbers)
    plain = unfold_near_k(b, cmap, e_ref, plain=True)
    for workers in (1, 2):
        assert matched_states(plain, unfold_near_k(b, cmap, e_ref, workers=workers), 1e-10, 1e-10) > 20
    assert matched_states(plain, unfold_near_k(b, cmap, e_ref, precision="single"), 1e-8, 1e-5) > 20

    four = SupercellMap.build(make_supercell(unit, [4, 4]), unit)
    assert len(time_reversal_groups(b, four, near_k_points(four))) == 17
    complex_blocks = dataclasses.replace(b, H=b.H.astype(complex))
    assert len(time_reversal_groups(complex_blocks, cmap, points)) == 17
