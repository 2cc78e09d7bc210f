"""Fermi velocity from unfolded bands: pristine graphene against the slope of its own primitive bands,
the AB bilayer's continuum parameters, and the Monte Carlo error bar's input checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import eigh
from test_unfold import primitive_hamiltonian

from hedgenet.physics.continuum_fit import (
    DIRECTIONS,
    fit_continuum,
    thermal_fermi_velocity,
    unfold_near_k,
    velocity_1e5_m_s,
)
from hedgenet.physics.unfold import SupercellMap, primitive_kpoints_cart
from hedgenet.reference import make_reference
from hedgenet.structures import build_structure, make_supercell


@pytest.fixture(scope="module")
def xtb():
    return make_reference("xtb", block_cutoff=4.0)


def test_pristine_graphene_matches_the_slope_of_its_primitive_bands(xtb):
    unit = build_structure("monolayer_graphene", a=2.4581)
    sc = make_supercell(unit, [4, 4])
    res = xtb.compute(sc, with_blocks=True)
    cmap = SupercellMap.build(sc, unit)
    lines = unfold_near_k(res.blocks, cmap, res.fermi_level_eV)
    K = primitive_kpoints_cart(unit.cell.array, [(1 / 3, 1 / 3, 0)])[0]
    for name, end in DIRECTIONS.items():
        fit = fit_continuum([lines], name, layers=1)
        d = primitive_kpoints_cart(unit.cell.array, [end])[0] - K
        d /= np.linalg.norm(d)
        # independent: the two π bands of the primitive H(k), S(k) next to E_F; slope by least squares
        dist = []
        for q in lines.q:
            w = eigh(*primitive_hamiltonian(res.blocks, sc, cmap, K + q * d), eigvals_only=True)
            near = np.sort(w[np.argsort(np.abs(w - fit["E0_eV"]))[:2]])
            dist.append(0.5 * (near[1] - near[0]))
        slope = np.linalg.lstsq(lines.q[:, None], np.array(dist), rcond=None)[0][0]
        assert fit["v0_1e5_m_s"] == pytest.approx(velocity_1e5_m_s(slope), rel=0.01)
        assert 5.0 < fit["v0_1e5_m_s"] < 10.0  # graphene: ~8e5 m/s (GFN1-xTB: ~7e5)


def test_ab_bilayer_continuum_parameters(xtb):
    unit = build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB")
    sc = make_supercell(unit, [4, 4])
    res = xtb.compute(sc, with_blocks=True)
    lines = unfold_near_k(res.blocks, SupercellMap.build(sc, unit), res.fermi_level_eV)
    fit = fit_continuum([lines], "KΓ", layers=2)
    assert 0.1 < fit["gamma1_eV"] < 0.5  # interlayer dimer coupling
    assert 5.0 < fit["v0_1e5_m_s"] < 10.0
    with pytest.raises(ValueError, match="at least 2 independent samples"):
        thermal_fermi_velocity([lines, lines], group=2)


def test_thermal_fit_does_not_depend_on_its_starting_point(xtb):
    """The nearest-band continuum fit has local minima; from the static fit, the graphene default, a start
    20 % off in v₀ and 2× in γ₁, and a low one it must land on the same v₀ for a displaced (broadened)
    sample set (a single-start fit gave 6.96 or 5.69 × 10⁵ m/s on K–M here, by start)."""
    unit = build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB")
    sc = make_supercell(unit, [5, 5])
    cmap = SupercellMap.build(sc, unit)
    static = xtb.compute(sc, with_blocks=True)
    e_ref = static.fermi_level_eV
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(2):
        u = rng.normal(0.0, 0.04, sc.positions.shape)
        for sign in (1, -1):
            disp = sc.copy()
            disp.positions += sign * u
            lines.append(unfold_near_k(xtb.compute(disp, with_blocks=True).blocks, cmap, e_ref))
    fit0 = fit_continuum([unfold_near_k(static.blocks, cmap, e_ref)], "KΓ")
    starts = [(fit0["E0_eV"], fit0["hbar_v0_eV_A"], fit0["gamma1_eV"]), (None, 6.0, 0.38),
              (fit0["E0_eV"] + 0.05, 1.2 * fit0["hbar_v0_eV_A"], 2 * fit0["gamma1_eV"]), (None, 4.0, 0.1)]
    for direction in DIRECTIONS:
        v = [fit_continuum(lines, direction, 2, g)["v0_1e5_m_s"] for g in starts]
        assert max(v) - min(v) < 1e-3 * np.mean(v), (direction, v)
    # and the displaced set really is broadened (the fit is not trivially the static one)
    assert fit_continuum(lines, "KΓ")["rms_residual_eV"] > 2 * fit0["rms_residual_eV"]


# ---------------------------------------------------------------- continuum model with a gap, fixed energy
def bilayer_matrix_bands(x: float, gamma1: float, gap: float) -> np.ndarray:
    """Eigenvalues of the explicit 4×4 AB bilayer Hamiltonian (A1, B1, A2, B2; B1–A2 dimer), layer
    potentials ∓gap/2, |vπ| = x = ħv₀q: independent of the closed form the fit uses."""
    h = np.array([[-gap / 2, x, 0, 0], [x, -gap / 2, gamma1, 0], [0, gamma1, gap / 2, x], [0, 0, x, gap / 2]])
    return np.linalg.eigvalsh(h)


def massive_dirac_bands(x: float, gap: float) -> np.ndarray:
    return np.linalg.eigvalsh(np.array([[gap / 2, x], [x, -gap / 2]]))


def synthetic_lines(hv, gamma1, gap, layers, e0=-4.0, shift=0.0, q_max=0.08, n_q=9):
    """UnfoldedLines of exact model bands (weight 1) on both directions, all energies shifted by ``shift``."""
    from hedgenet.physics.continuum_fit import UnfoldedLines

    q = np.linspace(0.0, q_max, n_q)
    bands = (lambda x: bilayer_matrix_bands(x, gamma1, gap)) if layers == 2 else (lambda x: massive_dirac_bands(x, gap))
    rows = [(e0 + shift + bands(hv * qq), np.ones(2 * layers)) for qq in q]
    return UnfoldedLines(q, {name: list(rows) for name in DIRECTIONS})


@pytest.mark.parametrize("layers,hv,gamma1,gap", [(2, 6.0, 0.25, 0.12), (2, 5.5, 0.38, 0.0), (1, 6.0, 0.0, 0.15)])
def test_gap_term_fits_synthetic_bands_back_and_keeps_v0_clean(layers, hv, gamma1, gap):
    """Bands of known v₀, γ₁ and gap at K (a bilayer with interlayer asymmetry, a massive Dirac cone) are
    fitted back exactly; without the gap term the gap leaked into v₀ (0.35 % for the bilayer, 3 % for the
    cone) and into γ₁ (6 %)."""
    from hedgenet.physics.continuum_fit import band_velocity_at_energy

    fit = fit_continuum([synthetic_lines(hv, gamma1, gap, layers)], "KΓ", layers, fixed_energy_eV=0.2)
    assert fit["hbar_v0_eV_A"] == pytest.approx(hv, rel=1e-4)
    assert fit["gamma1_eV"] == pytest.approx(gamma1, abs=1e-4)
    assert fit["gap_eV"] == pytest.approx(gap, abs=1e-4)
    assert fit["E0_eV"] == pytest.approx(-4.0, abs=1e-5)
    # the band velocity 0.2 eV above E₀ against a finite difference of the explicit matrix's eigenvalues
    bands = (lambda x: bilayer_matrix_bands(x, gamma1, gap)) if layers == 2 else (lambda x: massive_dirac_bands(x, gap))
    q = np.linspace(0.02, 0.1, 4001)
    low = np.array([np.sort(bands(hv * qq))[layers] for qq in q])  # lowest conduction band
    i = np.searchsorted(low, 0.2)
    slope = (low[i] - low[i - 1]) / (q[i] - q[i - 1])
    assert fit["v_fixed_energy_1e5_m_s"] == pytest.approx(velocity_1e5_m_s(slope), rel=2e-3)
    assert fit["fixed_energy_q_inv_A"] == pytest.approx(q[i], abs=1e-4)
    v, qe = band_velocity_at_energy(hv, gamma1, gap, 0.2, layers)
    assert (v, qe) == pytest.approx((fit["v_fixed_energy_1e5_m_s"], fit["fixed_energy_q_inv_A"]), rel=1e-4)
    assert np.isnan(band_velocity_at_energy(hv, gamma1, 0.5, 0.2, layers)[0])  # inside the gap: no band


def noisy_pairs(n_pairs: int, seed: int = 0):
    """± pairs of synthetic bilayer bands whose v₀ and gap scatter from pair to pair (both members alike)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_pairs):
        hv, gap = 6.0 * (1 + 0.03 * rng.standard_normal()), abs(0.05 + 0.02 * rng.standard_normal())
        out += [synthetic_lines(hv, 0.3, gap, 2)] * 2
    return out


