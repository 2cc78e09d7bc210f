"""The interlayer-energies benchmark's pure parts: its slides reach the stackings they are named after, and the
comparison of energies (relative to AB, per atom) marks training geometries and extrapolations."""

import numpy as np
import pytest
from ase import Atoms

from hedgenet.structures import build_structure


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("interlayer_energies")


def _slid(a, y):
    """hedgenet's AB bilayer with its top layer moved by y C–C bonds along y (the benchmark's slide)."""
    ab = build_structure("bilayer_graphene", a=a, d=3.3223, stacking="AB")
    top = ab.positions[:, 2] > ab.positions[:, 2].mean()
    ab.positions[top] += [0.0, y * a / np.sqrt(3), 0.0]
    return ab


def _same_layers(x: Atoms, y: Atoms) -> bool:
    """Every atom of x on an atom of y modulo the in-plane lattice (a 3×3 neighbourhood of images)."""
    cell = y.cell[:2]
    images = np.array([i * cell[0] + j * cell[1] for i in (-1, 0, 1) for j in (-1, 0, 1)])
    return all(np.min(np.linalg.norm(y.positions[None, :, :] + images[:, None, :] - p, axis=-1)) < 1e-6
               for p in x.positions)


def test_slides_reach_aa_and_ba(bench):
    a = 2.4581
    assert bench.bond_A(a) == pytest.approx(1.41918, abs=1e-5)
    shifts = bench.shifts([0.1], [-1.0, 0.5, 1.0], a)
    assert shifts[0] == [0.0, 0.0, 0.0] and shifts[1] == [0.0, 0.0, 0.1]
    assert shifts[2] == [0.0, round(-a / np.sqrt(3), 4), 0.0]
    aa = build_structure("bilayer_graphene", a=a, d=3.3223, stacking="AA")
    ab = build_structure("bilayer_graphene", a=a, d=3.3223, stacking="AB")
    slid_aa = _slid(a, -1.0)
    slid_ba = _slid(a, 1.0)
    assert _same_layers(slid_aa, aa)          # y = −1: AA
    assert not _same_layers(slid_ba, aa) and not _same_layers(ab, aa)
    # y = +1 (BA) is AB mirrored: every top atom sits over a bottom atom or a hexagon centre, as in AB
    top = slid_ba.positions[:, 2] > slid_ba.positions[:, 2].mean()
    bottom_xy = slid_ba.positions[~top]
    bottom_xy[:, 2] = 0
    over_atom = []
    for p in slid_ba.positions[top]:
        q = p.copy()
        q[2] = 0
        images = np.array([i * slid_ba.cell[0] + j * slid_ba.cell[1] for i in (-1, 0, 1) for j in (-1, 0, 1)])
        over_atom.append(np.min(np.linalg.norm(bottom_xy[None] + images[:, None] - q, axis=-1)) < 1e-6)
    assert sorted(over_atom) == [False, True]


def _cells(shifts, energies_eV, n_atoms=4):
    return [{"shift_A": s, "atoms": Atoms("C" * n_atoms), "energy_eV": e} for s, e in zip(shifts, energies_eV)]


def test_compare_relative_energies_and_marks(bench):
    a = 2.4581
    b = round(a / np.sqrt(3), 4)
    shifts = [[0.0, 0.0, 0.0], [0.0, 0.0, -0.1], [0.0, 0.0, 0.1], [0.0, 0.0, 0.3], [0.0, -b, 0.0], [0.0, b / 2, 0.0]]
    ref = [-10.0, -9.996, -9.998, -9.99, -9.992, -9.9996]         # eV for 4 atoms
    model = [-20.0, -19.996, -19.9984, -19.9912, -19.992, -19.9996]  # a constant offset does not matter
    out = bench.compare(_cells(shifts, ref), model, a, training=[[0.0, 0.0, -0.1], [0.0, 0.0, 0.1], [0.0, -b, 0.0]])
    rows = {(r["set"], round(r["x"], 3)): r for r in out["cells"]}
    assert rows[("binding curve", -0.1)]["reference_meV_atom"] == pytest.approx(1.0)
    assert rows[("binding curve", 0.1)]["error_meV_atom"] == pytest.approx(-0.1)
    assert rows[("binding curve", 0.3)]["error_meV_atom"] == pytest.approx(-0.3)
    assert rows[("binding curve", 0.3)]["note"] == "beyond the training Δd"
    assert rows[("binding curve", 0.1)]["note"] == "training geometry"
    assert rows[("sliding line", -1.0)]["note"] == "training geometry"
    assert rows[("sliding line", 0.5)]["note"] == ""
    assert out["AA_meV_atom"] == {"model": pytest.approx(2.0), "reference": pytest.approx(2.0)}
    assert out["saddle_point_meV_atom"]["reference"] == pytest.approx(0.1)
    assert out["binding curve"]["max_meV_atom"] == pytest.approx(0.3)
    assert out["binding curve"]["within_training_range_max_meV_atom"] == pytest.approx(0.1)


def test_curve_minimum_of_a_parabola(bench):
    dz = np.array([-0.2, -0.1, 0.0, 0.1, 0.3])
    e = 5.0 * (dz - 0.03) ** 2
    assert bench.curve_minimum(dz, e) == pytest.approx(0.03)
    assert np.isnan(bench.curve_minimum(dz, -e))  # no minimum: not a made-up one
