"""Baselines on HedgeNet's data, losses, metrics and trainer (issue 6): ``model=mace`` (the real mace-torch
ScaleShiftMACE), ``model=deeph_e3`` (DeepH-E3-like Hamiltonian network) and the homogeneous ablation
``relations=single``. Each is trained a few steps by ``hedgenet-train`` on tiny GFN1-xTB data, saved,
loaded through :class:`~hedgenet.calculators.ModelCalculator` and checked for physics: forces = −∇E,
force constants, E(3) equivariance, Hermiticity, and the reference's block format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from scipy.spatial.transform import Rotation
from test_models import LAYOUT, assert_virial_is_strain_derivative, orbital_rotation, rattled, transformed

from hedgenet.calculators import ModelCalculator
from hedgenet.models import count_parameters
from hedgenet.models.io import load_model
from hedgenet.structures import build_structure, make_supercell

BASE = ["relations.r_intra=3.0", "relations.r_inter=3.5", "data.batch_size=2", "logger=csv",
        "data.val_fraction=0.34", "train.max_epochs=3"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_root):
    """The session's ``tiny_dataset`` (3 xTB-labelled 4×4 AB bilayer cells), copied into this module's root."""
    return tiny_root(tmp_path_factory.mktemp("baselines_root"))


def train(root, name, *overrides, check=True):
    return run_cli("hedgenet-train", root, name, [f"data.paths=[{root}/data/tiny.h5]", *BASE, *overrides], check)


@pytest.fixture(scope="module")
def mace_run(tiny):
    return train(tiny, "mace", "model=mace", "task=forces", "model.size.channels=8", "model.radial_hidden=16")[1]


@pytest.fixture(scope="module")
def deeph_run(tiny):
    return train(tiny, "deeph", "model=deeph_e3", "task=joint", "model.size.channels=4",
                 "model.size.edge_channels=4", "model.size.num_layers=2", "model.num_basis=4",
                 "model.radial_hidden=8")[1]


@pytest.fixture(scope="module")
def cell():
    """A 4×4 AB bilayer (64 atoms) the models were not trained on."""
    atoms = make_supercell(build_structure("bilayer_graphene", a=2.458, d=3.32, stacking="AB"), [4, 4])
    atoms.rattle(0.03, seed=7)
    return atoms


def trained_metrics(run) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["train/loss"] < history[0]["train/loss"], "training did not lower the loss"
    return m


# ------------------------------------------------------------------------------------------ MACE
def test_mace_trains_saves_and_loads(mace_run):
    m = trained_metrics(mace_run)
    assert np.isfinite(m["val/forces_mae"]) and np.isfinite(m["val/energy_mae"])
    assert not any(k.startswith("val/H") for k in m)
    saved = torch.load(mace_run / "model.pt", weights_only=False)
    assert saved["kind"] == "mace" and saved["init_kwargs"]["r_max"] == 3.5  # max(r_intra, r_inter)
    model = load_model(mace_run / "model.pt")
    assert type(model.mace).__name__ == "ScaleShiftMACE"
    assert m["n_parameters"] == count_parameters(model) > 1000
    # data statistics survive the round trip (buffers and MACE's plain-float neighbour count)
    stats = m["init_statistics"]
    assert all(b.avg_num_neighbors == pytest.approx(stats["avg_num_neighbors/all"]) for b in model.mace.interactions)
    assert float(model.mace.atomic_energies_fn.atomic_energies[0]) == pytest.approx(stats["E0_eV"][0])


def test_mace_forces_are_minus_energy_gradient(mace_run, cell):
    calc = ModelCalculator(mace_run / "model.pt")
    atoms = cell.copy()
    atoms.calc = calc
    forces = atoms.get_forces()
    assert forces.shape == (len(atoms), 3) and np.abs(forces).max() > 1e-3
    h = 1e-4
    for a, x in [(0, 0), (17, 2), (40, 1)]:
        e = []
        for sign in (1, -1):
            moved = cell.copy()
            moved.positions[a, x] += sign * h
            moved.calc = calc
            e.append(moved.get_potential_energy())
        fd = -(e[0] - e[1]) / (2 * h)
        assert abs(fd - forces[a, x]) < 1e-5 * max(1.0, abs(fd)), (a, x, fd, forces[a, x])


@pytest.mark.parametrize("which", ["mace_run", "deeph_run"])
def test_baseline_virial_is_minus_strain_derivative(which, cell, request):
    """Every family gets the virial from the same strain construction (the common forward), so it can be
    trained on the reference's stress like HedgeNet."""
    model = load_model(request.getfixturevalue(which) / "model.pt").double()
    assert_virial_is_strain_derivative(model, [cell, rattled("bilayer_graphene", 4, 0.05, seed=3)], tol=1e-5)


