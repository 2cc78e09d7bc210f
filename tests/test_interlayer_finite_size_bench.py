"""The reference's finite-size benchmark: its rigid cells move the top layer only, and it refuses the supercells
that fold graphene's Dirac points onto Γ before any solver runs."""

import numpy as np
import pytest

from hedgenet.structures import build_structure


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("interlayer_finite_size")


def test_rigid_cell_moves_the_top_layer_only(bench):
    unit = build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB")
    ref, _ = bench.rigid_cell(unit, 4, 0.0)
    moved, top = bench.rigid_cell(unit, 4, 0.3)
    assert len(moved) == 64 and top.sum() == 32
    assert np.allclose(moved.positions[~top], ref.positions[~top])
    assert np.allclose(moved.positions[top] - ref.positions[top], [0.0, 0.0, 0.3])


def test_refuses_k_folding_sizes(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "5", "6"])
    err = capsys.readouterr().err
    assert "[6]" in err and "Dirac points" in err and "--allow-k-folding" in err
