"""The interlayer capacity benchmark: the layer force it compares, and a pool without rigid-layer cells refused
with the command that labels one."""

import numpy as np
import pytest

from hedgenet.structures import build_structure, make_supercell


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("interlayer_capacity")


def test_layer_force_is_the_top_layers_mean_normal_force_in_meV_per_A(bench):
    atoms = make_supercell(build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB"),
                           [[2, 0, 0], [0, 2, 0], [0, 0, 1]])
    top = np.asarray(atoms.arrays["layer"]) == 1
    forces = np.zeros((len(atoms), 3))
    forces[top, 2] = np.linspace(-0.03, -0.01, top.sum())  # eV/Å: towards the bottom layer
    forces[~top, 2] = 0.5  # the other layer's forces do not enter
    forces[top, 0] = 1.0   # nor in-plane components
    assert bench.layer_force_meV_A(atoms, forces) == pytest.approx(-20.0)


def test_refuses_a_pool_without_rigid_cells(bench, tiny_dataset, tmp_path):
    with pytest.raises(SystemExit, match="no rigid-layer cells.*production_ab_bilayer.sh"):
        bench.main(["--root", str(tmp_path), "--pool", str(tiny_dataset), "--variant", "default"])
