"""Model and reference calculators are interchangeable: same block format, ASE energy/forces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hedgenet.calculators import ModelCalculator, ReferenceCalculator
from hedgenet.models import HedgeNet
from hedgenet.models.io import load_model, save_model
from hedgenet.reference import make_reference
from hedgenet.structures import build_structure, make_supercell


@pytest.fixture(scope="module")
def atoms():
    a = make_supercell(build_structure("bilayer_graphene", a=2.458, d=3.32, stacking="AB"), [4, 4])
    a.rattle(0.02, seed=3)
    return a


def test_model_blocks_have_the_reference_format(atoms, tmp_path):
    torch.set_num_threads(1)
    ref = make_reference("xtb", block_cutoff=3.5)
    kwargs = dict(elements=[6], r_intra=3.0, r_inter=3.5, size={"channels": 8, "lmax": 1, "num_layers": 1},
                  task="joint", layout=ref.layout.to_json(), block_cutoff=3.5, num_basis=4, radial_hidden=8,
                  dtype="float64")
    path = save_model(tmp_path / "model.pt", "hedgenet", kwargs, HedgeNet(**kwargs))
    model_calc = ModelCalculator(load_model(path))
    ref_calc = ReferenceCalculator(ref)
    bm, br = model_calc.predict_hamiltonian(atoms), ref_calc.predict_hamiltonian(atoms)
    np.testing.assert_array_equal(bm.edge_index, br.edge_index)
    np.testing.assert_array_equal(bm.cell_shift, br.cell_shift)
    np.testing.assert_array_equal(bm.n_orb, br.n_orb)
    assert bm.H.shape == br.H.shape and bm.S.shape == br.S.shape
    rev = bm.reverse_index()
    np.testing.assert_allclose(bm.H, bm.H[rev].transpose(0, 2, 1), atol=1e-12)
    # both are ASE calculators with energy and forces of the right shapes
    for calc in (model_calc, ref_calc):
        a = atoms.copy()
        a.calc = calc
        assert np.isfinite(a.get_potential_energy()) and a.get_forces().shape == (len(a), 3)


def test_stress_of_both_calculators_and_equilibrium_residuals(atoms, tmp_path):
    """xTB's virial is −∂E/∂ε (central differences of the energy under strain), both calculators give the ASE
    stress σ = −W/V, and equilibrium_residuals reads forces, layer forces and the in-plane virial per atom."""
    from test_models import strain_derivative

    from hedgenet.physics.phonons import equilibrium_residuals

    torch.set_num_threads(1)
    ref_calc = ReferenceCalculator(make_reference("xtb", block_cutoff=3.5))
    a = atoms.copy()
    a.calc = ref_calc
    w = -a.get_stress(voigt=False) * a.get_volume()
    h = 1e-4
    def energy(strained):
        strained.calc = ref_calc
        return strained.get_potential_energy()

    for i, j in [(0, 0), (0, 1)]:
        fd = -strain_derivative(energy, atoms, i, j, h)
        assert fd == pytest.approx(w[i, j], abs=2e-3 * max(1.0, abs(w[i, j])))
    r = equilibrium_residuals(ref_calc, atoms)
    f = a.get_forces()
    assert r["residual_force_max_meV_A"] == pytest.approx(1e3 * np.linalg.norm(f, axis=1).max())
    assert r["residual_virial_in_plane_meV_atom"] == pytest.approx([1e3 * w[0, 0] / 64, 1e3 * w[1, 1] / 64,
                                                                   1e3 * w[0, 1] / 64])
    assert "residual_layer_force_max_meV_A" in r

    kwargs = dict(elements=[6], r_intra=3.0, r_inter=3.5, size={"channels": 8, "lmax": 1, "num_layers": 1},
                  task="forces", num_basis=4, radial_hidden=8, dtype="float64")
    model_calc = ModelCalculator(load_model(save_model(tmp_path / "m.pt", "hedgenet", kwargs, HedgeNet(**kwargs))))
    b = atoms.copy()
    b.calc = model_calc
    wm = -b.get_stress(voigt=False) * b.get_volume()
    graph = model_calc.builder.from_atoms(atoms)
    direct = model_calc.model(graph, compute_virial=True)["virial"][0].numpy()
    np.testing.assert_allclose(wm, direct, atol=1e-10)