def test_error_bars_jackknife_below_eight_pairs_bootstrap_from_eight():
    from hedgenet.physics.continuum_fit import MIN_PAIRS_BOOTSTRAP, fit_start

    assert MIN_PAIRS_BOOTSTRAP == 8
    lines = noisy_pairs(4)
    r = thermal_fermi_velocity(lines, n_bootstrap=10, fixed_energy_eV=0.2)
    assert r["error_method"] == "jackknife" and r["n_pairs"] == 4
    assert "4 independent ± pairs" in r["error_warning"] and "41 %" in r["error_warning"]
    # the jackknife by hand: delete one pair, refit both directions from the best fit, direction mean
    theta = []
    for k in range(4):
        kept = [ln for j in range(4) if j != k for ln in lines[2 * j : 2 * j + 2]]
        theta.append(np.mean([fit_continuum(kept, n, 2, fit_start(r["directions"][n]), multistart=False)["v0_1e5_m_s"]
                              for n in DIRECTIONS]))
    theta = np.array(theta)
    assert r["v0_err_1e5_m_s"] == pytest.approx(np.sqrt(3 / 4 * np.sum((theta - theta.mean()) ** 2)), rel=1e-6)
    for key in ("v0_err_1e5_m_s", "gap_err_eV", "v_fixed_energy_err_1e5_m_s"):
        assert r[key] > 0, key
    # 8 pairs: bootstrap, no warning; a forced jackknife is honoured
    many = noisy_pairs(8, seed=1)
    b = thermal_fermi_velocity(many, n_bootstrap=10, fixed_energy_eV=0.2)
    assert b["error_method"] == "bootstrap" and b["error_warning"] is None
    assert thermal_fermi_velocity(many, n_bootstrap=10, error_method="jackknife")["error_method"] == "jackknife"
    with pytest.raises(ValueError, match="error_method"):
        thermal_fermi_velocity(many, error_method="bayes")


