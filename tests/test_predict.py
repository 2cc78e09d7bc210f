"""hedgenet-predict: a model applied to a structure file; every output equals what the model computes in
Python and opens in the tools it is meant for (ASE, phonopy, h5py); bad inputs named with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
from cli_runner import run_cli, untrained_model

from hedgenet.structures import build_structure


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("predict_root")


@pytest.fixture(scope="module")
def files(root):
    model = untrained_model(root / "model.pt")
    atoms = build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB")
    atoms.rattle(0.02, seed=1)
    del atoms.arrays["layer"]  # a user's POSCAR: layers come from the bonds
    structure = root / "POSCAR"
    ase.io.write(structure, atoms, format="vasp")
    return model, structure


def test_predictions_are_the_models_and_open_in_other_tools(root, files):
    from phonopy import load
    from phonopy.file_IO import parse_FORCE_CONSTANTS

    from hedgenet.calculators import ModelCalculator
    from hedgenet.structures.from_file import structure_from_file

    model, structure = files
    _, run = run_cli("hedgenet-predict", root, "ab", [f"model_path={model}", f"structure={structure}",
                                                      "predict.phonons=true", "predict.phonon_supercell=[3,3]",
                                                      "predict.npoints=11"])
    s = json.loads((run / "summary.json").read_text())
    assert s["n_atoms"] == 4 and s["layers"] == 2
    atoms = structure_from_file(str(structure))
    calc = ModelCalculator(str(model))
    work = atoms.copy()
    work.calc = calc
    written = ase.io.read(run / "predicted.extxyz")
    assert written.get_potential_energy() == pytest.approx(work.get_potential_energy(), abs=1e-8)
    assert np.allclose(written.get_forces(), work.get_forces(), atol=1e-8)
    assert np.array_equal(written.arrays["layer"], [0, 0, 1, 1])
    blocks = calc.predict_hamiltonian(atoms)
    with h5py.File(run / "blocks.h5") as f:
        assert np.array_equal(f["edge_index"][()], blocks.edge_index)
        assert np.allclose(f["H"][()], blocks.H) and np.allclose(f["S"][()], blocks.S)
        assert "orbital_layout" in f.attrs
    bands = np.load(run / "bands.npz")
    assert bands["energies_eV"].shape == (3 * 11, 16) and np.isfinite(bands["e_cnp_eV"])
    fc = parse_FORCE_CONSTANTS(str(run / "FORCE_CONSTANTS"))
    phonon = load(str(run / "phonopy_params.yaml"), is_compact_fc=False)
    assert fc.shape == (36, 36, 3, 3) and np.allclose(fc, phonon.force_constants)
    assert (run / "band.yaml").stat().st_size > 0 and "gamma_layer_breathing_THz" in s


def test_bands_of_graphene_from_xtb_blocks_close_at_k():
    """The band path on xTB's own blocks of a 4×4 AB cell: the neutral cell's gap on Γ–M–K–Γ closes at K."""
    from hedgenet.physics.electronic_bands import electronic_bands
    from hedgenet.reference import make_reference
    from hedgenet.structures import make_supercell

    sc = make_supercell(build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB"), [4, 4])
    res = make_reference("xtb", block_cutoff=4.0).compute(sc, with_blocks=True)
    b = electronic_bands(res.blocks, sc.cell.array, sc.numbers, "GMKG", 9)
    assert b.n_occupied == 4 * len(sc) // 2
    assert abs(b.gap_eV) < 0.02  # graphene's Dirac point (4×4 folds K onto K) lies on the path
    k_index = 2 * 9 - 1  # the end of the M–K segment
    near = np.sort(np.abs(b.energies_eV[k_index] - b.e_cnp_eV))[:2]
    assert near.max() < 0.02


@pytest.mark.parametrize("overrides,expected", [
    (["structure=/nonexistent.vasp"], "no such file"),
    (["predict.method=magic"], "predict.method"),
])
def test_bad_inputs(root, files, overrides, expected):
    model, structure = files
    proc, _ = run_cli("hedgenet-predict", root, "bad", [f"model_path={model}", f"structure={structure}", *overrides],
                      check=False)
    assert proc.returncode == 2 and expected in proc.stderr


def test_a_model_without_the_elements(root, files):
    model, _ = files
    hbn = root / "hbn.extxyz"
    ase.io.write(hbn, build_structure("bilayer_hbn"))
    proc, _ = run_cli("hedgenet-predict", root, "hbn", [f"model_path={model}", f"structure={hbn}"], check=False)
    assert proc.returncode == 2 and "Fix: train on data of this material" in proc.stderr


def test_device_option(root, files):
    """device=auto is the CPU on a machine without CUDA and gives the CPU's numbers; asking for CUDA where there
    is none is refused with the fix, in Python and on the command line."""
    import torch

    from hedgenet.calculators import ModelCalculator, resolve_device
    from hedgenet.structures.from_file import structure_from_file

    model, structure = files
    atoms = structure_from_file(str(structure))
    auto = ModelCalculator(str(model))
    assert auto.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU.*Fix: device=auto or device=cpu"):
            resolve_device("cuda")
        proc, _ = run_cli("hedgenet-predict", root, "cuda", [f"model_path={model}", f"structure={structure}",
                                                            "device=cuda"], check=False)
        assert proc.returncode == 2 and "Fix: device=auto or device=cpu" in proc.stderr
    with pytest.raises(ValueError, match="device='tpu' unknown"):
        resolve_device("tpu")
    cpu = ModelCalculator(str(model), device="cpu")
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = auto, cpu
    assert np.allclose(a.get_forces(), b.get_forces(), atol=1e-6)


@pytest.mark.gpu
def test_cuda_equals_cpu(files):
    """On a GPU machine: forces, blocks and the autograd Hessian on CUDA equal the CPU's to float tolerance."""
    import torch

    from hedgenet.calculators import ModelCalculator
    from hedgenet.structures import make_supercell
    from hedgenet.structures.from_file import structure_from_file

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    model, structure = files
    atoms = make_supercell(structure_from_file(str(structure)), [3, 3])
    gpu, cpu = ModelCalculator(str(model), device="cuda"), ModelCalculator(str(model), device="cpu")
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = gpu, cpu
    assert np.allclose(a.get_forces(), b.get_forces(), atol=1e-8)
    bg, bc = gpu.predict_hamiltonian(atoms), cpu.predict_hamiltonian(atoms)
    assert np.array_equal(bg.edge_index, bc.edge_index) and np.allclose(bg.H, bc.H, atol=1e-8)
    assert np.allclose(gpu.hessian(atoms), cpu.hessian(atoms), atol=1e-6)


def test_batched_hamiltonians_equal_one_at_a_time(files):
    """predict_hamiltonians over several displaced cells (3 per model call): the blocks of one call each."""
    from hedgenet.calculators import ModelCalculator
    from hedgenet.structures import make_supercell
    from hedgenet.structures.from_file import structure_from_file

    model, structure = files
    calc = ModelCalculator(str(model), device="cpu")
    base = make_supercell(structure_from_file(str(structure)), [3, 3])
    cells = []
    for k in range(5):
        c = base.copy()
        c.rattle(0.05, seed=k)
        cells.append(c)
    batched = calc.predict_hamiltonians(cells, batch_size=3)
    for c, b in zip(cells, batched):
        one = calc.predict_hamiltonian(c)
        assert np.array_equal(one.edge_index, b.edge_index) and np.array_equal(one.cell_shift, b.cell_shift)
        assert np.allclose(one.H, b.H, atol=1e-10) and np.allclose(one.S, b.S, atol=1e-10)
