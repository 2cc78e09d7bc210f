"""material=file: a user's own structure file (POSCAR, extxyz, CIF, …) gives the same unit cell and layers as
the registered builders, and bad files get errors that name the fix."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest

from hedgenet.structures import build_structure, make_supercell
from hedgenet.structures.from_file import file_stem, label_supercell_for, structure_from_file

MATERIALS = [("bilayer_graphene", {"stacking": "AB"}), ("bilayer_hbn", {}), ("bilayer_mos2", {}),
             ("twisted_bilayer_graphene", {"m": 2, "n": 3}), ("monolayer_graphene", {})]


@pytest.mark.parametrize("fmt", ["vasp", "extxyz", "cif"])
@pytest.mark.parametrize("builder,params", MATERIALS)
def test_round_trip_through_a_file(tmp_path, builder, params, fmt):
    """Written without its layer array and read back: same cell, positions and (detected) layers."""
    atoms = build_structure(builder, **params)
    bare = atoms.copy()
    del bare.arrays["layer"]
    path = tmp_path / f"cell.{fmt}"
    ase.io.write(path, bare, format=fmt)
    back = build_structure("file", path=str(path))
    # CIF stores lengths, angles and fractional coordinates (a1 along x): compare those
    assert np.allclose(back.cell.cellpar(), atoms.cell.cellpar(), atol=1e-4)
    d = back.get_scaled_positions() - atoms.get_scaled_positions()
    assert np.abs((d - np.rint(d)) @ atoms.cell.array).max() < 1e-4
    if fmt != "cif":
        assert np.allclose(back.cell.array, atoms.cell.array, atol=1e-5)
    assert np.array_equal(back.arrays["layer"], atoms.arrays["layer"])
    assert back.info["builder"] == "file" and all(back.pbc)


def test_a_layer_column_overrides_detection(tmp_path):
    atoms = build_structure("bilayer_graphene", stacking="AB")
    atoms.arrays["layer"] = np.array([0, 0, 0, 0])  # the user's choice: one layer
    ase.io.write(tmp_path / "one.extxyz", atoms)
    assert np.array_equal(structure_from_file(str(tmp_path / "one.extxyz")).arrays["layer"], [0, 0, 0, 0])


def test_labelling_supercell_and_name(tmp_path):
    assert file_stem("/data/My bilayer.v2.vasp") == "My_bilayer"  # no such file: the stem alone
    path = tmp_path / "My bilayer.v2.vasp"
    ase.io.write(path, build_structure("bilayer_graphene"), format="vasp")
    first = file_stem(str(path))
    assert first.startswith("My_bilayer-") and len(first) == len("My_bilayer-") + 8
    ase.io.write(path, build_structure("bilayer_graphene", d=3.4), format="vasp")
    assert file_stem(str(path)) != first  # an edited file is another material
    assert label_supercell_for("/nonexistent.vasp", 5.0) == [1, 1]


@pytest.mark.parametrize("builder,params,cutoff,expected", [
    ("bilayer_graphene", {}, 5.0, [5, 5]),                       # 2.13 Å wide: 5 × 2.13 = 10.6 > 10
    ("twisted_bilayer_graphene", {"m": 2, "n": 3}, 5.0, [2, 2]),  # 9.3 Å wide
    ("twisted_bilayer_graphene", {"m": 3, "n": 4}, 5.0, [1, 1]),  # 13.0 Å wide
])
def test_labelling_supercell_is_the_smallest_wide_enough(tmp_path, builder, params, cutoff, expected):
    from hedgenet.orbitals.cells import cell_widths

    atoms = build_structure(builder, **params)
    ase.io.write(tmp_path / "c.vasp", atoms, format="vasp")
    n = label_supercell_for(str(tmp_path / "c.vasp"), cutoff)
    assert n == expected
    assert cell_widths(make_supercell(atoms, n).cell)[:2].min() > 2 * cutoff
    if n[0] > 1:
        assert cell_widths(make_supercell(atoms, [n[0] - 1] * 2).cell)[:2].min() <= 2 * cutoff


def test_bad_files_are_refused_with_the_fix(tmp_path):
    ab = build_structure("bilayer_graphene", stacking="AB")
    with pytest.raises(ValueError, match="no such file.*Fix: material.path="):
        structure_from_file(str(tmp_path / "missing.vasp"))
    (tmp_path / "junk.cif").write_text("this is not a crystal\n")
    with pytest.raises(ValueError, match="ASE cannot read it"):
        structure_from_file(str(tmp_path / "junk.cif"))
    bulk = ab.copy()
    bulk.cell[2] = [0, 0, 6.7]  # graphite-like: no vacuum
    bulk.positions[:, 2] -= bulk.positions[:, 2].min()
    ase.io.write(tmp_path / "bulk.vasp", bulk, format="vasp")
    with pytest.raises(ValueError, match="no vacuum.*material.params.vacuum=20"):
        structure_from_file(str(tmp_path / "bulk.vasp"))
    fixed = structure_from_file(str(tmp_path / "bulk.vasp"), vacuum=20.0)  # the fix the message names
    assert fixed.cell[2, 2] == pytest.approx(20.0 + np.ptp(bulk.positions[:, 2]))
    assert np.array_equal(fixed.arrays["layer"], ab.arrays["layer"])
    twice = ab + ab[:1]
    ase.io.write(tmp_path / "twice.extxyz", twice)
    with pytest.raises(ValueError, match="atoms 0 and 4 .* apart.*written twice"):
        structure_from_file(str(tmp_path / "twice.extxyz"))
    tilted = ab.copy()
    tilted.rotate(30, "x", rotate_cell=True)
    ase.io.write(tmp_path / "tilted.extxyz", tilted)
    with pytest.raises(ValueError, match="a1, a2 in the xy plane and a3 along z"):
        structure_from_file(str(tmp_path / "tilted.extxyz"))


def test_pipeline_dry_run_on_a_file(tmp_path):
    """hedgenet-pipeline material=file material.path=<POSCAR> plans every stage with the file's material (the
    material's overrides reach every stage); another file is another plan."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "POSCAR"
    ase.io.write(path, build_structure("bilayer_graphene", a=2.4581, d=3.3225), format="vasp")
    exe = Path(sys.executable).parent / "hedgenet-pipeline"
    env = {**os.environ, "HEDGENET_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}

    def dry(name, p):
        proc = subprocess.run([str(exe), "material=file", f"material.path={p}", "dry_run=true",
                               f"hydra.run.dir={tmp_path}/{name}"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return {r["stage"]: r["hash"] for r in json.loads((tmp_path / name / "stages.json").read_text())}

    first = dry("a", path)
    assert {"label", "train", "phonons_model", "fermi_velocity_model"} <= set(first)
    other = tmp_path / "POSCAR2"
    ase.io.write(other, build_structure("bilayer_graphene", a=2.4581, d=3.40), format="vasp")
    second = dry("b", other)
    assert first["label"] != second["label"]
