"""Layer index of structures without one (read from a file, built by hand): detected from covalent bonds, so a
bilayer is never taken for one layer — not by the graphs the models see, nor by the physics that names modes."""

from __future__ import annotations

import numpy as np
import pytest

from hedgenet.graphs.neighbors import relation_edges
from hedgenet.graphs.relations import make_relations
from hedgenet.structures import build_structure, make_supercell
from hedgenet.structures.layers import detect_layers, layer_index


def without_layers(atoms):
    bare = atoms.copy()
    del bare.arrays["layer"]
    return bare


@pytest.mark.parametrize("builder,params", [
    ("bilayer_graphene", {"stacking": "AB"}),
    ("bilayer_graphene", {"stacking": "AA"}),
    ("bilayer_hbn", {}),
    ("bilayer_mos2", {}),
    ("twisted_bilayer_graphene", {"m": 2, "n": 3}),
    ("monolayer_graphene", {}),
])
def test_detected_layers_equal_the_builders(builder, params):
    """Every registered material, rattled by 0.1 Å: the bonds give back the builder's layer index."""
    atoms = make_supercell(build_structure(builder, **params), [2, 2]) if builder != "twisted_bilayer_graphene" \
        else build_structure(builder, **params)
    atoms.rattle(0.1, seed=3)
    assert np.array_equal(detect_layers(without_layers(atoms)), atoms.arrays["layer"])


def test_the_stored_index_wins_and_order_follows_z():
    atoms = build_structure("bilayer_graphene", stacking="AB")
    atoms.arrays["layer"] = np.array([1, 1, 0, 0]) if atoms.positions[0, 2] < atoms.positions[2, 2] else \
        np.array([0, 0, 1, 1])
    assert np.array_equal(layer_index(atoms), atoms.arrays["layer"])  # an override is kept as given
    flipped = without_layers(atoms)
    flipped.positions[:, 2] *= -1
    flipped.positions[:, 2] += flipped.cell[2, 2]
    z = flipped.positions[:, 2]
    assert np.all(z[detect_layers(flipped) == 0] < z[detect_layers(flipped) == 1].min())  # 0 = bottom


def test_graph_of_a_structure_without_layers_has_interlayer_edges():
    """The graph builder on a bilayer read without its layer array: the same intra- and interlayer relation
    edges as with it (before, every pair was intralayer and the interlayer modules never ran)."""
    atoms = make_supercell(build_structure("bilayer_graphene", stacking="AB"), [3, 3])
    spec = make_relations("intra_inter", r_intra=3.0, r_inter=4.0)
    with_layers = relation_edges(atoms, spec)
    bare = relation_edges(without_layers(atoms), spec)
    assert with_layers.keys() == bare.keys()
    for name in with_layers:
        assert np.array_equal(with_layers[name][0], bare[name][0]) and np.array_equal(with_layers[name][1], bare[name][1])
    assert len(bare["inter"][0][0]) > 0


def test_a_model_gives_the_same_forces_without_the_layer_array(tmp_path):
    """ModelCalculator on a bilayer read without its layer array: the forces with it, to 1e-6 eV/Å."""
    from cli_runner import untrained_model

    from hedgenet.calculators import ModelCalculator

    calc = ModelCalculator(str(untrained_model(tmp_path / "model.pt")), device="cpu")
    atoms = make_supercell(build_structure("bilayer_graphene", stacking="AB"), [3, 3])
    atoms.rattle(0.03, seed=2)
    bare = without_layers(atoms)
    atoms.calc, bare.calc = calc, calc
    f_with = atoms.get_forces()
    assert np.abs(bare.get_forces() - f_with).max() < 1e-6