# ---------------------------------------------------------------- second order from ± pairs
def test_second_order_pair_is_exact_to_second_order_and_lives_on_the_union_of_edges():
    """H(u) = H₀ + A·u + uᵀBu + c(Σu)³ per block: ½[H(u)+H(−u)] ± Σ dH/du·u must be H₀ ± A·u + uᵀBu
    exactly (the cubic term dropped), also for a block that only the +u geometry has (cutoff crossing)."""
    from hedgenet.orbitals.blocks import BlockDerivatives, BlockSet
    from hedgenet.physics.fermi_velocity import second_order_pair

    rng = np.random.default_rng(0)
    n_atoms, n_max = 2, 2
    ei0 = np.array([[0, 0, 1, 1], [0, 1, 0, 1]])
    cs0 = np.zeros((4, 3), dtype=np.int64)
    E = 4
    h0, s0 = rng.normal(size=(E, n_max, n_max)), rng.normal(size=(E, n_max, n_max))
    A, AS = rng.normal(size=(n_atoms, 3, E, n_max, n_max)), rng.normal(size=(n_atoms, 3, E, n_max, n_max))
    B = rng.normal(size=(n_atoms * 3, n_atoms * 3, E, n_max, n_max))
    u = 0.05 * rng.normal(size=(n_atoms, 3))
    extra_ei, extra_cs, extra_H = np.array([[0], [1]]), np.array([[1, 0, 0]]), rng.normal(size=(1, n_max, n_max))

    def H(v, which):
        lin = np.einsum("ax,axenm->enm", v, A if which == "H" else AS)
        quad = np.einsum("i,j,ijenm->enm", v.ravel(), v.ravel(), B)
        return (h0 if which == "H" else s0) + lin + quad + 0.7 * v.sum() ** 3

    n_orb = np.array([n_max, n_max])
    deriv = BlockDerivatives(BlockSet(ei0, cs0, h0, s0, n_orb), A, AS)
    plus = BlockSet(np.concatenate([ei0, extra_ei], axis=1), np.concatenate([cs0, extra_cs]),
                    np.concatenate([H(u, "H"), extra_H]), np.concatenate([H(u, "S"), extra_H]), n_orb)
    minus = BlockSet(ei0, cs0, H(-u, "H"), H(-u, "S"), n_orb)
    p, m = second_order_pair(deriv, u, plus, minus)
    assert p.n_edges == 5 and np.array_equal(p.edge_index, m.edge_index)
    key = {(int(i), int(j), *map(int, r)): e for e, (i, j, r) in enumerate(zip(*p.edge_index, p.cell_shift))}
    rows = [key[(int(i), int(j), 0, 0, 0)] for i, j in ei0.T]
    for sign, got in ((1, p), (-1, m)):
        lin = np.einsum("ax,axenm->enm", u, A)
        quad = np.einsum("i,j,ijenm->enm", u.ravel(), u.ravel(), B)
        assert np.allclose(got.H[rows], h0 + sign * lin + quad, atol=1e-12)
        assert np.allclose(got.S[rows], s0 + sign * np.einsum("ax,axenm->enm", u, AS) + quad, atol=1e-12)
        assert np.allclose(got.H[key[(0, 1, 1, 0, 0)]], 0.5 * extra_H[0])  # only at +u: half of it, both signs
    assert np.allclose(plus.H[:4] - p.H[rows], 0.7 * u.sum() ** 3, rtol=1e-9, atol=0)  # H(u) − H⁽²⁾(u): the cubic term


