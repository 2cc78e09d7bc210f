"""hedgenet-fermi-velocity end to end with GFN1-xTB on a small AB bilayer cell, and its input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import run_cli

SMALL = ["fermi_velocity.supercell=[4,4]", "fermi_velocity.force_constants_supercell=[5,5]",
         "reference.block_cutoff=4.0", "sampler.n_samples=4",
         "fermi_velocity.temperatures_K=[0,300]", "fermi_velocity.n_bootstrap=10", "fermi_velocity.n_q=5",
         "progress=false"]


def run(root: Path, name: str, *overrides: str, check: bool = True):
    return run_cli("hedgenet-fermi-velocity", root, name, [*SMALL, *overrides], check=check)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("fv_root")


def test_reference_run(root):
    _, out = run(root, "xtb")
    for f in ("summary.json", "fermi_velocity.png", "spectral_function.png", "phonopy_params.yaml"):
        assert (out / f).exists(), f
    s = json.loads((out / "summary.json").read_text())
    assert 5.0 < s["static"]["v0_1e5_m_s"] < 10.0
    for order in ("first", "all"):
        for T in ("0.0", "300.0"):
            r = s["by_temperature"][order][T]
            assert 0.8 < r["ratio_to_static"] < 1.2 and 0 < r["ratio_err"] < 0.2
    assert s["by_temperature"]["all"]["300.0"]["rms_u_A"] > s["by_temperature"]["all"]["0.0"]["rms_u_A"]
    # force constants from the 5×5 cell mapped onto the 4×4 sampling cell; what the sampler left out
    ph = s["phonons"]
    assert ph["force_constants_supercell"][:2] == [[5, 0, 0], [0, 5, 0]] and "ph2ph" in ph["mapped_by"]
    assert 45.0 < ph["gamma_inplane_optical_max_THz"] < 48.0 and ph["gamma_imaginary_non_acoustic_THz"] == []
    assert [(m["kind"], m["q"]) for m in s["excluded_modes"]] == [("acoustic", "Γ")] * 3


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["fermi_velocity.temperatures_K=[-5]"], "≥ 0 K"),
        (["fermi_velocity.temperatures_K=[]"], "temperature list is empty"),
        (["sampler.n_samples=2"], "even number ≥ 4"),
        (["fermi_velocity.orders=[second]"], "choose from"),
        (["fermi_velocity.supercell=[2,2]"], "cell too small"),
        # force constants of a cell that folds K onto Γ: imaginary modes named, stopped before sampling
        (["fermi_velocity.supercell=[3,3]", "fermi_velocity.force_constants_supercell=null",
          "reference.block_cutoff=3.0"], "fermi_velocity.force_constants_supercell=[7,7]"),
        (["fermi_velocity.supercell=[3,3]", "fermi_velocity.force_constants_supercell=null",
          "reference.block_cutoff=3.0"], "q=[0.333333, 0.333333, 0.0]"),
    ],
)
def test_bad_inputs(root, overrides, expected):
    proc, _ = run(root, "bad", *overrides, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr
