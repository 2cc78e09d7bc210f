"""DeepH folder export/import: exact round trips, file conventions, orbital orders, clear errors."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import graphene

from hedgenet.data.deeph_format import deeph_shell_transform, export_deeph, import_deeph
from hedgenet.orbitals.blocks import BlockSet, block_edges
from hedgenet.orbitals.layout import OrbitalLayout


@pytest.fixture(scope="module")
def labelled():
    from hedgenet.reference.xtb import XTBReference

    atoms = graphene(a=2.46, vacuum=10).repeat((5, 5, 1))
    atoms.rattle(0.02, seed=3)
    atoms.arrays["layer"] = np.zeros(len(atoms), int)
    ref = XTBReference(block_cutoff=4.5)
    res = ref.compute(atoms)
    return atoms, res.blocks, ref.layout, res.fermi_level_eV


@pytest.fixture
def exported(labelled, tmp_path):
    atoms, blocks, layout, ef = labelled
    folder = export_deeph(tmp_path / "s0", atoms, blocks, layout, fermi_level_eV=ef)
    return folder


def _synthetic_d(seed=0):
    """Mo + 2 S in a big cell with random Hermitian blocks (exercises d shells)."""
    rng = np.random.default_rng(seed)
    atoms = Atoms(
        "MoS2",
        positions=[[0, 0, 0], [1.6, 0.9, 1.5], [1.6, 0.9, -1.5]],
        cell=[[3.2, 0, 0], [-1.6, 2.77, 0], [0, 0, 20]],
        pbc=True,
    )
    layout = OrbitalLayout(shells={42: (2, 0, 1), 16: (0, 1, 2)}, basis_name="test")
    ei, sh, _ = block_edges(atoms, 3.5)
    n_orb = np.array([layout.n_orb(int(z)) for z in atoms.numbers])
    n_max = n_orb.max()
    E = ei.shape[1]
    H = np.zeros((E, n_max, n_max))
    S = np.zeros((E, n_max, n_max))
    keys = {(int(i), int(j), *map(int, r)): e for e, (i, j, r) in enumerate(zip(*ei, sh))}
    for e, (i, j, r) in enumerate(zip(*ei, sh)):
        rev = keys[(int(j), int(i), *map(int, -r))]
        if rev < e:
            H[e, : n_orb[i], : n_orb[j]] = H[rev, : n_orb[j], : n_orb[i]].T
            S[e, : n_orb[i], : n_orb[j]] = S[rev, : n_orb[j], : n_orb[i]].T
            continue
        h = rng.normal(size=(n_orb[i], n_orb[j]))
        s = rng.normal(size=(n_orb[i], n_orb[j]))
        if rev == e:
            h, s = h + h.T, s + s.T
        H[e, : n_orb[i], : n_orb[j]] = h
        S[e, : n_orb[i], : n_orb[j]] = s
    return atoms, BlockSet(ei, sh, H, S, n_orb), layout


def test_roundtrip_e3nn_exact(labelled, exported):
    atoms, blocks, layout, ef = labelled
    for name in ("lat.dat", "rlat.dat", "site_positions.dat", "element.dat", "orbital_types.dat",
                 "info.json", "R_list.dat", "hamiltonians.h5", "overlaps.h5", "layer.dat"):
        assert (exported / name).is_file(), name
    a2, b2, lay2, info = import_deeph(exported)
    assert np.array_equal(a2.positions, atoms.positions)
    assert np.array_equal(a2.cell.array, atoms.cell.array)
    assert np.array_equal(a2.numbers, atoms.numbers)
    assert np.array_equal(a2.arrays["layer"], atoms.arrays["layer"])
    assert a2.pbc.all()
    assert np.array_equal(b2.edge_index, blocks.edge_index)
    assert np.array_equal(b2.cell_shift, blocks.cell_shift)
    assert np.array_equal(b2.n_orb, blocks.n_orb)
    assert np.array_equal(b2.H, blocks.H)
    assert np.array_equal(b2.S, blocks.S)
    assert lay2.shells == {6: layout.shells[6]}
    assert info["orbital_order"] == "e3nn"
    assert info["fermi_level_eV"] == ef
    assert info["isspinful"] is False and "hedgenet_version" in info


def test_file_conventions(labelled, exported):
    atoms, blocks, layout, ef = labelled
    assert np.array_equal(np.loadtxt(exported / "lat.dat"), atoms.cell.array.T)  # vectors as columns
    rlat = np.loadtxt(exported / "rlat.dat")
    assert np.allclose(atoms.cell.array @ rlat, 2 * np.pi * np.eye(3))
    assert np.loadtxt(exported / "site_positions.dat").shape == (3, len(atoms))
    assert np.array_equal(np.loadtxt(exported / "element.dat", dtype=int), atoms.numbers)
    lines = (exported / "orbital_types.dat").read_text().splitlines()
    assert len(lines) == len(atoms) and [int(v) for v in lines[0].split()] == [0, 1]
    info = json.loads((exported / "info.json").read_text())
    assert info["isspinful"] is False and info["orbital_order"] == "e3nn"
    assert info["fermi_level"] == pytest.approx(ef)
    r_list = np.loadtxt(exported / "R_list.dat", dtype=int, ndmin=2)
    assert {tuple(r) for r in r_list} == {tuple(r) for r in blocks.cell_shift}
    with h5py.File(exported / "hamiltonians.h5", "r") as f:
        keys = set(f.keys())
        assert len(keys) == blocks.n_edges
        i, j = blocks.edge_index[:, 7]
        r = blocks.cell_shift[7]
        key = f"[{r[0]}, {r[1]}, {r[2]}, {i + 1}, {j + 1}]"
        assert key in keys
        assert f[key].shape == (4, 4)
        assert np.array_equal(f[key][()], blocks.H[7, :4, :4])
        assert "[0, 0, 0, 1, 1]" in keys and "[0, 0, 0, 0, 0]" not in keys
        for k in keys:
            v = json.loads(k)
            assert len(v) == 5 and 1 <= v[3] <= len(atoms) and 1 <= v[4] <= len(atoms)


def test_roundtrip_standard_order_graphene(labelled, tmp_path):
    """p shells written as (y, z, x): the file differs by a permutation and reads back exactly."""
    atoms, blocks, layout, ef = labelled
    folder = export_deeph(tmp_path / "std", atoms, blocks, layout, orbital_order="standard")
    with h5py.File(folder / "hamiltonians.h5", "r") as f:
        onsite = f["[0, 0, 0, 1, 1]"][()]
    perm = [0, 2, 3, 1]  # s, (y, z, x) from e3nn s, (x, y, z)
    assert np.array_equal(onsite, blocks.H[0][np.ix_(perm, perm)])
    a2, b2, _, info = import_deeph(folder)
    assert info["orbital_order"] == "standard"
    assert np.array_equal(b2.H, blocks.H) and np.array_equal(b2.S, blocks.S)


@pytest.mark.parametrize("order", ["deeph", "standard", "pyscf", "openmx"])
def test_roundtrip_d_shells(order, tmp_path):
    atoms, blocks, layout = _synthetic_d()
    folder = export_deeph(tmp_path / order, atoms, blocks, layout, fermi_level_eV=None, orbital_order=order)
    a2, b2, lay2, info = import_deeph(folder)
    assert info["fermi_level_eV"] is None
    assert lay2.shells == layout.shells and lay2.basis_name == "test"
    assert np.array_equal(b2.edge_index, blocks.edge_index)
    assert np.array_equal(b2.cell_shift, blocks.cell_shift)
    assert np.allclose(b2.H, blocks.H, atol=1e-13) and np.allclose(b2.S, blocks.S, atol=1e-13)
    # a DeepH-pack folder has no orbital_order key: the caller must say which order it is in
    info_path = folder / "info.json"
    raw = json.loads(info_path.read_text())
    raw.pop("orbital_order")
    info_path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="orbital_order"):
        import_deeph(folder)
    _, b3, _, _ = import_deeph(folder, orbital_order=order)
    assert np.allclose(b3.H, blocks.H, atol=1e-13)


def test_deeph_order_is_openmx_order():
    """deeph d order = (z², x²−y², xy, xz, yz) in terms of hedgenet's e3nn functions, p = (x, y, z)."""
    rng = np.random.default_rng(1)
    x, y, z = rng.normal(size=(3, 50))
    r2 = x**2 + y**2 + z**2
    c = np.sqrt(15.0)
    e3nn_d = np.stack([c * x * z, c * x * y, np.sqrt(5) * (y**2 - 0.5 * (x**2 + z**2)), c * y * z,
                       c / 2 * (z**2 - x**2)])
    deeph_d = np.stack([np.sqrt(5) / 2 * (3 * z**2 - r2), c / 2 * (x**2 - y**2), c * x * y, c * x * z,
                        c * y * z])
    assert np.allclose(e3nn_d, deeph_shell_transform("deeph", 2) @ deeph_d)
    assert np.array_equal(deeph_shell_transform("deeph", 1), np.eye(3))
    std_p = np.stack([y, z, x])
    assert np.allclose(np.stack([x, y, z]), deeph_shell_transform("standard", 1) @ std_p)


