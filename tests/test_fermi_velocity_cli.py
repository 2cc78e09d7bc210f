"""hedgenet-fermi-velocity end to end with GFN1-xTB on a small AB bilayer cell, and its input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import run_cli

SMALL = ["fermi_velocity.supercell=[4,4]", "fermi_velocity.force_constants_supercell=[5,5]",
         "reference.block_cutoff=4.0", "sampler.n_samples=4",
         "fermi_velocity.temperatures_K=[0,300]", "fermi_velocity.n_bootstrap=10", "fermi_velocity.n_q=5",
         "progress=false", "fermi_velocity.workers=2"]  # the samples' unfoldings in 2 worker processes


def run(root: Path, name: str, *overrides: str, check: bool = True):
    return run_cli("hedgenet-fermi-velocity", root, name, [*SMALL, *overrides], check=check)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("fv_root")


@pytest.fixture(scope="module")
def xtb_run(root) -> Path:
    return run(root, "xtb")[1]  # default orders: first, second, all


def test_reference_run(xtb_run):
    out = xtb_run
    for f in ("summary.json", "fermi_velocity.png", "spectral_function.png", "phonopy_params.yaml"):
        assert (out / f).exists(), f
    s = json.loads((out / "summary.json").read_text())
    assert 5.0 < s["static"]["v0_1e5_m_s"] < 10.0
    assert list(s["by_temperature"]) == ["first", "second", "all"]
    st = s["static"]
    assert st["unfolding"]["onto"] == "unit cell" and st["unfolding"]["continuum_model_layers"] == 2
    assert 0.1 < st["gamma1_eV"] < 0.5 and 0 <= st["gap_eV"] < 0.02 and st["fixed_energy_eV"] == 0.2
    assert 4.0 < st["v_fixed_energy_1e5_m_s"] < st["v0_1e5_m_s"]  # the bilayer's bands bend below v0 near K
    for order in ("first", "second", "all"):
        for T in ("0.0", "300.0"):
            r = s["by_temperature"][order][T]
            assert 0.8 < r["ratio_to_static"] < 1.2 and 0 < r["ratio_err"] < 0.2
            assert 0.5 < r["gamma1_ratio_to_static"] < 1.5 and r["gamma1_ratio_err"] > 0
            assert 0.8 < r["v_fixed_energy_ratio_to_static"] < 1.2 and r["v_fixed_energy_ratio_err"] > 0
            assert r["gamma1_eV"] > 0 and r["gap_eV"] >= 0 and r["gap_err_eV"] >= 0
            # 4 samples = 2 ± pairs: a jackknife, and the summary says how rough its error bar is
            assert r["ratio_err_method"] == "jackknife" and "2 independent ± pairs" in r["error_warning"]
    # the second order shares the all-orders H(±u): it adds unfolding and fitting, no calculator call
    t = s["timings_s"]
    assert t["samples_second"] < 0.5 * t["samples_all"], t
    assert s["by_temperature"]["all"]["300.0"]["rms_u_A"] > s["by_temperature"]["all"]["0.0"]["rms_u_A"]
    # force constants from the 5×5 cell mapped onto the 4×4 sampling cell; what the sampler left out
    ph = s["phonons"]
    assert ph["force_constants_supercell"][:2] == [[5, 0, 0], [0, 5, 0]] and "ph2ph" in ph["mapped_by"]
    assert 45.0 < ph["gamma_inplane_optical_max_THz"] < 48.0 and ph["gamma_imaginary_non_acoustic_THz"] == []
    assert [(m["kind"], m["q"]) for m in s["excluded_modes"]] == [("acoustic", "Γ")] * 3


def test_force_constants_from_another_run(xtb_run):
    """fermi_velocity.force_constants_from: another run's phonopy_params.yaml, as stored on its own cell, mapped
    onto another one (equal at the q points both cells share), refused for another unit cell or a missing file."""
    import numpy as np
    import phonopy
    from ase import Atoms

    from hedgenet.config import ConfigError
    from hedgenet.physics.phonons import loaded_force_constants

    stored = phonopy.load(str(xtb_run / "phonopy_params.yaml"), is_compact_fc=False, log_level=0)
    u = stored.unitcell
    unit = Atoms(numbers=u.numbers, cell=u.cell, scaled_positions=u.scaled_positions, pbc=True)
    same, info = loaded_force_constants(xtb_run, unit, [4, 4])
    assert info["mapped_by"].startswith("none") and info["force_constants_supercell"][:2] == [[4, 0, 0], [0, 4, 0]]
    np.testing.assert_allclose(same.force_constants, stored.force_constants, atol=1e-10)
    smaller, info = loaded_force_constants(xtb_run / "phonopy_params.yaml", unit, [2, 2])
    assert "ph2ph" in info["mapped_by"]
    for q in ([0, 0, 0], [0.5, 0, 0]):  # Γ and M: commensurate with both the 4×4 and the 2×2 cell
        np.testing.assert_allclose(smaller.get_frequencies(q), stored.get_frequencies(q), atol=1e-6)
    moved = unit.copy()
    moved.positions[0] += [0.01, 0.0, 0.0]
    with pytest.raises(ConfigError, match="another unit cell"):
        loaded_force_constants(xtb_run, moved, [4, 4])
    with pytest.raises(ConfigError, match="no such file"):
        loaded_force_constants(xtb_run / "nothing.yaml", unit, [4, 4])


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["fermi_velocity.temperatures_K=[-5]"], "≥ 0 K"),
        (["fermi_velocity.temperatures_K=[]"], "temperature list is empty"),
        (["sampler.n_samples=2"], "even number ≥ 4"),
        (["fermi_velocity.orders=[third]"], "choose from"),
        (["fermi_velocity.fixed_energy_eV=1.5"], "0 < fixed_energy_eV < window_eV"),
        (["fermi_velocity.error_method=bayes"], "error_method"),
        (["fermi_velocity.supercell=[2,2]"], "cell too small"),
        (["fermi_velocity.unfold_layer=5"], "has layers [0, 1]"),
        (["fermi_velocity.layers=3"], "1 (Dirac cone) or 2 (AB"),
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