def test_second_order_needs_plus_minus_pairs():
    from hedgenet.physics.fermi_velocity import RenormalizationSettings, check_pairs

    u = np.random.default_rng(0).normal(size=(2, 5, 3))
    check_pairs(np.stack([u[0], -u[0], u[1], -u[1]]))
    with pytest.raises(ValueError, match="sampler=monte_carlo.*drop 'second' from fermi_velocity.orders"):
        check_pairs(np.stack([u[0], u[1], -u[0], -u[1]]))
    with pytest.raises(ValueError, match="not ± pairs"):
        check_pairs(u[:1])
    s = RenormalizationSettings()
    assert s.orders == ("first", "second", "all") and s.fixed_energy_eV == 0.2 and s.error_method == "auto"
    RenormalizationSettings(orders=("second",)).check()
    s.check()
    with pytest.raises(ValueError, match="fixed_energy_eV"):
        RenormalizationSettings(fixed_energy_eV=1.5).check()


def test_report_and_plot_show_every_order_and_observable(tmp_path):
    """The pipeline report's v_F table has a row per order and temperature with the three ratios, the gap
    and the error-bar method, and states the few-pairs warning; the plot has one panel per ratio."""
    from hedgenet.pipeline.report import headline, write_report
    from hedgenet.report.plots import plot_ratios

    def entry(r, method="jackknife"):
        return {"ratio_to_static": r, "ratio_err": 0.01, "gamma1_ratio_to_static": 0.9, "gamma1_ratio_err": 0.02,
                "v_fixed_energy_ratio_to_static": r - 0.01, "v_fixed_energy_ratio_err": 0.015, "gamma1_eV": 0.18,
                "gap_eV": 0.012, "gap_err_eV": 0.004, "v0_1e5_m_s": 7.0 * r, "ratio_err_method": method,
                "error_warning": "error bars from 4 independent ± pairs (jackknife): the error bar itself is "
                                 "uncertain by about 41 %"}
    by_t = {o: {"0.0": entry(1.0 - k / 100), "300.0": entry(0.98 - k / 100)} for k, o in enumerate(("first", "second", "all"))}
    summary = {"static": {"v0_1e5_m_s": 7.0, "gamma1_eV": 0.2, "gap_eV": 0.001, "fixed_energy_eV": 0.2,
                          "v_fixed_energy_1e5_m_s": 6.5, "directions": {"KΓ": {"gamma1_eV": 0.2}}},
               "supercell": [6, 6], "sampler": "monte_carlo", "excluded_modes": [], "by_temperature": by_t}
    outputs = {"fermi_velocity_model": {"dir": str(tmp_path), "summary": summary}}
    write_report(tmp_path, outputs, "a: 1\n", {})
    text = (tmp_path / "report.md").read_text()
    assert "| second | 300 | 0.9700 ± 0.0100 | — | 0.9600 ± 0.0150 | 0.9000 ± 0.0200 | 0.012 ± 0.004 | jackknife |" in text
    assert "v(E*)/v(E*, static), E* = 0.2 eV" in text and "Note: error bars from 4 independent ± pairs" in text
    assert headline(outputs)["v_ratio_second_300K"] == pytest.approx(0.97)
    plot_ratios(tmp_path / "fv.png", {o: {float(T): v for T, v in d.items()} for o, d in by_t.items()})
    from PIL import Image

    assert Image.open(tmp_path / "fv.png").size[0] > 2.5 * Image.open(tmp_path / "fv.png").size[1]  # three panels


