"""Tests for the layered-structure builders in :mod:`hedgenet.structures` (lengths in Å, angles in degrees)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import spglib
from ase import Atoms
from ase.neighborlist import neighbor_list

from hedgenet.structures import (
    BUILDERS,
    COMMENSURATE_TWISTS,
    bilayer_graphene,
    bilayer_hbn,
    bilayer_mos2,
    build_structure,
    builder_parameters,
    cell_widths,
    expected_atom_count,
    in_plane_width,
    make_supercell,
    monolayer_graphene,
    monolayer_hbn,
    monolayer_mos2,
    twist_angle_deg,
    twisted_bilayer_graphene,
)

SYMPREC = 1e-3


def space_group(atoms: Atoms) -> tuple[str, int]:
    data = spglib.get_symmetry_dataset(
        (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers), symprec=SYMPREC
    )
    assert data is not None
    return data.international, data.number


def check_conventions(atoms: Atoms, n_atoms: int, n_layers: int, vacuum: float = 20.0) -> None:
    assert len(atoms) == n_atoms
    assert tuple(atoms.pbc) == (True, True, True)
    cell = atoms.cell.array
    assert np.allclose(cell[:2, 2], 0.0) and np.allclose(cell[2, :2], 0.0)
    z = atoms.positions[:, 2]
    assert cell[2, 2] == pytest.approx(np.ptp(z) + vacuum, abs=1e-9)
    assert 0.5 * (z.min() + z.max()) == pytest.approx(0.5 * cell[2, 2], abs=1e-9)  # centred
    frac = atoms.get_scaled_positions(wrap=False)
    assert np.all(frac[:, :2] > -1e-8) and np.all(frac[:, :2] < 1.0)
    layer = atoms.arrays["layer"]
    assert layer.dtype == np.int64
    assert set(np.unique(layer).tolist()) == set(range(n_layers))
    counts = np.bincount(layer)
    assert np.all(counts == n_atoms // n_layers)
    assert np.all(np.diff(layer) >= 0)  # sorted by layer


def layer_heights(atoms: Atoms, symbol: str | None = None) -> list[float]:
    layer = atoms.arrays["layer"]
    mask = np.ones(len(atoms), bool) if symbol is None else np.array(atoms.get_chemical_symbols()) == symbol
    return [float(np.mean(atoms.positions[mask & (layer == k), 2])) for k in range(layer.max() + 1)]


# --------------------------------------------------------------------------------------------------------
# simple builders


@pytest.mark.parametrize(
    ("atoms", "n_atoms", "n_layers", "formula"),
    [
        (monolayer_graphene(), 2, 1, "C2"),
        (bilayer_graphene(), 4, 2, "C4"),
        (bilayer_graphene(stacking="AA"), 4, 2, "C4"),
        (monolayer_hbn(), 2, 1, "BN"),
        (bilayer_hbn(), 4, 2, "B2N2"),
        (monolayer_mos2(), 3, 1, "MoS2"),
        (bilayer_mos2(), 6, 2, "Mo2S4"),
    ],
)
def test_counts_layers_and_cell_conventions(atoms: Atoms, n_atoms: int, n_layers: int, formula: str) -> None:
    check_conventions(atoms, n_atoms, n_layers)
    assert atoms.get_chemical_formula() == formula


def test_hexagonal_cell_is_120_degree_convention() -> None:
    a = 2.46
    cell = monolayer_graphene(a=a).cell.array
    assert np.allclose(cell[0], [a, 0, 0])
    assert np.allclose(cell[1], [-a / 2, a * math.sqrt(3) / 2, 0])


@pytest.mark.parametrize("a", [2.46, 2.5])
def test_graphene_bond_length(a: float) -> None:
    atoms = monolayer_graphene(a=a)
    i, d = neighbor_list("id", atoms, 1.1 * a / math.sqrt(3))
    assert np.allclose(d, a / math.sqrt(3), atol=1e-9)
    assert np.all(np.bincount(i) == 3)


def test_graphene_stacking_by_symmetry() -> None:
    assert space_group(monolayer_graphene())[1] == 191
    assert space_group(bilayer_graphene(stacking="AB")) == ("P-3m1", 164)
    assert space_group(bilayer_graphene(stacking="AA")) == ("P6/mmm", 191)
    assert space_group(bilayer_graphene(stacking="ab"))[1] == 164  # case-insensitive


def test_shift_by_a1_plus_a2_over_3_is_not_ab() -> None:
    """Guard against the classic mistake: with the 120° cell a (a1 + a2)/3 shift is not Bernal stacking."""
    atoms = bilayer_graphene(stacking="AA")
    top = atoms.arrays["layer"] == 1
    atoms.positions[top] += (atoms.cell[0] + atoms.cell[1]) / 3.0
    assert space_group(atoms)[1] != 164


def test_ab_registry() -> None:
    """Top A sits exactly above a bottom atom, top B above a bottom hexagon centre."""
    a = 2.46
    atoms = bilayer_graphene(a=a, stacking="AB")
    layer = atoms.arrays["layer"]
    xy_bottom = atoms.positions[layer == 0, :2]
    sc = make_supercell(atoms, [[3, 0], [0, 3]])
    bottom_sc = sc.positions[sc.arrays["layer"] == 0, :2]
    dists = [np.min(np.linalg.norm(bottom_sc - p, axis=1)) for p in atoms.positions[layer == 1, :2]]
    # one top atom eclipses a bottom atom, the other is a/√3 (a hexagon centre) away from every bottom atom
    assert sorted(dists) == pytest.approx([0.0, a / math.sqrt(3)], abs=1e-9)
    assert len(xy_bottom) == 2


@pytest.mark.parametrize("d", [3.35, 3.6])
def test_graphene_interlayer_spacing(d: float) -> None:
    for stacking in ("AB", "AA"):
        atoms = bilayer_graphene(d=d, stacking=stacking, vacuum=15.0)
        z0, z1 = layer_heights(atoms)
        assert z1 - z0 == pytest.approx(d, abs=1e-12)
        assert atoms.cell[2, 2] == pytest.approx(d + 15.0)


def test_hbn_aa_prime() -> None:
    atoms = bilayer_hbn()
    assert space_group(atoms) == ("P-3m1", 164)
    assert space_group(bilayer_hbn(stacking="AA\u2032"))[1] == 164  # typographic prime accepted
    assert space_group(bilayer_hbn(stacking="AA"))[1] == 187
    assert space_group(monolayer_hbn())[1] == 187
    # B above N and N above B
    layer = atoms.arrays["layer"]
    sym = np.array(atoms.get_chemical_symbols())
    for s_top, s_bottom in (("B", "N"), ("N", "B")):
        top = atoms.positions[(layer == 1) & (sym == s_top), :2]
        bottom = atoms.positions[(layer == 0) & (sym == s_bottom), :2]
        assert np.allclose(top, bottom, atol=1e-9)
    z0, z1 = layer_heights(atoms)
    assert z1 - z0 == pytest.approx(3.33, abs=1e-12)


def test_mos2_2h() -> None:
    d, h = 6.15, 1.56
    atoms = bilayer_mos2(d=d, sulfur_height=h)
    assert space_group(atoms) == ("P-3m1", 164)
    assert space_group(monolayer_mos2())[1] == 187
    assert space_group(bilayer_mos2(stacking="3R"))[1] == 156
    z0, z1 = layer_heights(atoms, "Mo")
    assert z1 - z0 == pytest.approx(d, abs=1e-12)
    layer = atoms.arrays["layer"]
    sym = np.array(atoms.get_chemical_symbols())
    for k in (0, 1):
        in_layer = layer == k
        assert sorted(sym[in_layer].tolist()) == ["Mo", "S", "S"]
        zs = atoms.positions[in_layer & (sym == "S"), 2]
        assert np.ptp(zs) == pytest.approx(2 * h, abs=1e-12)
    # Mo of the top layer above S of the bottom layer and vice versa
    mo_top = atoms.positions[(layer == 1) & (sym == "Mo"), :2]
    s_bottom = atoms.positions[(layer == 0) & (sym == "S"), :2]
    assert np.allclose(s_bottom - mo_top, 0.0, atol=1e-9)
    s_top = atoms.positions[(layer == 1) & (sym == "S"), :2]
    mo_bottom = atoms.positions[(layer == 0) & (sym == "Mo"), :2]
    assert np.allclose(s_top - mo_bottom, 0.0, atol=1e-9)
    assert atoms.cell[2, 2] == pytest.approx(d + 2 * h + 20.0)


@pytest.mark.parametrize(
    ("func", "kwargs", "match"),
    [
        (bilayer_graphene, {"stacking": "ABC"}, "AB"),
        (bilayer_hbn, {"stacking": "AB"}, "AA'"),
        (bilayer_mos2, {"stacking": "1T"}, "2H"),
        (monolayer_graphene, {"a": -1.0}, "a must be"),
        (bilayer_graphene, {"d": 0.0}, "d must be"),
        (monolayer_graphene, {"vacuum": 0.0}, "vacuum"),
    ],
)
def test_bad_builder_arguments(func, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        func(**kwargs)


# --------------------------------------------------------------------------------------------------------
# twisted bilayer graphene


def bond_angles_mod_60(atoms: Atoms, layer: int, i: np.ndarray, j: np.ndarray, vec: np.ndarray) -> np.ndarray:
    mask = (atoms.arrays["layer"][i] == layer) & (atoms.arrays["layer"][j] == layer)
    return np.degrees(np.arctan2(vec[mask, 1], vec[mask, 0])) % 60.0


@pytest.mark.parametrize("name", list(COMMENSURATE_TWISTS))
def test_twisted_bilayer_graphene(name: str) -> None:
    m, n = COMMENSURATE_TWISTS[name]
    a, d = 2.46, 3.35
    target = float(name.removesuffix("deg"))
    atoms = twisted_bilayer_graphene(m, n, a=a, d=d)
    n_atoms = expected_atom_count(m, n)
    assert n_atoms == 4 * (m * m + m * n + n * n)
    check_conventions(atoms, n_atoms, 2)
    assert set(atoms.get_chemical_symbols()) == {"C"}

    # twist angle: formula, metadata and geometry
    theta = twist_angle_deg(m, n)
    assert theta == pytest.approx(target, abs=0.01)
    assert atoms.info["twist_angle_deg"] == pytest.approx(theta, abs=1e-12)
    assert tuple(atoms.info["mn"]) == (m, n)

    # in-plane bonds: every atom has exactly 3 same-layer neighbours at a/√3; no duplicates (< 1.3 Å)
    i, j, dist, vec = neighbor_list("ijdD", atoms, 1.6)
    lay = atoms.arrays["layer"]
    same = lay[i] == lay[j]
    assert np.all(dist[same] >= 1.3)
    assert np.allclose(dist[same], a / math.sqrt(3), rtol=0.0, atol=1e-6)
    assert np.all(np.bincount(i[same], minlength=len(atoms)) == 3)
    assert not np.any(~same & (dist < 1.3))

    # geometric twist: bond directions of each layer are 60°-periodic; layer 1 is rotated by θ
    ang0 = bond_angles_mod_60(atoms, 0, i, j, vec)
    ang1 = bond_angles_mod_60(atoms, 1, i, j, vec)
    assert np.allclose(ang0, 30.0, atol=1e-6)
    delta = (ang1 - 30.0) % 60.0
    folded = np.minimum(delta, 60.0 - delta)
    assert np.allclose(folded, theta, atol=1e-6)

    # layers are flat and d apart; both layers commensurate with the cell (checked by the 3-neighbour test)
    for k, z in enumerate(layer_heights(atoms)):
        assert np.ptp(atoms.positions[lay == k, 2]) < 1e-9
    z0, z1 = layer_heights(atoms)
    assert z1 - z0 == pytest.approx(d, abs=1e-9)

    # superlattice |t1| = |t2| = a √(m² + mn + n²), 120° apart (same convention as a1, a2)
    t1, t2 = atoms.cell.array[:2]
    length = a * math.sqrt(m * m + m * n + n * n)
    assert np.linalg.norm(t1) == pytest.approx(length) and np.linalg.norm(t2) == pytest.approx(length)
    assert np.dot(t1, t2) == pytest.approx(-0.5 * length**2)


def test_large_twisted_cell_has_at_least_1e4_atoms() -> None:
    m, n = COMMENSURATE_TWISTS["1.12deg"]
    assert (m, n) == (29, 30)
    assert expected_atom_count(m, n) == 10444 >= 10_000
    assert twist_angle_deg(m, n) == pytest.approx(1.12, abs=0.01)
    atoms = twisted_bilayer_graphene(m, n)
    assert len(atoms) == 10444 and np.bincount(atoms.arrays["layer"]).tolist() == [5222, 5222]


def test_twisted_symmetry_and_sign() -> None:
    # rotation about a common atom site of AA stacking -> D3 (P321, No. 150)
    assert space_group(twisted_bilayer_graphene(1, 2))[1] == 150
    swapped = twisted_bilayer_graphene(2, 1)
    assert swapped.info["twist_angle_deg"] == pytest.approx(twist_angle_deg(1, 2))
    assert len(swapped) == expected_atom_count(1, 2)


@pytest.mark.parametrize("mn", [(3, 3), (-1, 2), (1.5, 2)])
def test_twisted_bad_indices(mn: tuple) -> None:
    with pytest.raises(ValueError, match=r"\bm\b|\bn\b"):
        twisted_bilayer_graphene(*mn)


# --------------------------------------------------------------------------------------------------------
# supercells and cell geometry


@pytest.mark.parametrize(
    "matrix",
    [
        [[2, 0], [0, 2]],
        [[2, 1], [-1, 3]],
        np.array([[3, 0, 0], [0, 2, 0], [0, 0, 1]]),
        [[1.0, 1.0], [-1.0, 2.0]],  # integral floats are fine
        [2, 3],  # diagonal shorthand (in-plane)
        (2, 2, 1),
    ],
)
def test_make_supercell_keeps_layers(matrix) -> None:
    atoms = bilayer_graphene()
    sc = make_supercell(atoms, matrix)
    full = np.asarray(matrix, dtype=float)
    det = abs(round(np.linalg.det(np.diag(full) if full.ndim == 1 else full)))
    assert len(sc) == det * len(atoms)
    check_conventions(sc, det * len(atoms), 2)
    assert np.allclose(sc.cell[2], atoms.cell[2])
    assert space_group(sc)[1] == 164  # stacking is preserved
    # deterministic
    again = make_supercell(atoms, matrix)
    assert np.array_equal(again.positions, sc.positions)
    assert np.array_equal(again.arrays["layer"], sc.arrays["layer"])


def test_make_supercell_of_twisted_and_mos2() -> None:
    tbg = twisted_bilayer_graphene(1, 2)
    sc = make_supercell(tbg, [[2, 0], [0, 1]])
    assert len(sc) == 56 and np.bincount(sc.arrays["layer"]).tolist() == [28, 28]
    assert sc.info["twist_angle_deg"] == tbg.info["twist_angle_deg"]
    mos2 = make_supercell(bilayer_mos2(), [[2, 0], [0, 2]])
    assert np.bincount(mos2.arrays["layer"]).tolist() == [12, 12]
    assert space_group(mos2)[1] == 164


@pytest.mark.parametrize(
    ("matrix", "match"),
    [
        ([[1.5, 0], [0, 1]], "integer"),
        ([[1, 2], [2, 4]], "singular"),
        (np.zeros((3, 3)), "singular"),
        ([[1, 0, 0], [0, 1, 0]], "shape"),
        ([1, 2, 3, 4], "shape"),
        ([2, 0], "singular"),
        ([[1, 0], [0, np.nan]], "non-finite"),
    ],
)
def test_make_supercell_bad_matrix(matrix, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_supercell(bilayer_graphene(), matrix)


def test_cell_widths() -> None:
    a = 2.46
    sc = make_supercell(monolayer_graphene(a=a), [[6, 0], [0, 6]])
    widths = cell_widths(sc.cell)
    assert widths.shape == (3,)
    assert widths[:2] == pytest.approx([6 * a * math.sqrt(3) / 2] * 2, abs=1e-9)
    assert widths[2] == pytest.approx(sc.cell[2, 2])
    assert in_plane_width(sc.cell) == pytest.approx(6 * a * math.sqrt(3) / 2, abs=1e-9)
    assert np.allclose(cell_widths(sc), widths) and np.allclose(cell_widths(sc.cell.array), widths)
    assert cell_widths(np.diag([1.0, 2.0, 3.0])) == pytest.approx([1.0, 2.0, 3.0])


# --------------------------------------------------------------------------------------------------------
# registry


def test_build_structure_dispatch() -> None:
    assert set(BUILDERS) >= {
        "monolayer_graphene",
        "bilayer_graphene",
        "twisted_bilayer_graphene",
        "bilayer_hbn",
        "bilayer_mos2",
        "monolayer_hbn",  # used by the relaxation steps of the material configs
        "monolayer_mos2",
    }
    assert builder_parameters("bilayer_mos2") == ("a", "d", "sulfur_height", "stacking", "vacuum")
    assert builder_parameters("twisted_bilayer_graphene")[:2] == ("m", "n")
    with pytest.raises(ValueError, match="valid builders"):
        builder_parameters("trilayer_graphene")
    atoms = build_structure("bilayer_graphene", stacking="AA", d=3.5)
    assert space_group(atoms)[1] == 191
    tbg = build_structure("twisted_bilayer_graphene", m=2, n=3)
    assert len(tbg) == expected_atom_count(2, 3)


def test_build_structure_unknown_builder() -> None:
    with pytest.raises(ValueError) as err:
        build_structure("bilayer_graphen")
    msg = str(err.value)
    assert "bilayer_graphen'" in msg and "Did you mean 'bilayer_graphene'" in msg
    for name in BUILDERS:
        assert name in msg


def test_build_structure_bad_parameters() -> None:
    with pytest.raises(TypeError, match="spacing") as err:
        build_structure("bilayer_graphene", spacing=3.4)
    assert isinstance(err.value, ValueError)
    assert "'d'" in str(err.value) and "'stacking'" in str(err.value)
    with pytest.raises(ValueError, match=r"missing required parameter\(s\) \['n'\]"):
        build_structure("twisted_bilayer_graphene", m=1)
