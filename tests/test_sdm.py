"""The special displacement method (Zacharias–Giustino) against the exact harmonic anisotropic mean-square
displacement tensors, with GFN1-xTB force constants of monolayer graphene 5×5 (50 atoms) and AB bilayer
graphene 4×4 (64 atoms); the phonons at the commensurate wave vectors against phonopy's."""

from __future__ import annotations

import numpy as np
import pytest

from hedgenet.calculators import ReferenceCalculator
from hedgenet.physics.fermi_velocity import RenormalizationSettings, sample_displacements
from hedgenet.physics.phonons import enforce_acoustic_sum_rule
from hedgenet.physics.sampling import (
    IMAGINARY,
    CommensurateModes,
    NormalModes,
    _fix_gauge,
    excluded_modes,
    mean_square_displacement,
    mode_variances,
    msd_tensor_error,
    msd_tensors,
    special_displacement,
    special_displacements,
    supercell_lattice,
    thermal_msd_tensors,
)
from hedgenet.reference import make_reference
from hedgenet.structures import build_structure


def _phonons(name, n, **kw):
    unit = build_structure(name, a=2.4581, **kw)
    ph = ReferenceCalculator(make_reference("xtb", block_cutoff=4.0)).force_constants(unit, [n, n])
    enforce_acoustic_sum_rule(ph)
    return ph, CommensurateModes.from_phonopy(ph), NormalModes.from_force_constants(ph.force_constants,
                                                                                    ph.supercell.masses)


@pytest.fixture(scope="module")
def monolayer():
    return _phonons("monolayer_graphene", 5)


@pytest.fixture(scope="module")
def bilayer():
    return _phonons("bilayer_graphene", 4, d=3.3225, stacking="AB")


def test_commensurate_modes_are_phonopys_and_span_the_supercell(bilayer):
    ph, cm, modes = bilayer
    ph.run_qpoints(cm.q_frac)
    assert np.abs(ph.qpoints.frequencies - cm.frequencies_THz).max() < 1e-4  # THz
    for iq, jq in enumerate(cm.partner):
        assert np.allclose(cm.q_frac[iq] + cm.q_frac[jq], np.round(cm.q_frac[iq] + cm.q_frac[jq]))
        assert np.allclose(cm.eigenvectors[jq], cm.eigenvectors[iq].conj())
        if iq == jq:  # Γ and the M points of the 4×4 cell: one real standing wave per band
            assert np.abs(cm.eigenvectors[iq].imag).max() == 0
    assert (cm.partner == np.arange(len(cm.q_frac))).sum() == 4  # Γ and three M points
    waves, labels = cm.standing_waves()
    n = len(waves.frequencies_THz)
    assert n == 3 * len(cm.masses) and len({tuple(x) for x in labels}) == n
    assert np.abs(waves.eigenvectors.T @ waves.eigenvectors - np.eye(n)).max() < 1e-12
    assert np.abs(np.sort(waves.frequencies_THz) - modes.frequencies_THz).max() < 1e-4
    for T in (0.0, 300.0):  # the exact tensors do not depend on the basis of the modes
        exact = thermal_msd_tensors(modes, T, cm.unit_index)
        assert np.allclose(thermal_msd_tensors(waves, T, cm.unit_index), exact, rtol=1e-8, atol=1e-12)
        per_atom = mean_square_displacement(modes, T)
        assert np.allclose(np.diagonal(exact, axis1=1, axis2=2),
                           [per_atom[cm.unit_index == k].mean(0) for k in range(4)])


def test_the_gauge_does_not_depend_on_the_eigensolvers_choice_inside_degenerate_sets(bilayer):
    _, cm, _ = bilayer
    rng = np.random.default_rng(0)
    n_checked = 0
    for iq in range(len(cm.q_frac)):
        nu, e = cm.frequencies_THz[iq], cm.eigenvectors[iq]
        sets = np.split(np.arange(len(nu)), np.flatnonzero(np.diff(nu) > 1e-4) + 1)
        scrambled = e.copy()
        for s in sets:  # any unitary mixing and phases inside each degenerate set
            z = rng.standard_normal((len(s), len(s))) + 1j * rng.standard_normal((len(s), len(s)))
            scrambled[:, s] = e[:, s] @ np.linalg.qr(z)[0]
            n_checked += len(s) > 1
        ref = np.cos(np.outer(np.arange(1, 13), np.arange(1, 13)) * 0.7548776662
                     + np.arange(1, 13)[:, None] * 0.5698402910 + np.arange(1, 13)[None, :] * 0.3247179572)
        assert np.allclose(_fix_gauge(nu, scrambled, ref, 1e-4), e, atol=1e-8)
    assert n_checked == 4  # the in-plane doublets at Γ (shear, optical); every other set: phases only


@pytest.mark.parametrize("T", [0.0, 300.0])
def test_zg_configuration_reproduces_the_anisotropic_msd_tensors(monolayer, T):
    """One ZG configuration: ⟨u_κ u_κᵀ⟩ over the cell within 10 % (relative Frobenius norm) of the exact
    thermal tensors for both sublattices. The 0.4–0.7 (0 K) and 0.2–0.4 (300 K) errors of alternating
    signs on eigenvectors of arbitrary sign and mixing fail this."""
    _, cm, modes = monolayer
    exact = thermal_msd_tensors(modes, T, cm.unit_index)
    u = special_displacement(cm, T)
    assert msd_tensor_error(u, exact, cm.unit_index).max() < 0.10
    assert np.allclose(msd_tensors(-u, cm.unit_index), msd_tensors(u, cm.unit_index))
    for seed in (1, 2):  # the other ZG configurations are as good, and different
        other = special_displacement(cm, T, seed=seed)
        assert msd_tensor_error(other, exact, cm.unit_index).max() < 0.10
        assert np.abs(other - u).max() > 1e-3