@pytest.fixture(scope="module")
def twisted_13deg(xtb):
    """The 13.17° twisted bilayer (76 atoms, 9.3 Å wide: blocks within 4 Å) with xTB's blocks."""
    unit = build_structure("twisted_bilayer_graphene", m=2, n=3, a=2.4581, d=3.3225)
    return unit, xtb.compute(unit, with_blocks=True)


def test_layer_primitive_cells_of_a_twisted_bilayer(twisted_13deg):
    """Each layer's own primitive cell found from the atoms: graphene's lattice constant, rotated by the twist;
    the moiré cell holds 19 of them per layer; the AB cell's layer cell is its unit cell; without a stored layer
    index the layers come from the bonds."""
    from hedgenet.physics.fermi_velocity import unfolding_cell
    from hedgenet.physics.unfold import layer_primitive_cell

    unit, _ = twisted_13deg
    angles = []
    for layer in (0, 1):
        prim, idx = layer_primitive_cell(unit, layer)
        a1, a2 = prim.cell.array[0, :2], prim.cell.array[1, :2]
        assert np.linalg.norm(a1) == pytest.approx(2.4581, abs=1e-6) and np.linalg.norm(a2) == pytest.approx(2.4581)
        assert np.degrees(np.arccos(a1 @ a2 / 2.4581**2)) == pytest.approx(120.0)
        assert len(prim) == 2 and len(idx) == 38 and np.all(unit.arrays["layer"][idx] == layer)
        cmap = SupercellMap.build(unit, prim, atoms=idx)
        assert cmap.n_cells == 19 and np.all(cmap.site[idx] >= 0) and np.all(np.delete(cmap.site, idx) == -1)
        angles.append(np.degrees(np.arctan2(a1[1], a1[0])))
    assert abs(angles[1] - angles[0]) == pytest.approx(unit.info["twist_angle_deg"], abs=1e-6)
    prim, mapped, layers = unfolding_cell(unit, unit)  # auto: a twisted cell unfolds onto layer 0
    assert mapped is not None and len(prim) == 2 and layers == 1
    ab = build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB")
    prim, mapped, layers = unfolding_cell(make_supercell(ab, [3, 3]), ab)  # auto: AB unfolds onto its unit cell
    assert prim is ab and mapped is None and layers == 2
    bare = unit.copy()  # read from a file: no layer index; the layers are detected from the bonds
    del bare.arrays["layer"]
    prim, idx = layer_primitive_cell(bare, 1)
    assert np.array_equal(idx, np.flatnonzero(unit.arrays["layer"] == 1)) and len(prim) == 2
    with pytest.raises(ValueError, match="no atoms in layer 2"):
        layer_primitive_cell(unit, 2)


