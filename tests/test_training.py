"""hedgenet-train end to end on a tiny real xTB dataset: outputs, resume, DDP (2 CPU processes), errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BIN = Path(sys.executable).parent
BASE = [
    "relations.r_intra=3.0", "relations.r_inter=3.5", "data.batch_size=2", "train.log_every_n_steps=1",
    "logger=csv", "model.size.channels=8", "model.num_basis=4", "model.radial_hidden=8",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_root) -> Path:
    """3 rattled 4×4 AB bilayer graphene cells (64 atoms) labelled by GFN1-xTB, blocks within 3.5 Å
    (which includes the interlayer dimer pairs at 3.32 Å): the session's ``tiny_dataset``, copied."""
    return tiny_root(tmp_path_factory.mktemp("train_root"))


def train(root: Path, name: str, *overrides: str, check: bool = True):
    env = {**os.environ, "HEDGENET_ROOT": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    paths = [] if any(o.startswith("data.paths=") for o in overrides) else [f"data.paths=[{root}/data/tiny.h5]"]
    cmd = [str(BIN / "hedgenet-train"), *paths, *BASE, *overrides,
           f"hydra.run.dir={root}/runs/{name}"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"hedgenet-train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc, root / "runs" / name


@pytest.fixture(scope="module")
def straight(tiny):
    # the tiny file doubles as the "held-out" set: this checks the test-set path, not generalisation
    return train(tiny, "straight", "train.max_epochs=4", "data.val_fraction=0.34",
                 f"data.test_paths=[{tiny}/data/tiny.h5]")[1]


def test_run_directory_has_everything(straight):
    for f in ("resolved_config.yaml", "split.json", "history.jsonl", "metrics.json", "model.pt",
              "parity_forces.png", "parity_H.png", "learning_curves.png", "checkpoints/last.ckpt"):
        assert (straight / f).exists(), f
    m = json.loads((straight / "metrics.json").read_text())
    for k in ("val/forces_mae", "val/energy_mae", "val/H_intra_mae", "val/H_inter_mae", "val/H_onsite_mae",
              "test/forces_mae", "test/H_C-C_intra_mae", "test/H_C-C_inter_mae", "test/bands_mae"):
        assert np.isfinite(m[k]), k
    assert m["n_test"] == 3 and m["test/bands_n"] > 0
    # the default Hamiltonian gauge: the H head learned H − E_F·S at xTB's Fermi level (≈ −9.8 eV)
    assert -10.3 < m["init_statistics"]["hamiltonian_shift_eV"] < -9.3 and np.isfinite(m["val/H_fermi_all_mae"])
    # GFN1-xTB carbon: the dispersion tail stays at xTB's own values through training
    from hedgenet.models.dispersion import C6_INIT_EV_A6, C8_INIT_EV_A8

    tail = m["dispersion_tail"]
    assert tail["coefficients"].startswith("held at GFN1-xTB's own values")
    assert tail["C6_eV_A6"] == pytest.approx([C6_INIT_EV_A6], rel=1e-6)
    assert tail["C8_eV_A8"] == pytest.approx([C8_INIT_EV_A8], rel=1e-6)
    split = json.loads((straight / "split.json").read_text())
    assert len(split["train"]) == 2 and len(split["val"]) == 1
    history = [json.loads(line) for line in (straight / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    # each row holds its own epoch's validation errors: the last one's are those of the final (EMA) model
    assert all("val/forces_mae" in r and "val/H_all_mae" in r for r in history)
    assert history[-1]["val/forces_mae"] == pytest.approx(m["val/forces_mae"], rel=1e-6)
    assert history[-1]["val/H_all_mae"] == pytest.approx(m["val/H_all_mae"], rel=1e-6)


def test_saved_model_reproduces_metrics_and_blocks_format(tiny, straight):
    from hedgenet.models.io import load_model
    from hedgenet.training.data import load_samples
    from hedgenet.training.evaluate import evaluate

    model = load_model(straight / "model.pt")
    samples, _, _ = load_samples([tiny / "data" / "tiny.h5"])
    split = json.loads((straight / "split.json").read_text())
    val_ids = [i for _, i in split["val"]]
    graphs = [model.graph_builder()(s) for s in samples if int(s["sample_id"]) in val_ids]
    metrics, _ = evaluate(model, graphs)
    saved = json.loads((straight / "metrics.json").read_text())
    assert metrics["val/forces_mae"] == pytest.approx(saved["val/forces_mae"], rel=1e-9)


def test_resume_from_checkpoint_continues_identically(tiny, straight):
    _, half = train(tiny, "half", "train.max_epochs=2", "data.val_fraction=0.34")
    _, resumed = train(tiny, "resumed", "train.max_epochs=4", "data.val_fraction=0.34",
                       f"train.resume={half}/checkpoints/last.ckpt")
    a = torch.load(straight / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(resumed / "model.pt", weights_only=False)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-12)


def test_a_moved_run_directory_resumes_into_its_own_last_checkpoint(tiny):
    # a killed run's directory copied elsewhere (another disk, another machine) and resumed there: the checkpoints
    # it writes replace last.ckpt, so the next resume starts from the newest epoch, not the copied one
    import shutil

    _, first = train(tiny, "to_move", "train.max_epochs=2", "data.val_fraction=0.34")
    moved = tiny / "runs" / "moved"
    shutil.copytree(first, moved)
    (moved / "model.pt").unlink()
    train(tiny, "moved", "train.max_epochs=3", "data.val_fraction=0.34", "train.resume=auto")
    names = sorted(p.name for p in (moved / "checkpoints").glob("last*.ckpt"))
    assert names == ["last.ckpt"], names
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 2


def test_init_from_starts_from_a_trained_models_weights(tiny, straight):
    # learning rate 0: the fine-tuning run's model is the one it started from, so its validation error is the
    # trained model's to rounding (random weights would be far off)
    _, tuned = train(tiny, "tuned", "train.max_epochs=1", "data.val_fraction=0.34", "train.optimizer.lr=0.0",
                     f"train.init_from={straight}/model.pt")
    saved = json.loads((straight / "metrics.json").read_text())
    m = json.loads((tuned / "metrics.json").read_text())
    assert m["init_statistics"]["init_from"] == f"{straight}/model.pt"
    assert m["val/forces_mae"] == pytest.approx(saved["val/forces_mae"], rel=1e-6)
    assert m["val/H_all_mae"] == pytest.approx(saved["val/H_all_mae"], rel=1e-6)
    # another architecture is refused before training, naming the argument that differs and the fix
    proc, other = train(tiny, "other_arch", "train.max_epochs=1", "model.size.channels=16",
                        f"train.init_from={straight}/model.pt", check=False)
    assert proc.returncode != 0
    assert "train.init_from" in proc.stderr and "channels" in proc.stderr and "Fix:" in proc.stderr
    assert not (other / "model.pt").exists()


def test_ddp_sim_matches_single_process(tiny):
    """2 gloo ranks with 1 graph each per step == 1 process with both graphs in one batch."""
    _, single = train(tiny, "single", "train.max_epochs=2", "data.val_fraction=0.34", "train.ema_decay=null")
    _, ddp = train(tiny, "ddp", "train.max_epochs=2", "data.val_fraction=0.34", "train.ema_decay=null",
                   "trainer=ddp_sim", "data.batch_size=1", "logger=wandb")
    # W&B is opened on rank 0 only: one offline run (tests/test_logging.py reads its records under ``ddp``)
    runs = sorted((ddp / "wandb").glob("*run-*"))
    assert [p.name.startswith("offline-run-") for p in runs] == [True], runs
    assert len(list(runs[0].glob("run-*.wandb"))) == 1
    m1 = json.loads((single / "metrics.json").read_text())
    m2 = json.loads((ddp / "metrics.json").read_text())
    # gloo all-reduce sums in another order than one process does; Adam amplifies those 1e-16 differences
    # in near-zero gradient components to ~1e-6 of the energy MAE after 2 epochs. Wrong data sharding or
    # missing gradient averaging changes the metrics by percents.
    for k in ("val/forces_mae", "val/H_all_mae", "val/energy_mae"):
        assert m2[k] == pytest.approx(m1[k], rel=1e-4), k


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=hedgenet_smal"], "hedgenet_small"),
        (["relations=intra_intr"], "intra_inter"),
        (["+model.chanels=4"], "model.chanels"),
        (["task=forcez"], "forces"),
        (["train.hamiltonian_gauge=fermy"], "hamiltonian_gauge"),
        (["train.block_edge_fraction=0"], "block_edge_fraction=0.0 must be in (0, 1]"),
        (["data.paths=[/nonexistent.h5]"], "does not exist"),
    ],
)
def test_bad_options_fail_clearly(tiny, overrides, expected):
    proc, _ = train(tiny, "bad", *overrides, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and expected in out, out[-2000:]
