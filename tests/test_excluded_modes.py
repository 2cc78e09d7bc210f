"""No silent mode loss: force constants of a thermal-sampling cell from a cell that does not fold K onto Γ,
mapped by phonopy; every mode the samplers leave out listed with its frequency, wave vector and kind; imaginary
ones stopping the run before anything is sampled; the defaults of every physics command on a safe cell.

GFN1-xTB on 3×3 cells (18 / 36 atoms): the 3×3 cell folds K onto Γ, the only k-point xTB samples, and its
force constants have E2g and K modes at −60 to −120 THz; the 4×4 cell's, mapped onto 3×3, are stable."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from hedgenet.calculators import ReferenceCalculator
from hedgenet.physics.fermi_velocity import RenormalizationSettings, fermi_velocity_vs_temperature
from hedgenet.physics.phonons import folds_k_onto_gamma, gamma_mode_summary, mapped_force_constants, name_gamma_modes
from hedgenet.physics.sampling import (
    ImaginaryModesError,
    NormalModes,
    check_imaginary_modes,
    excluded_modes,
    supercell_lattice,
)
from hedgenet.reference import make_reference
from hedgenet.structures import build_structure
from hedgenet.structures.supercell import supercell_atoms


@pytest.fixture(scope="module")
def calc():
    return ReferenceCalculator(make_reference("xtb", block_cutoff=3.0))


@pytest.fixture(scope="module")
def bilayer():
    return build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB")


def modes_of(phonon, unit):
    return NormalModes.from_force_constants(phonon.force_constants, supercell_atoms(phonon, unit).get_masses())


def test_which_cells_fold_k_onto_gamma():
    assert [n for n in range(2, 13) if folds_k_onto_gamma([n, n])] == [3, 6, 9, 12]
    assert folds_k_onto_gamma([[2, -1], [1, 1]])  # √3×√3 R30° (phonopy: supercell vectors are the columns)
    assert not folds_k_onto_gamma([[2, 0, 0], [0, 2, 0], [0, 0, 1]])


def test_mapped_force_constants_keep_the_source_phonons(calc, bilayer):
    source, _ = mapped_force_constants(calc, bilayer, [4, 4])
    mapped, info = mapped_force_constants(calc, bilayer, [3, 3], [4, 4])
    assert info["force_constants_supercell"] == [[4, 0, 0], [0, 4, 0], [0, 0, 1]] and "ph2ph" in info["mapped_by"]
    assert mapped.force_constants.shape == (36, 36, 3, 3)
    assert np.abs(mapped.force_constants.sum(axis=1)).max() < 1e-8  # acoustic sum rule
    # Γ is commensurate with both cells: identical; K (3×3 only) is the source's Fourier interpolation
    for ph in (source, mapped):
        ph.run_qpoints([[0, 0, 0], [1 / 3, 1 / 3, 0]])
    assert np.allclose(mapped.qpoints.frequencies, source.qpoints.frequencies, atol=1e-6)
    g = gamma_mode_summary(name_gamma_modes(mapped, bilayer))
    assert g["gamma_imaginary_non_acoustic_THz"] == []
    assert 0.3 < g["gamma_interlayer_shear_THz"] < 0.5 and 2.0 < g["gamma_layer_breathing_THz"] < 2.3
    assert 45.0 < g["gamma_inplane_optical_max_THz"] < 47.5


def test_excluded_modes_name_frequency_wave_vector_and_kind(calc, bilayer):
    folded, info = mapped_force_constants(calc, bilayer, [3, 3])
    assert info["folds_K_onto_gamma"]
    modes = modes_of(folded, bilayer)
    ex = excluded_modes(modes, 0.1, *supercell_lattice(folded))
    assert len(ex) == int(np.sum(modes.frequencies_THz <= 0.1))  # every mode the sampler leaves out
    assert [m["kind"] for m in ex].count("acoustic") == 3
    assert all(m["q"] == "Γ" for m in ex if m["kind"] == "acoustic")
    imaginary = [m for m in ex if m["kind"] == "imaginary"]
    assert {("Γ" if m["q"] == "Γ" else tuple(m["q"])) for m in imaginary} == {"Γ", (0.333333, 0.333333, 0.0)}
    # each listed frequency is a phonopy frequency at the listed wave vector
    for m in imaginary:
        folded.run_qpoints([[0, 0, 0] if m["q"] == "Γ" else m["q"]])
        assert np.abs(folded.qpoints.frequencies[0] - m["frequency_THz"]).min() < 1e-4
    with pytest.raises(ImaginaryModesError, match=r"imaginary non-acoustic mode.*q=\[0.333333, 0.333333, 0.0\].*Fix"):
        check_imaginary_modes(ex, 0.1, fix="Fix: another cell")
    check_imaginary_modes(ex, None)  # no threshold: listed, not stopped
    # a stable cell: only the Γ translations at the default cutoff; soft modes below a raised cutoff
    stable, _ = mapped_force_constants(calc, bilayer, [3, 3], [4, 4])
    ex = excluded_modes(modes_of(stable, bilayer), 0.1, *supercell_lattice(stable))
    assert [m["kind"] for m in ex] == ["acoustic"] * 3
    ex = excluded_modes(modes_of(stable, bilayer), 1.0, *supercell_lattice(stable))
    soft = [m for m in ex if m["kind"] == "below cutoff"]
    assert len(soft) == 2 and all(m["q"] == "Γ" and 0.3 < m["frequency_THz"] < 0.5 for m in soft)  # the shear pair
    check_imaginary_modes(ex, 0.1)


def test_fermi_velocity_stops_before_sampling_and_reports_what_it_left_out(calc, bilayer):
    unstable = RenormalizationSettings(supercell=(3, 3), force_constants_supercell=None, temperatures_K=(300.0,),
                                       n_samples=4, orders=("first",))
    with pytest.raises(ImaginaryModesError, match="force_constants_supercell"):
        fermi_velocity_vs_temperature(calc, bilayer, unstable)


def test_the_defaults_of_every_physics_command_take_force_constants_from_a_cell_that_keeps_k_off_gamma():
    from hydra import compose, initialize_config_dir

    from hedgenet.config import config_dir
    from hedgenet.pipeline.stages import plan

    with initialize_config_dir(config_dir(), version_base="1.3"):
        ph = compose("phonons")
        assert not folds_k_onto_gamma(ph.phonons.supercell)
        epi = compose("epi")
        assert not folds_k_onto_gamma(epi.epi.force_constants_supercell or epi.epi.supercell)
        fv = compose("fermi_velocity")
        assert fv.fermi_velocity.force_constants_supercell is not None
        assert not folds_k_onto_gamma(fv.fermi_velocity.force_constants_supercell)
        assert fv.sampler.imaginary_threshold_THz == 0.1
        for name in ("monte_carlo", "sdm"):
            assert compose("fermi_velocity", overrides=[f"sampler={name}"]).sampler.imaginary_threshold_THz == 0.1
        assert compose("label").dataset.thermal.imaginary_threshold_THz == 0.1
        pipe = compose("pipeline")
        for stage in plan(pipe, {"material": "ab_bilayer_graphene", "reference": "xtb"}):
            if stage.kind not in ("phonons", "epi", "fermi_velocity"):
                continue
            cfg = compose(stage.kind, overrides=stage.overrides + ["paths.output_dir=null"])
            section = OmegaConf.to_container(cfg[stage.kind], resolve=True)
            cell = section.get("force_constants_supercell") or section["supercell"]
            assert not folds_k_onto_gamma(cell), (stage.name, cell)


def test_pipeline_report_warns_about_modes_left_out(tmp_path):
    from hedgenet.pipeline.report import excluded_mode_warnings, write_report

    acoustic = [{"frequency_THz": 0.0, "q": "Γ", "kind": "acoustic"}] * 3
    outputs = {
        "label": {"dir": str(tmp_path), "summary": {"excluded_modes": acoustic}},
        "fermi_velocity_model": {"dir": str(tmp_path), "summary": {
            "excluded_modes": acoustic + [{"frequency_THz": -3.5, "q": "Γ", "kind": "imaginary"},
                                          {"frequency_THz": -0.4, "q": [0.5, 0.0, 0.0], "kind": "imaginary"}],
            "static": {"v0_1e5_m_s": 7.3, "directions": {"KΓ": {"gamma1_eV": 0.2}}}, "supercell": [6, 6],
            "sampler": "monte_carlo", "by_temperature": {}}},
    }
    w = excluded_mode_warnings(outputs)
    assert len(w) == 1 and w[0].startswith("fermi_velocity_model: 2 mode(s)") and "-3.500 THz" in w[0]
    report = write_report(tmp_path, outputs, "a: 1\n", {})
    assert report["warnings"] == w
    text = (tmp_path / "report.md").read_text()
    assert "## Warnings" in text and "2 imaginary" in text
