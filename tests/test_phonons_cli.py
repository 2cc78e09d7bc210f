"""hedgenet-phonons end to end: xTB phonons of AB bilayer graphene, a model run compared against them,
and clear errors for bad inputs. The model is an untrained small HedgeNet saved like hedgenet-train saves
one: this checks the pipeline, the accuracy of trained models is measured in docs/results_training.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli, untrained_model

CELL = ["phonons.supercell=[4,4]", "phonons.npoints=11", "phonons.dos_mesh=[12,12,1]"]


def phonons(root: Path, name: str, *overrides: str, check: bool = True):
    return run_cli("hedgenet-phonons", root, name, [*CELL, *overrides], check=check)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("phonons_root")


@pytest.fixture(scope="module")
def reference_run(root):
    return phonons(root, "xtb")[1]


@pytest.fixture(scope="module")
def model_file(root) -> Path:
    return untrained_model(root / "model.pt")


def test_reference_run_writes_bands_modes_and_phonopy_file(reference_run):
    for f in ("phonons.npz", "phonopy_params.yaml", "gamma_modes.json", "phonon_bands.png", "summary.json",
              "resolved_config.yaml"):
        assert (reference_run / f).exists(), f
    s = json.loads((reference_run / "summary.json").read_text())
    assert s["asr_violation_after_eV_A2"] < 1e-10
    assert 0 < s["gamma_interlayer_shear_THz"] < s["gamma_layer_breathing_THz"] < 5
    assert 45.0 < s["gamma_inplane_optical_max_THz"] < 48.0 and s["gamma_imaginary_non_acoustic_THz"] == []
    assert s["warnings"] == []
    data = np.load(reference_run / "phonons.npz")
    assert data["frequencies_THz"].shape == (3 * 11, 12)
    import phonopy

    ph = phonopy.load(str(reference_run / "phonopy_params.yaml"))  # readable by phonopy itself
    ph.run_qpoints([[0, 0, 0]])
    assert np.allclose(ph.qpoints.frequencies[0][-1], data["frequencies_THz"][0].max(), atol=1e-6)


@pytest.mark.parametrize("method", ["finite_differences", "autograd"])
def test_model_run_compared_with_reference(root, reference_run, model_file, method):
    _, run = phonons(root, f"model_{method}", "calculator=model", f"model_path={model_file}",
                     f"compare_with={reference_run}", f"phonons.method={method}")
    s = json.loads((run / "summary.json").read_text())
    assert s["calculator"] == "model" and np.isfinite(s["frequency_mae_vs_compare_THz"])
    assert s["asr_violation_after_eV_A2"] < 1e-8
    assert np.isfinite(s["own_minimum_interlayer_distance_change_A"]) and s["own_minimum_steps"] >= 0


def test_finite_differences_and_autograd_agree_for_a_model(root, model_file):
    fd = np.load(root / "runs" / "model_finite_differences" / "phonons.npz")["frequencies_THz"]
    ag = np.load(root / "runs" / "model_autograd" / "phonons.npz")["frequencies_THz"]
    assert np.abs(fd - ag).max() < 0.05  # THz; O(d²) finite-difference error at d = 0.01 Å


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["phonons.method=autograd"], "autograd differentiates a model"),
        (["calculator=model", "model_path=/nonexistent/model.pt"], "needs model_path"),
        (["calculator=oracle"], "calculator='oracle' unknown"),
        (["compare_with=/nonexistent"], "no phonons.npz there"),
        (["phonons.supercel=[3,3]"], "supercel"),
    ],
)
def test_bad_inputs(root, overrides, expected):
    proc, _ = phonons(root, "bad", *overrides, check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr + proc.stdout


def test_a_cell_that_folds_k_onto_gamma_is_flagged(root):
    _, run = phonons(root, "folded", "phonons.supercell=[3,3]")
    s = json.loads((run / "summary.json").read_text())
    assert s["gamma_imaginary_non_acoustic_THz"] and s["gamma_lowest_non_acoustic_THz"] < -1.0
    assert any("folds K onto Γ" in w and "phonons.supercell=[7,7]" in w for w in s["warnings"])
    assert any("imaginary non-acoustic Γ modes" in w for w in s["warnings"])


def test_model_without_the_structure_elements(root, model_file):
    proc, _ = phonons(root, "hbn", "material=bilayer_hbn", "calculator=model", f"model_path={model_file}", check=False)
    assert proc.returncode == 2 and "Fix: train on data of this material" in proc.stderr


def test_material_from_a_file_gives_the_builders_phonons(root, reference_run, tmp_path):
    """The relaxed AB cell written to a POSCAR without layers and run as material=file: the same Γ modes and
    mode names (layers detected from bonds), the file's stem as the material name; a missing path is refused."""
    import ase.io

    from hedgenet.structures import build_structure

    s = json.loads((reference_run / "summary.json").read_text())
    atoms = build_structure("bilayer_graphene", **s["structure_params"])
    del atoms.arrays["layer"]
    path = tmp_path / "my_bilayer.vasp"
    ase.io.write(path, atoms, format="vasp")
    _, run = phonons(root, "file", "material=file", f"material.path={path}")
    f = json.loads((run / "summary.json").read_text())
    assert f["material"].startswith("my_bilayer-")  # the stem and a hash of the content
    for key in ("gamma_interlayer_shear_THz", "gamma_layer_breathing_THz", "gamma_inplane_optical_max_THz"):
        assert f[key] == pytest.approx(s[key], abs=1e-4), key
    ref_modes = json.loads((reference_run / "gamma_modes.json").read_text())
    modes = json.loads((run / "gamma_modes.json").read_text())
    assert [m["name"] for m in modes] == [m["name"] for m in ref_modes]
    proc, _ = phonons(root, "file_missing", "material=file", check=False)
    assert proc.returncode != 0 and "material.path" in proc.stderr + proc.stdout