@pytest.mark.parametrize("proper", [True, False], ids=["rotation", "rotoinversion"])
def test_mace_e3_equivariance(mace_run, cell, proper):
    calc = ModelCalculator(mace_run / "model.pt")
    rot = Rotation.random(random_state=5).as_matrix() * (1 if proper else -1)
    a0, a1 = cell.copy(), transformed(cell, rot, np.array([1.0, -2.0, 0.5]))
    a0.calc, a1.calc = calc, ModelCalculator(mace_run / "model.pt")
    assert a1.get_potential_energy() == pytest.approx(a0.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(a1.get_forces(), a0.get_forces() @ rot.T, atol=1e-9)


def test_mace_force_constants_autograd_match_finite_differences(mace_run, cell):
    from hedgenet.physics.phonons import sum_rule_violation

    model = load_model(mace_run / "model.pt")
    fc = ModelCalculator(model).hessian(cell)  # (N, N, 3, 3) eV/Å²
    assert sum_rule_violation(fc) < 1e-8  # translation invariance of the MACE energy
    calc = ModelCalculator(model)
    h = 1e-4
    for a, x in [(3, 0), (50, 2)]:
        f = []
        for sign in (1, -1):
            moved = cell.copy()
            moved.positions[a, x] += sign * h
            moved.calc = calc
            f.append(moved.get_forces())
        fd = -(f[0] - f[1]) / (2 * h)  # Φ_{a x, j y} = −∂F_{j y}/∂u_{a x}
        np.testing.assert_allclose(fc[a, :, x, :], fd, atol=1e-5 * max(1.0, np.abs(fd).max()))


def test_mace_has_no_blocks(mace_run, cell):
    with pytest.raises(ValueError, match="task=forces"):
        ModelCalculator(mace_run / "model.pt").predict_hamiltonian(cell)


def test_mace_import_leaves_torch_load_safe_and_hedgenet_working():
    """``import mace`` exports TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (../shared/STACK.md); the adapter
    restores the environment, and HedgeNet and MACE run in one process in either import order."""
    code = (
        "import os, torch\n"
        "from hedgenet.models.baselines.mace import MACEModel\n"
        "from hedgenet.models import HedgeNet\n"
        "m = MACEModel([6], r_max=3.0, size={'channels': 4, 'num_layers': 1}, dtype='float64')\n"
        "h = HedgeNet([6], size={'channels': 2, 'lmax': 1, 'num_layers': 1}, task='forces', dtype='float64')\n"
        "assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
    assert "cuequivariance" not in proc.stdout


def test_bad_baseline_options_fail_clearly(tiny):
    from hedgenet.models.baselines.deeph_e3 import DeepHE3
    from hedgenet.models.baselines.mace import MACEModel

    proc, _ = train(tiny, "bad", "model=mace", "task=hamiltonian", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "ConfigError" in out and "Fix: use task=forces with model=mace" in out, out[-2000:]
    with pytest.raises(ValueError, match="Fix: use task=forces with model=mace"):
        MACEModel([6], task="joint")
    with pytest.raises(ValueError, match=r"unknown size key\(s\) \['channel'\]"):
        MACEModel([6], size={"channel": 4})
    with pytest.raises(ValueError, match="Fix: use task=hamiltonian or task=joint"):
        DeepHE3([6], LAYOUT, 3.5, task="forces")
    with pytest.raises(ValueError, match="layout"):
        DeepHE3([6], task="hamiltonian")
    with pytest.raises(ValueError, match="edge_channels"):
        DeepHE3([6], LAYOUT, 3.5, size={"edge_channel": 4})


# ------------------------------------------------------------------------------------------ DeepH-E3
def test_deeph_e3_predicts_blocks_in_the_reference_format(deeph_run, cell):
    from hedgenet.reference import make_reference

    m = trained_metrics(deeph_run)
    for k in ("val/H_all_mae", "val/H_onsite_mae", "val/H_intra_mae", "val/H_inter_mae", "val/S_all_mae",
              "val/forces_mae", "val/energy_mae"):
        assert np.isfinite(m[k]), k
    model = load_model(deeph_run / "model.pt")
    assert m["n_parameters"] == count_parameters(model) > 1000
    calc = ModelCalculator(deeph_run / "model.pt")
    got = calc.predict_hamiltonian(cell)
    ref = make_reference("xtb", block_cutoff=3.5).compute(cell, with_blocks=True).blocks
    np.testing.assert_array_equal(got.edge_index, ref.edge_index)
    np.testing.assert_array_equal(got.cell_shift, ref.cell_shift)
    np.testing.assert_array_equal(got.n_orb, ref.n_orb)
    assert got.H.shape == ref.H.shape and got.S.shape == ref.S.shape
    assert np.isfinite(got.H).all() and np.abs(got.H).max() > 0.1  # eV: on-site levels are several eV
    atoms = cell.copy()
    atoms.calc = calc
    assert atoms.get_forces().shape == (len(cell), 3)


@pytest.mark.parametrize("proper", [True, False], ids=["rotation", "rotoinversion"])
def test_deeph_e3_trained_blocks_hermitian_and_equivariant(deeph_run, cell, proper):
    calc = ModelCalculator(deeph_run / "model.pt")
    b0 = calc.predict_hamiltonian(cell)
    rot = Rotation.random(random_state=9).as_matrix() * (1 if proper else -1)
    b1 = calc.predict_hamiltonian(transformed(cell, rot, np.array([0.4, 0.1, -1.0])))
    key = {(i, j, *r): e for e, (i, j, r) in enumerate(zip(*b0.edge_index, b0.cell_shift.tolist()))}
    rev = [key[(j, i, *(-np.asarray(r)).tolist())] for i, j, r in zip(*b0.edge_index, b0.cell_shift.tolist())]
    D = orbital_rotation(cell.numbers, rot, b0.H.shape[-1]).numpy()
    i, j = b0.edge_index
    for name in ("H", "S"):
        x0, x1 = getattr(b0, name), getattr(b1, name)
        assert np.abs(x0 - x0[rev].transpose(0, 2, 1)).max() <= 1e-12  # H_ij(R) = H_ji(−R)^T
        np.testing.assert_allclose(x1, D[i] @ x0 @ D[j].transpose(0, 2, 1), atol=1e-9)


def test_deeph_e3_equivariance_with_d_orbitals():
    """MoS2 (Mo and S with s, p, d shells in GFN1) at random weights: blocks up to L = 4; rotation and
    rotoinversion of energy, forces, H and S, and exact Hermiticity."""
    from hedgenet.models.baselines.deeph_e3 import DeepHE3

    torch.manual_seed(0)
    model = DeepHE3([16, 42], LAYOUT, 3.5, size={"channels": 4, "edge_channels": 4, "lmax": 2, "num_layers": 2},
                    task="joint", dtype="float64")
    atoms = rattled("bilayer_mos2", 1, seed=2)
    build = model.graph_builder()
    g0 = build(atoms)
    p0 = model(g0)
    i, j = g0.block_index
    for proper in (1, -1):
        rot = Rotation.random(random_state=11).as_matrix() * proper
        p1 = model(build(transformed(atoms, rot, np.array([0.3, -1.0, 2.0]))))
        assert torch.allclose(p1["energy"], p0["energy"], atol=1e-10)
        assert torch.allclose(p1["forces"], p0["forces"] @ torch.as_tensor(rot).T, atol=1e-10)
        D = orbital_rotation(atoms.numbers, rot, 9)
        for key in ("H", "S"):
            assert p0[key].abs().max() > 1e-3
            assert torch.allclose(p1[key], D[i] @ p0[key] @ D[j].transpose(1, 2), atol=1e-10), (key, proper)
    for key in ("H", "S"):
        assert (p0[key] - p0[key][g0.block_reverse].transpose(1, 2)).abs().max() <= 1e-12


def test_deeph_e3_forces_match_finite_differences():
    from hedgenet.models.baselines.deeph_e3 import DeepHE3

    torch.manual_seed(1)
    atoms = rattled("bilayer_graphene", 2, seed=3)
    model = DeepHE3([6], LAYOUT, 3.5, size={"channels": 4, "edge_channels": 4, "num_layers": 2}, task="joint",
                    dtype="float64")
    build = model.graph_builder()
    g = build(atoms)
    forces = model(g)["forces"]
    h = 1e-4
    for a, x in [(0, 0), (5, 2)]:
        e = []
        for sign in (1, -1):
            gd = build(atoms)
            gd.pos = g.pos.clone()
            gd.pos[a, x] += sign * h
            e.append(float(model(gd, compute_forces=False)["energy"]))
        fd = -(e[0] - e[1]) / (2 * h)
        assert abs(fd - float(forces[a, x])) < 1e-6 * max(1.0, abs(fd)), (a, x, fd)


# ------------------------------------------------------------------------------------------ ablation
def test_single_relation_ablation_trains_and_predicts(tiny, cell):
    """relations=single: HedgeNet with one relation type (one message module per layer)."""
    _, run = train(tiny, "single", "relations=single", "task=joint", "model.size.channels=4", "model.num_basis=4",
                   "model.radial_hidden=8")
    m = trained_metrics(run)
    model = load_model(run / "model.pt")
    assert model.relations.types == ("all",) and model.relations.cutoffs == (5.0,)  # relations.r_single
    assert all(len(layer.messages) == 1 for layer in model.layers)
    assert m["n_parameters"] == count_parameters(model)
    blocks = ModelCalculator(model).predict_hamiltonian(cell)
    assert blocks.H.shape[0] == blocks.edge_index.shape[1] and np.isfinite(blocks.H).all()
