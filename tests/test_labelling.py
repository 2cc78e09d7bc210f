"""hedgenet-label end to end: the installed CLI, resumability, parallel workers, shards and bad inputs.

All runs use 4×4 AB bilayer graphene (64 atoms, 8.5 Å wide) with a 4.0 Å block cutoff and a handful of
samples; the relaxed structure and force constants are cached once per session in a shared root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hedgenet.data.store import DatasetError, DatasetStore, merge_shards

BIN = Path(sys.executable).parent
TINY = [
    "dataset.supercell=[4,4]",
    "reference.block_cutoff=4.0",
    "dataset.rattle.amplitudes_A=[0.03]",
    "dataset.rattle.n_per_amplitude=2",
    "dataset.thermal.temperatures_K=[300.0]",
    "dataset.thermal.n_per_temperature=2",
    "dataset.rigid.shifts_A=[[0.0,0.0,0.1]]",  # one rigid-layer cell: the layers 0.1 Å further apart
    "dataset.strain.strains=[[0.01,-0.005,0.002]]",  # one strained cell (rattled, dataset.strain.rattle_A)
    "progress=false",
]


@pytest.fixture(scope="session")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("label_root")


def label(root: Path, *overrides: str, cwd: Path | None = None, check: bool = True, wait: bool = True):
    """Run the installed ``hedgenet-label`` with HEDGENET_ROOT=root from a directory outside the repo."""
    env = {**os.environ, "HEDGENET_ROOT": str(root), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    cmd = [str(BIN / "hedgenet-label"), *TINY, *overrides]
    cwd = cwd or root
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"hedgenet-label failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def base_dataset(root) -> Path:
    label(root, "dataset.name=base")
    return root / "data" / "base.h5"


def test_cli_writes_dataset_run_dir_and_summary(root, base_dataset):
    store = DatasetStore(base_dataset)
    assert store.ids() == [0, 1, 2, 3, 4, 5]
    header = store.header()
    assert header["solver_settings"]["name"] == "xtb"
    assert header["solver_settings"]["block_cutoff_A"] == 4.0
    assert header["orbital_layout"]["shell_l"]["6"] == [0, 1] and header["orbital_layout"]["shells"]["C"] == ["s", "p"]
    kinds = {}
    for s in store.iter_samples():
        kinds[s["kind"]] = kinds.get(s["kind"], 0) + 1
        assert s["positions"].shape == (64, 3) and set(np.unique(s["layer"])) == {0, 1}
        assert np.isfinite(s["energy"]) and s["forces"].shape == (64, 3)
        assert s["H"].shape == s["S"].shape == (s["edge_index"].shape[1], 4, 4)
        assert s["orbital_mask"].all()  # carbon: s + p, 4 orbitals
        # the virial W = −∂E/∂ε (eV) of every cell: symmetric, the in-plane tension of a few eV at most
        assert s["virial"].shape == (3, 3) and np.allclose(s["virial"], s["virial"].T, atol=1e-8)
        if s["kind"] == "strain":
            continue
        assert np.allclose(s["displacement"], s["positions"] - store.read_reference()["positions"])
        # Hermiticity survives storage exactly
        key = {(i, j, *r): e for e, (i, j, r) in enumerate(zip(*s["edge_index"], s["cell_shift"]))}
        rev = [key[(j, i, *(-r))] for i, j, r in zip(*s["edge_index"], s["cell_shift"])]
        assert np.array_equal(s["H"], s["H"][rev].transpose(0, 2, 1))
    assert kinds == {"rattle": 2, "thermal": 2, "rigid": 1, "strain": 1}
    (strained,) = [s for s in store.iter_samples() if s["kind"] == "strain"]
    ref = store.read_reference()
    eps = np.array([[0.01, 0.002, 0], [0.002, -0.005, 0], [0, 0, 0]])
    assert list(strained["strain"]) == [0.01, -0.005, 0.002]
    assert np.allclose(strained["cell"], ref["cell"] @ (np.eye(3) + eps))
    assert np.allclose(strained["positions"], (ref["positions"] + strained["displacement"]) @ (np.eye(3) + eps))
    # stretched by 1 % along x: the reference pulls back (W_xx ≈ −C11·ε·V, tens of eV for 64 atoms), far beyond
    # the spread of the rattled cells' virials
    unstrained = [s["virial"][0, 0] for s in store.iter_samples() if s["kind"] == "rattle"]
    assert strained["virial"][0, 0] < min(unstrained) - 5.0
    # the reference's force constants of the labelling cell (dataset.force_constants, on by default): symmetric,
    # translation-invariant, and xTB's own forces of the small rattles are their harmonic response −Φu
    fc = store.read_force_constants()
    assert fc.shape == (64, 64, 3, 3)
    assert np.allclose(fc, fc.transpose(1, 0, 3, 2), atol=1e-6) and np.abs(fc.sum(axis=1)).max() < 1e-6
    for s in store.iter_samples():
        if s["kind"] == "rattle":  # 0.03 Å: anharmonic and residual forces are a few % of the harmonic ones
            harmonic = -np.einsum("ijab,jb->ia", fc, s["displacement"])
            assert np.abs(s["forces"] - harmonic).mean() < 0.15 * np.abs(s["forces"]).mean()
            shuffled = -np.einsum("ijab,jb->ia", fc, s["displacement"][::-1])
            assert np.abs(s["forces"] - shuffled).mean() > 0.8 * np.abs(s["forces"]).mean()
    thermal = [s for s in store.iter_samples() if s["kind"] == "thermal"]
    assert all(s["temperature_K"] == 300.0 and "seed" in s for s in thermal)
    (rigid,) = [s for s in store.iter_samples() if s["kind"] == "rigid"]
    assert list(rigid["shift_A"]) == [0.0, 0.0, 0.1]
    u = rigid["displacement"]
    assert np.allclose(u[rigid["layer"] == 1].mean(axis=0) - u[rigid["layer"] == 0].mean(axis=0), [0, 0, 0.1])
    runs = sorted((root / "outputs" / "label" / "runs").iterdir())
    run_dir = runs[0]
    assert (run_dir / "resolved_config.yaml").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_samples"] == 6 and summary["this_run"]["ok"] == 6
    # the modes the thermal sampler left out: only the three Γ translations of this stable 4×4 cell
    assert [(m["kind"], m["q"]) for m in summary["excluded_modes"]] == [("acoustic", "Γ")] * 3
    # cached relaxation: the lattice parameters came from the reference, not from the yaml
    assert 2.40 < summary["structure_params"]["a"] < 2.50
    assert 3.1 < summary["structure_params"]["d"] < 3.6


def test_rerun_is_a_no_op_and_summary_cli(root, base_dataset):
    before = {s["sample_id"]: s["labelled_at"] for s in DatasetStore(base_dataset).iter_samples()}
    proc = label(root, "dataset.name=base")
    assert "skipped_done=6" in proc.stdout.replace(" ", "")
    after = {s["sample_id"]: s["labelled_at"] for s in DatasetStore(base_dataset).iter_samples()}
    assert before == after
    out = subprocess.run(
        [str(BIN / "hedgenet-dataset"), "summary", str(base_dataset)], capture_output=True, text=True
    )
    assert out.returncode == 0 and json.loads(out.stdout)["n_samples"] == 6


def test_force_constants_of_a_larger_cell_replace_the_stored_ones_and_keep_the_samples(root, base_dataset):
    """dataset.force_constants_supercell: the reference's force constants of another cell (here 5×5, 100 atoms,
    for the 4×4 labelling cell) are stored with that cell, replacing the labelling cell's; no sample is
    relabelled, and the training target is that cell."""
    import shutil

    from hedgenet.models import HedgeNet
    from hedgenet.training.force_constants import load_force_constant_targets

    path = root / "data" / "fc55.h5"
    shutil.copy(base_dataset, path)
    before = {s["sample_id"]: s["labelled_at"] for s in DatasetStore(path).iter_samples()}
    proc = label(root, "dataset.name=fc55", "dataset.force_constants_supercell=[5,5]")
    assert "skipped_done=6" in proc.stdout.replace(" ", "")
    store = DatasetStore(path)
    assert {s["sample_id"]: s["labelled_at"] for s in store.iter_samples()} == before
    assert store.force_constants_atoms() == 100 and len(store.read_reference()["numbers"]) == 64
    assert store.summary()["force_constants_atoms"] == 100  # which cell the summaries name
    cell = store.read_force_constants_cell()
    assert len(cell["numbers"]) == 100 and np.bincount(cell["layer"]).tolist() == [50, 50]
    ref = store.read_reference()  # the same material: the 5×5 cell's layers lie where the 4×4 cell's do
    for lay in (0, 1):
        assert np.isclose(cell["positions"][cell["layer"] == lay, 2].mean(), ref["positions"][ref["layer"] == lay, 2].mean())
    fc = store.read_force_constants()
    assert np.allclose(fc, fc.transpose(1, 0, 3, 2), atol=1e-6) and np.abs(fc.sum(axis=1)).max() < 1e-6
    model = HedgeNet([6], size={"channels": 4, "lmax": 1, "num_layers": 1}, task="forces", r_intra=3.0, r_inter=4.0)
    (target,) = load_force_constant_targets([path], model)
    assert len(target.atoms) == 100 and target.matrix.shape == (300, 300)
    assert len(target.layer_translations) == 3
    # asked again for the labelling cell's own: replaced back, samples untouched
    label(root, "dataset.name=fc55")
    assert DatasetStore(path).force_constants_atoms() == 64 and len(DatasetStore(path)) == 6


def test_couplings_are_stored_mapped_onto_the_models_blocks_and_learnable(root, base_dataset):
    """dataset.couplings=true on a labelled file: the reference's dH/du, dS/du of its cell are added (one atom per
    lattice orbit, 4 of 64), no sample is relabelled; a stored row is the reference's own central difference; the
    training target puts it on a model's block edges; the coupling loss's gradient lowers it; a training run
    asking for the loss on a file without couplings is refused with the fix."""
    import shutil

    import torch
    from ase import Atoms

    from hedgenet.calculators import ReferenceCalculator
    from hedgenet.models import HedgeNet
    from hedgenet.orbitals.blocks import blocks_on_edges
    from hedgenet.orbitals.layout import OrbitalLayout
    from hedgenet.reference import make_reference
    from hedgenet.reference.xtb import GFN1_SHELLS
    from hedgenet.training.couplings import coupling_loss, load_coupling_targets

    path = root / "data" / "cpl.h5"
    shutil.copy(base_dataset, path)
    proc = label(root, "dataset.name=cpl", "dataset.couplings=true")
    assert "skipped_done=6" in proc.stdout.replace(" ", "")
    store = DatasetStore(path)
    c = store.read_couplings()
    assert store.couplings_atoms() == 64 and len(c["atoms"]) == 4 and c["delta_A"] == 0.005  # one atom per orbit
    assert c["dH"].shape == c["dS"].shape == (4, 3, c["cell_shift"].shape[0], 4, 4)
    ref_cell = store.read_force_constants_cell()
    atoms = Atoms(numbers=ref_cell["numbers"], positions=ref_cell["positions"], cell=ref_cell["cell"], pbc=True)
    calc = ReferenceCalculator(make_reference("xtb", block_cutoff=4.0))
    i, x = 2, 2  # the third displaced atom (of the second layer), out of plane
    a = int(c["atoms"][i])
    blocks = []
    for sign in (1.0, -1.0):
        moved = atoms.copy()
        moved.positions[a, x] += sign * 0.005
        blocks.append(blocks_on_edges(calc.predict_hamiltonian(moved), c["edge_index"], c["cell_shift"]))
    assert np.allclose(c["dH"][i, x], (blocks[0][0] - blocks[1][0]) / 0.01, atol=1e-4)
    assert np.abs(c["dH"][i, x]).max() > 0.1  # eV/Å: a real coupling
    torch.manual_seed(0)
    layout = OrbitalLayout(shells=dict(GFN1_SHELLS), basis_name="GFN1-xTB")
    model = HedgeNet([6], r_intra=3.0, r_inter=3.5, size={"channels": 4, "lmax": 1, "num_layers": 1}, task="joint",
                     layout=layout, block_cutoff=3.5, num_basis=4, radial_hidden=8, dtype="float64")
    (target,) = load_coupling_targets([path], model)
    k = 3 * i + x
    index, shift = target.graph.block_index.numpy(), target.graph.block_shift.numpy().round().astype(np.int64)
    from hedgenet.orbitals.blocks import BlockSet

    stored = BlockSet(c["edge_index"], c["cell_shift"], c["dH"][i, x].astype(float), c["dS"][i, x].astype(float),
                      c["n_orb"])
    on_model = blocks_on_edges(stored, index, shift)[0]
    assert len(index[0]) < c["edge_index"].shape[1]  # the model's 3.5 Å blocks: a subset of the 4 Å ones
    assert np.allclose(target.dH[k].numpy(), on_model, atol=1e-6) and bool(target.mask.all())
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = coupling_loss(model, target, k)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
    env = {**os.environ, "HEDGENET_ROOT": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    refused = subprocess.run([str(BIN / "hedgenet-train"), f"data.paths=[{base_dataset}]", "reference.block_cutoff=4.0",
                              "train.loss_weights.couplings=1.0", "train.max_epochs=1", f"hydra.run.dir={root}/runs/cpl"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "dataset.couplings=true" in refused.stderr, refused.stderr[-2000:]


def test_second_order_response_is_stored_mapped_onto_the_models_blocks_and_learnable(root, base_dataset):
    """dataset.second_order.n_pairs=2 on a labelled file: the reference's even response ½[H(u) + H(−u)] − H(0) of
    two thermal ± pairs of its cell is added, no sample is relabelled; a stored pair is the reference's own even
    part, nonzero in the interlayer blocks; the training target puts it on a model's block edges; the loss's
    gradient lowers it; a training run asking for the loss on a file without it is refused with the fix, one on
    the file trains with it and records the model's error of the even response."""
    import shutil

    import torch

    from hedgenet.calculators import ReferenceCalculator
    from hedgenet.models import HedgeNet
    from hedgenet.orbitals.blocks import blocks_on_edges
    from hedgenet.orbitals.layout import OrbitalLayout
    from hedgenet.reference import make_reference
    from hedgenet.reference.xtb import GFN1_SHELLS
    from hedgenet.graphs import block_edge_sample
    from hedgenet.training.couplings import load_second_order_targets, second_order_errors, second_order_loss

    path = root / "data" / "so.h5"
    shutil.copy(base_dataset, path)
    proc = label(root, "dataset.name=so", "dataset.second_order.n_pairs=2")
    assert "skipped_done=6" in proc.stdout.replace(" ", "")
    store = DatasetStore(path)
    assert store.second_order_settings() == (2, 300.0) and store.summary()["second_order_pairs"] == 2
    c = store.read_second_order()
    e = c["cell_shift"].shape[0]
    assert c["dH2"].shape == c["dS2"].shape == (2, e, 4, 4) and c["displacements"].shape == (2, 64, 3)
    u = c["displacements"][1]
    assert 0.02 < np.sqrt((u**2).sum(1).mean()) < 0.4  # Å: a thermal displacement at 300 K (zero point included)
    atoms = store.reference_atoms()
    calc = ReferenceCalculator(make_reference("xtb", block_cutoff=4.0))
    h = [blocks_on_edges(calc.predict_hamiltonian(a), c["edge_index"], c["cell_shift"])[0] for a in
         (_moved(atoms, u), _moved(atoms, -u), atoms)]
    even = 0.5 * (h[0] + h[1]) - h[2]
    ok = c["present"][1]
    assert np.allclose(c["dH2"][1][ok], even[ok], atol=2e-6)
    layer = atoms.arrays["layer"]
    inter = layer[c["edge_index"][0]] != layer[c["edge_index"][1]]
    assert np.abs(c["dH2"][1][inter & ok]).max() > 2e-4  # eV: a real second-order response between the layers
    torch.manual_seed(0)
    layout = OrbitalLayout(shells=dict(GFN1_SHELLS), basis_name="GFN1-xTB")
    model = HedgeNet([6], r_intra=3.0, r_inter=3.5, size={"channels": 4, "lmax": 1, "num_layers": 1}, task="joint",
                     layout=layout, block_cutoff=3.5, num_basis=4, radial_hidden=8, dtype="float64")
    (target,) = load_second_order_targets([path], model)
    index, shift = target.graph.block_index.numpy(), target.graph.block_shift.numpy().round().astype(np.int64)
    from hedgenet.orbitals.blocks import BlockSet

    stored = BlockSet(c["edge_index"], c["cell_shift"], c["dH2"][1].astype(float), c["dS2"][1].astype(float), c["n_orb"])
    assert np.allclose(target.dH2[1].numpy(), blocks_on_edges(stored, index, shift)[0], atol=1e-6)
    assert bool(target.interlayer.any()) and bool(target.mask[1].any())
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = second_order_loss(model, target, 1)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
    # a training probe on a random part of the block edges (train.block_edge_fraction) gives those edges' errors
    keep = block_edge_sample(target.graph, 0.3, torch.Generator().manual_seed(0))
    assert 0 < len(keep) < target.dH2.shape[1]
    with torch.no_grad():
        assert torch.allclose(second_order_errors(model, target, 1, keep=keep)[0],
                              second_order_errors(model, target, 1)[0][keep], atol=1e-10)
    env = {**os.environ, "HEDGENET_ROOT": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    common = ["reference.block_cutoff=4.0", "model.size.channels=4", "model.size.num_layers=1",
              "train.loss_weights.second_order=100.0", "train.block_edge_fraction=0.5", "train.max_epochs=1", "train.uncertainty.method=null"]
    refused = subprocess.run([str(BIN / "hedgenet-train"), f"data.paths=[{base_dataset}]", *common,
                              f"hydra.run.dir={root}/runs/so_refused"], cwd=root, env=env, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode != 0 and "dataset.second_order.n_pairs" in refused.stderr, refused.stderr[-2000:]
    trained = subprocess.run([str(BIN / "hedgenet-train"), f"data.paths=[{path}]", *common,
                              f"hydra.run.dir={root}/runs/so"], cwd=root, env=env, capture_output=True, text=True,
                             timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    metrics = json.loads((root / "runs" / "so" / "metrics.json").read_text())
    assert metrics["n_second_order_targets"] == 1
    assert metrics["second_order_H_interlayer_rms_reference_meV"] > 0.1
    assert np.isfinite(metrics["second_order_H_interlayer_rms_error_meV"])
    logged = (root / "runs" / "so" / "history.jsonl").read_text()
    assert "second_order" in logged


def _moved(atoms, u):
    out = atoms.copy()
    out.positions = atoms.positions + u
    return out


def test_kill_and_resume_loses_and_duplicates_nothing(root, base_dataset):
    """SIGKILL mid-run (after some samples are consolidated), rerun: every id exactly once."""
    path = root / "data" / "killed.h5"
    more = ["dataset.name=killed", "dataset.rattle.n_per_amplitude=8", "dataset.consolidate_every_s=0"]
    proc = label(root, *more, wait=False)
    deadline = time.monotonic() + 300
    n_done = 0
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            n_done = len(DatasetStore(path))
        except Exception:  # noqa: BLE001 — file not created yet / being replaced
            continue
        if n_done >= 3:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= n_done < 11, "the run should have been killed part-way"
    first = {s["sample_id"]: s["labelled_at"] for s in DatasetStore(path).iter_samples()}
    label(root, *more)
    store = DatasetStore(path)
    with h5py.File(path) as f:
        names = sorted(f["samples"].keys())
    assert names == [f"{i:06d}" for i in range(12)]  # each id exactly once (8 rattles, 2 thermal, 1 rigid, 1 strain)
    assert not list(store.staging.glob("*.npz")) if store.staging.exists() else True
    again = {s["sample_id"]: s["labelled_at"] for s in store.iter_samples()}
    assert all(again[i] == t for i, t in first.items()), "finished samples must not be relabelled"
    # the resumed samples are identical to an uninterrupted run's (same seeds)
    base = DatasetStore(base_dataset)
    for i in (0, 1):
        a, b = store.read_sample(i), base.read_sample(i)
        assert a["seed"] == b["seed"]


def test_two_workers_reproduce_one_worker(root, base_dataset):
    label(root, "dataset.name=two_workers", "dataset.n_workers=2")
    one, two = DatasetStore(base_dataset), DatasetStore(root / "data" / "two_workers.h5")
    assert one.ids() == two.ids()
    pids = set()
    for i in one.ids():
        a, b = one.read_sample(i), two.read_sample(i)
        pids.add(b["pid"])
        assert np.array_equal(a["positions"], b["positions"])
        assert abs(a["energy"] - b["energy"]) < 1e-8
        assert np.abs(a["forces"] - b["forces"]).max() < 1e-6
        assert np.abs(a["H"] - b["H"]).max() < 1e-6
    assert len(pids) == 2, "both worker processes should have labelled samples"


def test_shards_via_submitit_local_and_merge(root, base_dataset):
    """The SLURM path with Hydra's submitit launcher, run locally: two array tasks, then merge."""
    proc = label(
        root, "dataset.name=sharded", "dataset.num_shards=2", "dataset.shard_index=0,1",
        "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "--multirun",
    )
    shards = sorted((root / "data").glob("sharded.shard*-of-2.h5"))
    assert len(shards) == 2, proc.stdout
    merged = merge_shards(root / "data" / "sharded.h5", shards)
    assert merged.ids() == [0, 1, 2, 3, 4, 5]
    base = DatasetStore(base_dataset)
    for i in merged.ids():
        assert abs(merged.read_sample(i)["energy"] - base.read_sample(i)["energy"]) < 1e-8
    with pytest.raises(DatasetError, match="exists"):
        merge_shards(root / "data" / "sharded.h5", shards)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["dataset.n_wokers=2"], "n_wokers"),  # Hydra struct mode
        (["+dataset.n_wokers=2"], "did you mean dataset.n_workers"),  # our key check
        (["material=ab_bilayer_graphen"], "ab_bilayer_graphene"),  # unknown group option lists choices
        (["reference=xtbb"], "xtb"),
        (["+material.lable_supercell=[4,4]"], "material.label_supercell"),
        (["dataset.supercell=[3,3]"], "cell too small"),
        # 3×3 folds K onto Γ: xTB's force constants have imaginary E2g and K modes; stopped before sampling
        (["dataset.supercell=[3,3]", "reference.block_cutoff=3.0"], "imaginary non-acoustic mode"),
        (["reference.block_cutoff=6.0"], "Fix: use a larger supercell"),
        (["dataset.shard_index=3", "dataset.num_shards=2"], "shard_index=3"),
        (["dataset.force_constants_supercell=[6,6]"], "folds K onto Γ"),  # the training target would be wrong
        (["dataset.force_constants_supercell=[0,5]"], "a supercell is 2 (or 3) whole numbers"),
        (["dataset.second_order.n_pairs=4", "dataset.second_order.temperature_K=0"], "dataset.second_order.n_pairs=8"),
    ],
)
def test_bad_inputs_fail_at_start_with_a_clear_message(root, base_dataset, overrides, expected):
    proc = label(root, "dataset.name=bad", *overrides, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert expected in out, out
    assert "Traceback" not in out  # one clear message, not a stack dump
    assert not (root / "data" / "bad.h5").exists()


def test_changed_settings_do_not_mix_into_an_existing_dataset(root, base_dataset):
    proc = label(root, "dataset.name=base", "seed=7", check=False)
    assert proc.returncode != 0
    assert "fingerprint" in (proc.stdout + proc.stderr) or "different settings" in (proc.stdout + proc.stderr)
    assert len(DatasetStore(base_dataset)) == 6


def test_numbers_written_as_whole_numbers_resume_the_same_dataset(root, base_dataset):
    # 0 and 0.0, 300 and 300.0 are one recipe: the rerun resumes (nothing to do) instead of refusing the file
    proc = label(root, "dataset.name=base", "dataset.rigid.shifts_A=[[0,0,0.1]]", "dataset.thermal.temperatures_K=[300]",
                 "reference.block_cutoff=4")
    assert "skipped_done=6" in proc.stdout.replace(" ", "")
    assert len(DatasetStore(base_dataset)) == 6


def test_dataset_fingerprints_are_stable_and_accept_files_of_earlier_versions(tmp_path):
    from hedgenet.data.build import dataset_fingerprints
    from hedgenet.reference.xtb import XTBReference

    def recipe(shift, temperature):
        return {"supercell": [4, 4], "rattle": {"amplitudes_A": [0.03], "n_per_amplitude": 2},
                "thermal": {"temperatures_K": [temperature], "n_per_temperature": 2, "quantum": True,
                            "cutoff_frequency_THz": 0.1, "imaginary_threshold_THz": 0.1, "fc_displacement_A": 0.01},
                "rigid": {"shifts_A": [shift]}, "strain": {"strains": [], "rattle_A": 0.02}}

    material = ({"stacking": "AB", "vacuum": 20.0}, "bilayer_graphene")
    ref = XTBReference(block_cutoff=4.0)
    floats = dataset_fingerprints(*material, recipe([0.0, 0.0, 0.1], 300.0), 0, ref)
    ints = dataset_fingerprints(*material, recipe([0, 0, 0.1], 300), 0, ref)
    other = dataset_fingerprints(*material, recipe([0.0, 0.0, 0.2], 300.0), 0, ref)
    assert floats[0] == ints[0] != other[0]
    # the fingerprint files labelled before numbers were hashed as floats carry (their value then, frozen here: a
    # change of it makes every earlier dataset of this recipe unresumable)
    assert floats[1] == "8dcbdfa939e9f9f4" and ints[1] != floats[1]
    from ase.build import graphene

    for found in floats:  # a file with either fingerprint resumes; another recipe's is refused with the fix
        store = DatasetStore(tmp_path / f"{found}.h5")
        store.create({"fingerprint": found}, graphene())
        store.check_fingerprint(floats)
        with pytest.raises(DatasetError, match="Fix: choose another dataset.name"):
            store.check_fingerprint(other)


def test_corrupt_hdf5_is_named_and_not_overwritten(root, tmp_path):
    bad = tmp_path / "corrupt.h5"
    bad.write_bytes(b"this is not an HDF5 file" * 10)
    with pytest.raises(DatasetError, match="corrupt.h5") as err:
        DatasetStore(bad).ids()
    assert "Fix" in str(err.value)
    # the CLI refuses it too, without touching it
    root2 = tmp_path / "r"
    (root2 / "data").mkdir(parents=True)
    (root2 / ".cache").symlink_to(root / ".cache")
    target = root2 / "data" / "corrupt.h5"
    target.write_bytes(bad.read_bytes())
    proc = label(root2, "dataset.name=corrupt", check=False)
    assert proc.returncode != 0 and "corrupt.h5" in proc.stdout + proc.stderr
    assert target.read_bytes() == bad.read_bytes()


def test_truncated_hdf5_is_named(base_dataset, tmp_path):
    cut = tmp_path / "cut.h5"
    data = base_dataset.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cut.h5"):
        DatasetStore(cut).read_sample(3)
