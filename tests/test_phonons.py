"""Phonons: finite differences with the reference (xTB), the model's autograd Hessian against its own
finite differences, the acoustic sum rule, and the named Γ modes of AB bilayer graphene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.calculators.calculator import Calculator, all_changes

from hedgenet.calculators import ModelCalculator, ReferenceCalculator
from hedgenet.models import HedgeNet
from hedgenet.physics.phonons import (
    band_structure,
    density_of_states,
    enforce_acoustic_sum_rule,
    name_gamma_modes,
    path_qpoints,
    phonons_of,
    sum_rule_violation,
)
from hedgenet.reference import make_reference
from hedgenet.structures import build_structure
from hedgenet.structures.supercell import make_phonopy, supercell_atoms


@pytest.fixture(scope="module")
def unit():
    return build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB")


@pytest.fixture(scope="module")
def xtb_phonon(unit):
    calc = ReferenceCalculator(make_reference("xtb", block_cutoff=4.0))
    return calc.force_constants(unit, [4, 4])


def test_reference_phonons_sum_rule_and_named_gamma_modes(xtb_phonon, unit):
    report = enforce_acoustic_sum_rule(xtb_phonon)
    assert report["asr_violation_after_eV_A2"] < 1e-10
    assert sum_rule_violation(xtb_phonon.force_constants) < 1e-10
    modes = name_gamma_modes(xtb_phonon, unit)
    names = [m["name"] for m in modes]
    assert names[:3] == ["acoustic"] * 3 and all(abs(m["frequency_THz"]) < 1e-3 for m in modes[:3])
    assert names.count("interlayer shear") == 2 and names.count("layer breathing") == 1
    shear = [m["frequency_THz"] for m in modes if m["name"] == "interlayer shear"]
    breathing = [m["frequency_THz"] for m in modes if m["name"] == "layer breathing"][0]
    assert 0 < shear[0] < breathing < 5.0  # THz: soft interlayer modes below the optical branches
    e2g = max(m["frequency_THz"] for m in modes)
    assert 40 < e2g < 52  # G mode (E2g) ~ 46 THz (~1550 cm^-1) in GFN1-xTB
    bands = band_structure(xtb_phonon)
    assert bands.frequencies.shape[1] == 12 and bands.labels == ["Γ", "M", "K", "Γ"]
    assert bands.frequencies.min() > -0.05  # no imaginary branches
    f, dos = density_of_states(xtb_phonon, mesh=(12, 12, 1))
    assert np.trapezoid(dos, f) == pytest.approx(12, rel=0.03)  # 3 × 4 atoms states per cell


@pytest.fixture(scope="module")
def model():
    from hedgenet.orbitals.layout import OrbitalLayout
    from hedgenet.reference.xtb import GFN1_SHELLS

    torch.manual_seed(0)
    layout = OrbitalLayout(shells=dict(GFN1_SHELLS), basis_name="GFN1-xTB")
    return HedgeNet([6], r_intra=3.0, r_inter=3.5, size={"channels": 8, "lmax": 1, "num_layers": 2},
                    task="joint", layout=layout, block_cutoff=3.0, num_basis=4, radial_hidden=8,
                    dtype="float64").eval()


def test_model_autograd_hessian_matches_its_finite_differences(model, unit):
    atoms = supercell_atoms(make_phonopy(unit, [2, 2]), unit)
    hess = ModelCalculator(model).hessian(atoms, rows_per_batch=7)  # rows not a divisor of 3N: batching edge
    err = {}
    for d in (0.01, 0.005):
        fd = ModelCalculator(model).force_constants(unit, [2, 2], distance_A=d).force_constants
        err[d] = np.abs(hess - fd).max()
    scale = np.abs(hess).max()
    assert err[0.005] < 1e-3 * scale
    assert 3.5 < err[0.01] / err[0.005] < 4.5  # central differences converge to the Hessian as d²
    assert np.allclose(hess, hess.transpose(1, 0, 3, 2))
    assert sum_rule_violation(hess) < 1e-8 * scale  # the model's energy is translation invariant


def test_hessian_by_lattice_translations_equals_every_row_computed(model, unit):
    """On an undisplaced supercell the model's Hessian is computed for one atom per orbit and translated; the
    result equals the Hessian with every row computed (float64 model: to round-off). A rattled cell has no
    translations and all rows are computed."""
    from hedgenet.models.base import model_hessian
    from hedgenet.structures.supercell import lattice_translations

    atoms = supercell_atoms(make_phonopy(unit, [3, 2]), unit)
    perms = lattice_translations(atoms)[0]
    assert len(perms) == 6
    graph = model.energy_graph(model.graph_builder().from_atoms(atoms))
    full = model_hessian(model, graph, rows_per_batch=10)
    fast = model_hessian(model, graph, rows_per_batch=5, translations=perms)
    assert np.abs(fast - full).max() < 1e-10 * np.abs(full).max()
    assert np.allclose(ModelCalculator(model).hessian(atoms), full, rtol=0, atol=1e-10 * np.abs(full).max())
    rattled = atoms.copy()
    rattled.positions += np.random.default_rng(0).normal(0.0, 0.02, rattled.positions.shape)
    assert len(lattice_translations(rattled)[0]) == 1


def test_bad_inputs(unit):
    with pytest.raises(ValueError, match="band path"):
        path_qpoints("GXK")
    calc = ReferenceCalculator(make_reference("xtb", block_cutoff=4.0))
    with pytest.raises(ValueError, match="> 0 Å"):
        calc.force_constants(unit, [2, 2], distance_A=0.0)
    with pytest.raises(ValueError, match="autograd differentiates a model"):  # a reference has no autograd route
        calc.force_constants(unit, [2, 2], method="autograd")
    with pytest.raises(ValueError, match="autograd differentiates a model"):
        calc.block_derivatives(build_structure("bilayer_graphene"), method="autograd")


def test_reference_force_constants_are_cached_per_cell_and_shared(xtb_phonon, unit, tmp_path, monkeypatch):
    """With a cache folder the reference's force constants of a cell are computed once, as computed, and any
    later caller asking for that cell (labelling, phonons, couplings: [4, 4] or its 3×3
    matrix) reads them instead of rerunning the reference."""
    reference = make_reference("xtb", block_cutoff=4.0)
    first = ReferenceCalculator(reference, cache_dir=tmp_path).force_constants(unit, [4, 4])
    raw = ReferenceCalculator(reference).force_constants(unit, [4, 4])
    assert np.allclose(first.force_constants, raw.force_constants, atol=1e-10)
    (cached,) = list((tmp_path / "force_constants").glob("*.npz"))

    def no_reference_runs(*args, **kwargs):
        raise AssertionError("the reference ran although its force constants are cached")

    monkeypatch.setattr(type(reference), "compute", no_reference_runs)
    again = ReferenceCalculator(reference, cache_dir=tmp_path).force_constants(unit, np.diag([4, 4, 1]))
    assert np.array_equal(again.force_constants, first.force_constants)
    assert len(again.supercell) == 64 and list((tmp_path / "force_constants").glob("*.npz")) == [cached]
    assert len(again.displacements) == len(first.displacements) > 0  # what made them, as phonopy reports it
    monkeypatch.undo()  # the phonon chain itself computes the residual forces of the relaxed supercell once
    result = phonons_of(ReferenceCalculator(reference, cache_dir=tmp_path), unit, [4, 4], npoints=5, dos_mesh=(4, 4, 1))
    assert result.n_displacements == len(first.displacements)
    other = ReferenceCalculator(reference, cache_dir=tmp_path).force_constants_cache_file(unit, [4, 4], 0.02)
    assert other != cached  # another displacement is another entry


class LayerSpring(Calculator):
    """E = ½k(d − d₀)² of the interlayer distance d (mean heights of layer 1 minus layer 0, Å; k in eV/Å²): a
    calculator whose minimum is known, d = d₀."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, d0: float, k: float = 1.0):
        super().__init__()
        self.d0, self.k = d0, k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        layer = np.asarray(self.atoms.arrays["layer"])
        z = self.atoms.positions[:, 2]
        stretch = z[layer == 1].mean() - z[layer == 0].mean() - self.d0
        f = np.zeros((len(self.atoms), 3))
        f[layer == 1, 2] = -self.k * stretch / (layer == 1).sum()
        f[layer == 0, 2] = self.k * stretch / (layer == 0).sum()
        self.results = {"energy": 0.5 * self.k * stretch**2, "forces": f}


def test_own_minimum_finds_where_a_calculators_layers_rest():
    """A calculator whose layers rest at 3.35 Å, started 0.15 Å too close: its own minimum is reached (residual
    force ≤ 0.1 meV/Å) with the layers 0.15 Å further apart, each moved by half of it."""
    from hedgenet.physics.phonons import own_minimum

    unit = build_structure("bilayer_graphene", a=2.46, d=3.20)
    out = own_minimum(LayerSpring(d0=3.35), unit)
    assert out["own_minimum_residual_force_max_meV_A"] <= 0.1
    assert out["own_minimum_interlayer_distance_change_A"] == pytest.approx(0.15, abs=1e-3)
    assert out["own_minimum_shift_max_A"] == pytest.approx(0.075, abs=1e-3)