@pytest.mark.parametrize("T", [0.0, 300.0])
def test_two_zg_configurations_reproduce_the_bilayer_msd_tensors(bilayer, T):
    """AB bilayer: the 0.4 THz interlayer shear doublet at Γ carries most of ⟨u uᵀ⟩ at 300 K and, the same
    in every cell, gives one configuration a rank-1 error per atom that no sign choice removes (≈ 100 %);
    the second configuration cancels it: the pooled tensors of two are within 20 %."""
    _, cm, modes = bilayer
    exact = thermal_msd_tensors(modes, T, cm.unit_index)
    us = special_displacements(cm, T, 2)
    assert msd_tensor_error(us, exact, cm.unit_index).max() < 0.20
    assert np.allclose(us[0], special_displacement(cm, T))
    if T == 300.0:
        assert msd_tensor_error(us[0], exact, cm.unit_index).max() > 0.8


def test_zg_is_deterministic_and_the_sampler_gives_plus_minus_pairs(bilayer):
    _, cm, modes = bilayer
    a = special_displacements(cm, 300.0, 4, seed=3)
    assert np.array_equal(a, special_displacements(cm, 300.0, 4, seed=3))
    b = special_displacements(cm, 300.0, 2, seed=4)
    assert np.array_equal(a[0], b[0]) and np.abs(a[1] - b[1]).max() > 1e-3  # seed: the further configurations
    rebuilt = CommensurateModes.from_phonopy(bilayer[0])
    assert np.array_equal(special_displacement(rebuilt, 300.0), a[0])
    s = RenormalizationSettings(sampler="sdm", n_samples=4, temperatures_K=(300.0,))
    us = sample_displacements(modes, 300.0, s, seed=3, zg_modes=cm)
    assert us.shape == (4, len(cm.masses), 3)
    assert np.allclose(us[0::2], -us[1::2]) and np.allclose(us[0::2], special_displacements(cm, 300.0, 2, seed=3))
    assert np.allclose(us.mean(axis=1), 0.0, atol=1e-12)  # no net translation


def test_modes_below_the_cutoff_and_imaginary_modes_are_not_displaced(monolayer):
    ph, cm, modes = monolayer
    cutoff = 8.0  # THz: the acoustic branches near Γ
    u = special_displacement(cm, 300.0, cutoff_frequency_THz=cutoff)
    q = modes.eigenvectors.T @ (u * np.sqrt(cm.masses)[:, None]).ravel()  # normal coordinates, amu^½·Å
    low = modes.frequencies_THz <= cutoff
    assert low.sum() > 6 and np.abs(q[low]).max() < 1e-12
    waves, _ = cm.standing_waves()  # every other standing wave at ± its thermal amplitude
    qw = waves.eigenvectors.T @ (u * np.sqrt(cm.masses)[:, None]).ravel()
    sigma = np.sqrt(mode_variances(waves, 300.0, cutoff_frequency_THz=cutoff))
    assert np.allclose(np.abs(qw), sigma, atol=1e-12)

    # make the lowest optical band at one q pair imaginary (a translation-invariant change of D)
    iq = int(np.flatnonzero(cm.partner != np.arange(len(cm.q_frac)))[0])
    band = 3
    lam = (cm.frequencies_THz[iq, band] / 15.633302) ** 2
    sel = [k for k, x in enumerate(cm.standing_waves()[1]) if x[0] in (iq, cm.partner[iq]) and x[1] == band]
    v = waves.eigenvectors[:, sel]
    m = np.repeat(cm.masses, 3)
    dyn = ph.force_constants.transpose(0, 2, 1, 3).reshape(len(m), len(m)) / np.sqrt(np.outer(m, m))
    dyn -= 2 * lam * v @ v.T
    fc = (dyn * np.sqrt(np.outer(m, m))).reshape(len(cm.masses), 3, len(cm.masses), 3).transpose(0, 2, 1, 3)
    bad = CommensurateModes.from_force_constants(fc, cm.masses, *supercell_lattice(ph))
    assert bad.frequencies_THz[iq, 0] == pytest.approx(-cm.frequencies_THz[iq, band], rel=1e-6)
    bad_modes = NormalModes.from_force_constants(fc, cm.masses)
    listed = excluded_modes(bad_modes, 0.1, *supercell_lattice(ph))
    assert sum(x["kind"] == IMAGINARY for x in listed) == 2  # the standing waves of q and −q
    u = special_displacement(bad, 300.0)
    q = bad_modes.eigenvectors.T @ (u * np.sqrt(cm.masses)[:, None]).ravel()
    assert np.abs(q[bad_modes.frequencies_THz <= 0.1]).max() < 1e-12
    assert msd_tensor_error(u, thermal_msd_tensors(bad_modes, 300.0, cm.unit_index), cm.unit_index).max() < 0.10


def test_bad_inputs(bilayer):
    ph, cm, _ = bilayer
    with pytest.raises(ValueError, match="n_configurations"):
        special_displacements(cm, 300.0, 0)
    with pytest.raises(ValueError, match="full"):
        CommensurateModes.from_force_constants(ph.force_constants[:4], cm.masses, *supercell_lattice(ph))