def test_twisted_bilayer_unfolds_onto_either_layer_with_the_same_cone(twisted_13deg):
    """Unfolded onto one layer's primitive cell, the 13.17° bilayer shows that layer's Dirac cone: weights sum
    to the layer's 8 primitive orbitals at every k; at K the Dirac states near E_CNP hold the layer's two
    states (both layers' Dirac points fold onto the moiré K in this (m, m+1) family, so the four degenerate
    states share them, ≈ 0.5 each); the two layers, exchanged by the bilayer's in-plane C2 axes, give the same
    v0, 1–2 % below the monolayer's (the weak renormalization of a large twist angle)."""
    from hedgenet.physics.unfold import (
        Unfolder,
        charge_neutrality_level,
        layer_primitive_cell,
    )

    unit, res = twisted_13deg
    v0 = []
    for layer in (0, 1):
        prim, idx = layer_primitive_cell(unit, layer)
        cmap = SupercellMap.build(unit, prim, atoms=idx)
        e_ref = charge_neutrality_level(res.blocks, cmap, unit.numbers)
        K = primitive_kpoints_cart(prim.cell.array, [(1 / 3, 1 / 3, 0)])[0]
        eps, W = Unfolder(res.blocks, cmap).states(K)  # every state
        assert W.sum() == pytest.approx(8.0, abs=1e-8)
        near = np.abs(eps - e_ref) < 0.05
        assert near.sum() >= 2 and W[near].sum() == pytest.approx(2.0, abs=0.05)  # the layer's two Dirac states
        lines = unfold_near_k(res.blocks, cmap, e_ref, q_max=0.06, n_q=7, precision="single")
        v0.append(np.mean([fit_continuum([lines], name, layers=1)["v0_1e5_m_s"] for name in DIRECTIONS]))
    assert v0[0] == pytest.approx(v0[1], rel=2e-3)
    mono = build_structure("monolayer_graphene", a=2.4581)
    sc = make_supercell(mono, [4, 4])
    r = make_reference("xtb", block_cutoff=4.0).compute(sc, with_blocks=True)
    lines = unfold_near_k(r.blocks, SupercellMap.build(sc, mono), r.fermi_level_eV, q_max=0.06, n_q=7)
    v_mono = np.mean([fit_continuum([lines], name, layers=1)["v0_1e5_m_s"] for name in DIRECTIONS])
    assert 0.97 < v0[0] / v_mono < 0.999


def test_twisted_cells_warn_when_the_fit_reaches_the_other_cone():
    """At 6.01° the other layer's Dirac point is 0.179 1/Å from K: the default |q| ≤ 0.08 1/Å reaches the region
    where the cones hybridize, and the run says so with a q_max that stays clear; at 13.17° (0.391 1/Å) not."""
    from hedgenet.physics.fermi_velocity import other_dirac_points, unfolding_cell

    for (m, n), distance, warned in (((2, 3), 0.391, False), ((5, 6), 0.179, True)):
        unit = build_structure("twisted_bilayer_graphene", m=m, n=n, a=2.4581, d=3.3225)
        prim, _, _ = unfolding_cell(unit, unit)
        out = other_dirac_points(unit, prim, 0, 0.08)
        assert out["other_dirac_distance_inv_A"] == pytest.approx(distance, abs=1e-3)
        assert ("warning" in out) == warned
    assert "fermi_velocity.q_max_inv_A=0.044" in out["warning"]
    assert "warning" not in other_dirac_points(unit, prim, 0, 0.04)
