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
