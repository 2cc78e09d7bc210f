"""dH/du and dS/du: translation-reduced finite differences equal the full ones, the model's forward-mode
derivatives equal its finite differences, and the reference's derivatives obey the invariants (Hermiticity,
translation invariance, first order vs all orders)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hedgenet.calculators import ModelCalculator, ReferenceCalculator
from hedgenet.models import HedgeNet
from hedgenet.orbitals.blocks import blocks_on_edges
from hedgenet.reference import make_reference
from hedgenet.structures import build_structure, make_supercell
from hedgenet.structures.supercell import lattice_translations

UNIT = dict(a=2.4581, d=3.3225, stacking="AB")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    layout = make_reference("xtb").layout
    return HedgeNet([6], r_intra=3.0, r_inter=3.5, size={"channels": 8, "lmax": 1, "num_layers": 1},
                    task="joint", layout=layout, block_cutoff=3.0, num_basis=4, radial_hidden=8,
                    dtype="float64").eval()


def test_translations_of_a_supercell_and_none_for_a_rattled_one():
    atoms = make_supercell(build_structure("bilayer_graphene", **UNIT), [3, 2])
    perms, wraps = lattice_translations(atoms)
    assert len(perms) == 6 and np.array_equal(perms[0], np.arange(len(atoms)))
    cell = atoms.cell.array
    for perm, wrap in zip(perms, wraps):  # r_perm(a) = r_a + t − W·cell with one t for all atoms
        t = atoms.positions[perm] + wrap @ cell - atoms.positions
        assert np.allclose(t, t[0], atol=1e-6)
    atoms.rattle(0.01, seed=0)
    assert len(lattice_translations(atoms)[0]) == 1


def test_translation_reduced_differences_equal_full_ones_and_autograd(model):
    atoms = make_supercell(build_structure("bilayer_graphene", **UNIT), [2, 2])
    calc = ModelCalculator(model)
    reduced = calc.block_derivatives(atoms, 0.002)
    full = calc.block_derivatives(atoms, 0.002, use_translations=False)
    assert np.abs(reduced.dH - full.dH).max() < 1e-10 and np.abs(reduced.dS - full.dS).max() < 1e-10
    exact = calc.block_derivatives(atoms, method="autograd")
    scale = np.abs(exact.dH).max()
    assert np.abs(exact.dH - full.dH).max() < 1e-3 * scale  # O(δ²) at δ = 0.002 Å
    assert np.abs(exact.dS - full.dS).max() < 1e-3 * np.abs(exact.dS).max()


@pytest.fixture(scope="module")
def xtb_derivatives():
    atoms = make_supercell(build_structure("bilayer_graphene", **UNIT), [4, 4])
    calc = ReferenceCalculator(make_reference("xtb", block_cutoff=4.0))
    return atoms, calc, calc.block_derivatives(atoms, 0.005)


def test_reference_derivatives_obey_invariants(xtb_derivatives):
    atoms, _, d = xtb_derivatives
    b = d.blocks0
    rev = b.reverse_index()
    # Hermiticity survives differentiation: dH_ij(R)/du = (dH_ji(−R)/du)^T
    assert np.abs(d.dH - d.dH[:, :, rev].swapaxes(-1, -2)).max() < 1e-6
    # a rigid translation of all atoms changes no block: Σ_a dH/du_aα = 0
    assert np.abs(d.dH.sum(axis=0)).max() < 2e-3 * np.abs(d.dH).max()
    assert np.abs(d.dS.sum(axis=0)).max() < 2e-3 * np.abs(d.dS).max()
    # the coupling is substantial where it should be: nearest-neighbour hopping, ~ eV/Å
    assert 1.0 < np.abs(d.dH).max() < 20.0


def test_first_order_and_all_orders_separate_quadratically(xtb_derivatives):
    atoms, calc, d = xtb_derivatives
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(len(atoms), 3))
    err = []
    for amp in (0.02, 0.01):
        u = amp * direction / np.abs(direction).max()
        displaced = atoms.copy()
        displaced.positions += u
        H_all, _ = blocks_on_edges(calc.predict_hamiltonian(displaced), d.blocks0.edge_index, d.blocks0.cell_shift)
        H_lin = d.first_order(u).H
        err.append(np.abs(H_all - H_lin).max())
    assert 3.0 < err[0] / err[1] < 5.0  # second order: halving u quarters the difference


def test_second_order_from_plus_minus_pairs_separates_cubically(xtb_derivatives):
    """S⁽²⁾(u) = ½[S(u)+S(−u)] + Σ dS/du·u differs from S(u) by O(u³): halving u divides the difference by
    ≈ 8 (measured 8.2, 8.9). For H the same holds up to a part linear in u (≈ 0.7 meV at u ≤ 0.01 Å, from
    the self-consistent charges in xTB's finite-difference dH/du), so H⁽²⁾ is checked to be ≥ 5× closer to
    H(u) than the first order at 0.04 Å (measured 3.1 against 33 meV)."""
    from hedgenet.physics.fermi_velocity import second_order_pair

    atoms, calc, d = xtb_derivatives
    direction = np.random.default_rng(1).normal(size=(len(atoms), 3))
    err_S, err_H, err_H1 = [], [], []
    for amp in (0.04, 0.02):
        u = amp * direction / np.abs(direction).max()
        H = {}
        for sign in (1, -1):
            displaced = atoms.copy()
            displaced.positions += sign * u
            H[sign] = calc.predict_hamiltonian(displaced)
        plus, _ = second_order_pair(d, u, H[1], H[-1])
        exact_H, exact_S = blocks_on_edges(H[1], plus.edge_index, plus.cell_shift)
        lin_H, _ = blocks_on_edges(d.first_order(u), plus.edge_index, plus.cell_shift)
        err_S.append(np.abs(exact_S - plus.S).max())
        err_H.append(np.abs(exact_H - plus.H).max())
        err_H1.append(np.abs(exact_H - lin_H).max())
    assert 6.0 < err_S[0] / err_S[1] < 10.0, err_S  # third order
    assert err_H[0] < 0.2 * err_H1[0], (err_H, err_H1)


def test_dirac_point_couplings_of_graphene_select_the_e2g_mode():
    """Momentum conservation and the textbook coupling: in a 4×4 graphene cell (K folds to K, not Γ) only
    Γ phonons couple the Dirac states to themselves, and among them only the E2g (G) mode, with
    |g|·√N_cells ≈ 0.3 eV (DFT: ≈ 0.2–0.3 eV)."""
    from hedgenet.physics.epi import dirac_point_couplings
    from hedgenet.physics.phonons import enforce_acoustic_sum_rule
    from hedgenet.physics.sampling import NormalModes
    from hedgenet.physics.unfold import SupercellMap, charge_neutrality_level
    from hedgenet.structures.supercell import supercell_atoms

    unit = build_structure("monolayer_graphene", a=2.4581)
    calc = ReferenceCalculator(make_reference("xtb", block_cutoff=4.0))
    ph = calc.force_constants(unit, [4, 4])
    enforce_acoustic_sum_rule(ph)
    sc = supercell_atoms(ph, unit)
    modes = NormalModes.from_force_constants(ph.force_constants, sc.get_masses())
    d = calc.block_derivatives(sc, 0.005)
    cmap = SupercellMap.build(sc, unit)
    r = dirac_point_couplings(d, modes, cmap, charge_neutrality_level(d.blocks0, cmap, sc.numbers), n_states=2)
    g, nu = r["g_abs_meV"], r["frequencies_THz"]
    strong = np.argsort(-g)[:2]
    ph.run_qpoints([[0, 0, 0]])
    e2g = ph.qpoints.frequencies[0].max()
    assert np.allclose(nu[strong], e2g, atol=1e-3)
    assert 150 < g[strong[0]] * 4 < 450  # meV, × √16 cells
    others = np.setdiff1d(np.arange(len(g)), strong)
    assert g[others].max() < 1e-2 * g[strong[0]]


def _couplings_with_degenerate_pair(seed: int):
    """Synthetic couplings: 6 modes (frequencies with one degenerate pair at 45 THz), orthonormal eigenvectors,
    g_ν = |c · e_ν| for a fixed coupling vector c (what a mode's |g| is: linear in its eigenvector)."""
    rng = np.random.default_rng(seed)
    vecs, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    c = rng.normal(size=6) * 10.0
    freqs = np.array([0.4, 2.1, 20.0, 45.0, 45.0, 47.0])
    return {"frequencies_THz": freqs, "eigenvectors": vecs, "g_abs_meV": np.abs(c @ vecs)}, c


def test_coupling_comparison_is_independent_of_the_basis_inside_degenerate_modes_and_of_mode_order():
    """Rotating the basis of a degenerate pair changes each mode's |g| but not the comparison; reordering the
    modes (as another calculator's slightly different frequencies do) is undone by the eigenvector matching."""
    from hedgenet.physics.epi import compare_couplings

    ref, c = _couplings_with_degenerate_pair(0)
    t = 0.7
    rot = np.eye(6)
    rot[3:5, 3:5] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    vecs = ref["eigenvectors"] @ rot
    perm = np.array([1, 0, 2, 4, 5, 3])  # the pair moves behind the 47 THz mode, the two lowest swap
    other = {"frequencies_THz": ref["frequencies_THz"][perm], "eigenvectors": vecs[:, perm],
             "g_abs_meV": np.abs(c @ vecs)[perm]}
    assert not np.allclose(np.abs(c @ vecs)[3:5], ref["g_abs_meV"][3:5])  # each mode's |g| did change
    out = compare_couplings(other, ref, threshold_meV=0.0)
    assert out["modes_matched_by"] == "eigenvectors"
    assert out["g_mae_strong_modes_meV"] < 1e-10 and out["g_sum_ratio_to_compare"] == pytest.approx(1.0)
    scaled = dict(other, g_abs_meV=1.1 * other["g_abs_meV"])
    assert compare_couplings(scaled, ref, 0.0)["g_sum_ratio_to_compare"] == pytest.approx(1.1)
    no_vectors = {k: v for k, v in other.items() if k != "eigenvectors"}
    by_index = compare_couplings(no_vectors, ref, 0.0)
    assert by_index["modes_matched_by"] == "mode index" and by_index["g_mae_strong_modes_meV"] > 0.1