def test_deeph_rotation_matches_deeph_pack_convention():
    """DeepH-pack/DeepH-E3 rotate blocks in their order with Us_openmx2wiki^T D(R') Us_openmx2wiki, R' the
    rotation in (y, z, x) axes; after our conversion that must equal hedgenet's e3nn D(R)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("e3nn")
    # e3nn 0.4.4 loads its own constants.pt with torch.load; torch >= 2.6 needs `slice` allow-listed.
    with torch.serialization.safe_globals([slice]):
        from e3nn import o3
    openmx2wiki = {1: np.eye(3)[[1, 2, 0]], 2: np.eye(5)[[2, 4, 0, 3, 1]]}
    from scipy.spatial.transform import Rotation

    # Rotations exact in float64 (o3.rand_matrix draws float32: its ~3e-8 errors fail a 1e-10 comparison).
    R = torch.from_numpy(Rotation.random(8, random_state=7).as_matrix())
    for Rm in R:
        Rp = Rm[[1, 2, 0]][:, [1, 2, 0]]
        for l in (1, 2):
            d_e3nn = o3.Irrep(l, (-1) ** l).D_from_matrix(Rm).numpy()
            d_deeph = o3.Irrep(l, 1).D_from_matrix(Rp).numpy()
            W = openmx2wiki[l]
            U = deeph_shell_transform("deeph", l)
            assert np.allclose(U.T @ d_e3nn @ U, W.T @ d_deeph @ W, atol=1e-10)


def test_missing_file(exported):
    (exported / "orbital_types.dat").unlink()
    with pytest.raises(ValueError, match="missing required file.*orbital_types.dat"):
        import_deeph(exported)


def test_missing_overlaps_optional(exported):
    (exported / "overlaps.h5").unlink()
    with pytest.raises(ValueError, match="overlaps.h5"):
        import_deeph(exported)
    _, b, _, info = import_deeph(exported, require_overlaps=False)
    assert not info["has_overlaps"] and not b.S.any()


def test_truncated_h5(exported):
    path = exported / "hamiltonians.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="hamiltonians.h5"):
        import_deeph(exported)


def test_missing_hermitian_partner(exported):
    for name in ("hamiltonians.h5", "overlaps.h5"):
        with h5py.File(exported / name, "a") as f:
            k = next(k for k in f.keys() if json.loads(k)[3] != json.loads(k)[4])
            del f[k]
    with pytest.raises(ValueError, match="Hermitian partner"):
        import_deeph(exported)


def test_inconsistent_shapes(exported, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(exported, other)
    lines = (exported / "element.dat").read_text().splitlines()
    (exported / "element.dat").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="element.dat"):
        import_deeph(exported)
    with h5py.File(other / "hamiltonians.h5", "a") as f:
        del f["[0, 0, 0, 1, 1]"]
        f["[0, 0, 0, 1, 1]"] = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"hamiltonians.h5.*shape"):
        import_deeph(other)


def test_unknown_order(labelled, tmp_path):
    atoms, blocks, layout, _ = labelled
    with pytest.raises(ValueError, match="unknown orbital_order"):
        export_deeph(tmp_path / "x", atoms, blocks, layout, orbital_order="siesta")
