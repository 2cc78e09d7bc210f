"""Your own data in, any dataset out: extxyz (energy, forces, stress) and DeepH folders (H, S) imported as
datasets hedgenet-train takes; datasets exported as extxyz; bad sources refused with the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from cli_runner import TINY_TRAIN

from hedgenet.data.interchange import export_extxyz, import_sources
from hedgenet.data.store import DatasetError, DatasetStore

BIN = Path(sys.executable).parent


def dataset_cli(*args):
    return subprocess.run([str(BIN / "hedgenet-dataset"), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_extxyz_round_trip_and_training(tiny_dataset, tmp_path):
    """Export the xTB dataset to extxyz, import it back without layers: the same energies, forces, virials,
    positions and (detected) layers; the import trains with task=forces."""
    frames = tmp_path / "frames.extxyz"
    proc = dataset_cli("export", tiny_dataset, frames)
    assert proc.returncode == 0, proc.stderr
    written = ase.io.read(frames, index=":")
    original = list(DatasetStore(tiny_dataset).iter_samples())
    assert len(written) == len(original) == 3
    for atoms in written:  # a user's file has no layer column
        del atoms.arrays["layer"]
    bare = tmp_path / "bare.extxyz"
    ase.io.write(bare, written, format="extxyz")
    out = tmp_path / "data" / "mine.h5"
    proc = dataset_cli("import", out, bare)
    assert proc.returncode == 0, proc.stderr
    assert f"hedgenet-train data.paths=[{out}]" in proc.stdout
    back = list(DatasetStore(out).iter_samples())
    for a, b in zip(original, back):
        assert b["kind"] == "imported" and "H" not in b
        assert np.allclose(a["positions"], b["positions"]) and np.array_equal(a["layer"], b["layer"])
        assert b["energy"] == pytest.approx(float(a["energy"]), abs=1e-8)
        assert np.allclose(a["forces"], b["forces"], atol=1e-8)
        assert np.allclose(a["virial"], b["virial"], atol=1e-6)
    summary = json.loads(proc.stdout[: proc.stdout.rindex("}") + 1])
    assert summary["n_samples"] == 3 and summary["edges_per_sample"] == []
    cmd = [str(BIN / "hedgenet-train"), f"data.paths=[{out}]", "task=forces", "logger=csv", *TINY_TRAIN,
           f"hydra.run.dir={tmp_path}/train"]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={"HEDGENET_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
                              "PATH": str(BIN)})
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    # one epoch of a tiny model: finite errors on every label the import carries, layer forces included
    for key in ("val/energy_mae", "val/forces_mae", "val/layer_forces_mae", "val/virial_mae"):
        assert np.isfinite(metrics[key]), key


def test_deeph_folders_become_a_hamiltonian_dataset(tiny_dataset, tmp_path):
    """Two samples exported as DeepH folders and imported together: the same H and S blocks."""
    for k in (0, 1):
        proc = dataset_cli("export-deeph", tiny_dataset, tmp_path / f"deeph{k}", "--sample", k)
        assert proc.returncode == 0, proc.stderr
    out = tmp_path / "blocks.h5"
    store = import_sources(out, [tmp_path / "deeph0", tmp_path / "deeph1"])
    original = DatasetStore(tiny_dataset)
    for k, s in enumerate(store.iter_samples()):
        a = original.read_sample(k)
        assert "energy" not in s and s["source"].endswith(f"deeph{k}")
        order = np.lexsort((a["cell_shift"][:, 2], a["cell_shift"][:, 1], a["cell_shift"][:, 0],
                            a["edge_index"][1], a["edge_index"][0]))
        assert np.array_equal(s["edge_index"], a["edge_index"][:, order])
        assert np.allclose(s["H"], a["H"][order], atol=1e-10) and np.allclose(s["S"], a["S"][order], atol=1e-10)
    assert store.summary()["energy_per_atom_eV"] == []


def test_bad_sources_are_refused(tiny_dataset, tmp_path):
    no_labels = tmp_path / "plain.extxyz"
    atoms = next(DatasetStore(tiny_dataset).iter_samples())
    from ase import Atoms

    ase.io.write(no_labels, Atoms(numbers=atoms["numbers"], positions=atoms["positions"], cell=atoms["cell"], pbc=True))
    with pytest.raises(DatasetError, match="no energy and forces.*Fix"):
        import_sources(tmp_path / "a.h5", [no_labels])
    with pytest.raises(DatasetError, match="no such file or folder"):
        import_sources(tmp_path / "b.h5", [tmp_path / "missing.extxyz"])
    with pytest.raises(DatasetError, match="exists: an import writes a new dataset"):
        import_sources(tiny_dataset, [no_labels])
    proc = dataset_cli("import", tmp_path / "c.h5", no_labels)
    assert proc.returncode == 2 and "no energy and forces" in proc.stderr
    assert export_extxyz(tiny_dataset, tmp_path / "all.extxyz") == 3
