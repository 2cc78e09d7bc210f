"""Thermal displacement sampling against the exact harmonic moments and phonopy's own sampler
(GFN1-xTB force constants of a 4×4 AB bilayer graphene cell). The special displacement method: test_sdm.py."""

from __future__ import annotations

import numpy as np
import pytest

from hedgenet.calculators import ReferenceCalculator
from hedgenet.physics.phonons import enforce_acoustic_sum_rule
from hedgenet.physics.sampling import (
    THZ_PER_SQRT_EV_A2_AMU,
    NormalModes,
    mean_square_displacement,
    mode_variances,
    thermal_displacements,
)
from hedgenet.reference import make_reference
from hedgenet.structures import build_structure
from hedgenet.structures.supercell import supercell_atoms


@pytest.fixture(scope="module")
def system():
    unit = build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB")
    ph = ReferenceCalculator(make_reference("xtb", block_cutoff=4.0)).force_constants(unit, [4, 4])
    enforce_acoustic_sum_rule(ph)
    atoms = supercell_atoms(ph, unit)
    return ph, atoms, NormalModes.from_force_constants(ph.force_constants, atoms.get_masses())


def test_units_and_modes(system):
    ph, _, modes = system
    assert THZ_PER_SQRT_EV_A2_AMU == pytest.approx(15.633302, rel=1e-6)  # phonopy's VaspToTHz
    assert np.abs(modes.frequencies_THz[:3]).max() < 1e-3  # translations
    ph.run_qpoints([[0, 0, 0], [0.25, 0, 0], [0.25, 0.25, 0]])  # q commensurate with the 4×4 cell
    for nu in ph.qpoints.frequencies.ravel():
        assert np.abs(modes.frequencies_THz - nu).min() < 1e-5


@pytest.mark.parametrize("T", [0.0, 300.0])
def test_monte_carlo_matches_exact_and_phonopy_within_statistical_error(system, T):
    ph, atoms, modes = system
    n = 2000
    exact = mean_square_displacement(modes, T)
    ours = (thermal_displacements(modes, T, n, seed=7) ** 2).mean(0)
    ph.init_random_displacements(dist_func="quantum", cutoff_frequency=0.1)
    theirs = (np.asarray(ph.get_random_displacements_at_temperature(T, n, random_seed=11)) ** 2).mean(0)
    stderr = np.sqrt(2.0 / n) * exact  # Var(u²) = 2σ⁴ for a Gaussian u
    assert np.all(np.abs(ours - exact) < 4.5 * stderr)
    assert np.all(np.abs(theirs - exact) < 4.5 * stderr)
    assert exact[:, 2].mean() > 0 and (T == 0 or exact.mean() > mean_square_displacement(modes, 0.0).mean())


def test_antithetic_pairs_and_classical_limit(system):
    _, _, modes = system
    u = thermal_displacements(modes, 300.0, 6, seed=1)
    assert np.allclose(u[0::2], -u[1::2])
    assert np.allclose(u.mean(axis=1), 0.0, atol=1e-9)  # no net translation (Γ translations not sampled)
    hot_q = mode_variances(modes, 20000.0, quantum=True)
    hot_c = mode_variances(modes, 20000.0, quantum=False)
    sampled = hot_c > 0
    assert np.allclose(hot_q[sampled], hot_c[sampled], rtol=0.02)  # ħω ≪ k_BT


def test_bad_inputs(system):
    _, _, modes = system
    with pytest.raises(ValueError, match="≥ 0 K"):
        thermal_displacements(modes, -1.0, 2, seed=0)
    with pytest.raises(ValueError, match="even number"):
        thermal_displacements(modes, 300.0, 3, seed=0)
