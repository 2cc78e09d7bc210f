"""Fault injection: what a user sees when things go wrong, and that nothing finished is lost or run twice.

Crafted and corrupt model files, two labellers on one dataset, a damaged HDF5 chunk, NaN labels, a diverging
loss, SIGTERM/SIGINT during training and the resume that follows, a full disk (an ``OSError(ENOSPC)`` at the
write) and a read-only root, pipeline stages without their outputs, one root spelt three ways, and inputs
refused before any expensive step. The random kill points are in tests/test_fault_soak.py (slow).
Each message checked here is the one docs/faults.md shows.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_runner import TINY_TRAIN, untrained_model

from hedgenet.data.store import DatasetError, DatasetStore

BIN = Path(sys.executable).parent
# hedgenet-label on 4×4 AB bilayer graphene at fixed a, d (no relaxation), rattles only: ~1 s per sample
LABEL = ["dataset.supercell=[4,4]", "reference.block_cutoff=3.5", "dataset.rattle.amplitudes_A=[0.04]",
         "dataset.thermal.n_per_temperature=0", "dataset.rigid.shifts_A=[]", "dataset.strain.strains=[]", "progress=false",
         "+material.params.a=2.458", "+material.params.d=3.32", "material.relax=[]",
         "dataset.consolidate_every_s=0"]


def _env(root: Path) -> dict:
    return {**os.environ, "HEDGENET_ROOT": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
            "HYDRA_FULL_ERROR": "0"}


def cli(prog: str, root: Path, *args: str, cwd: Path | None = None, wait: bool = True, env: dict | None = None):
    cmd = [str(BIN / prog), *args]
    kw = dict(cwd=cwd or root, env=env or _env(root))
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def one_clean_error(proc, *needles: str) -> str:
    """The process failed with one message line (no traceback) holding every needle; returns that line."""
    err = proc.stderr
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in err and "Traceback" not in proc.stdout, err[-3000:]
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert lines, err[-3000:]
    for n in needles:
        assert n in err, (n, err[-3000:])
    return lines[-1]


# ------------------------------------------------------------------------------------------ model files
class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def model_files(tmp_path):
    good = untrained_model(tmp_path / "model.pt")
    raw = good.read_bytes()
    files = {"good": good, "marker": tmp_path / "code_ran"}
    torch.save({"kind": "hedgenet", "format": 2, "init_kwargs": {}, "state_dict": {},
                "extra": _Exploit(files["marker"])}, tmp_path / "crafted.pt")
    files["crafted"] = tmp_path / "crafted.pt"
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    files["truncated"] = tmp_path / "truncated.pt"
    (tmp_path / "empty.pt").write_bytes(b"")
    files["empty"] = tmp_path / "empty.pt"
    (tmp_path / "foreign.pt").write_text("not a model\n")
    files["foreign"] = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other_torch.pt")
    files["other_torch"] = tmp_path / "other_torch.pt"
    return files


def test_crafted_model_file_runs_no_code(model_files):
    from hedgenet.models.io import load_model

    with pytest.raises(ValueError) as err:
        load_model(model_files["crafted"])
    assert not model_files["marker"].exists(), "loading a model file ran code from it"
    assert str(model_files["crafted"]) in str(err.value) and "was not loaded" in str(err.value)
    assert "Fix:" in str(err.value)


@pytest.mark.parametrize("kind,words", [("truncated", "truncated or corrupt"), ("empty", "is empty"),
                                        ("foreign", "not a PyTorch file"), ("other_torch", "not a hedgenet model")])
def test_damaged_or_foreign_model_file_is_one_clear_error(model_files, kind, words):
    from hedgenet.models.io import load_model

    with pytest.raises(ValueError) as err:
        load_model(model_files[kind])
    assert str(model_files[kind]) in str(err.value) and words in str(err.value) and "Fix:" in str(err.value)
    assert load_model(model_files["good"]) is not None  # a real model.pt still loads (weights_only)


def test_cli_and_pipeline_show_the_model_error_without_traceback(model_files, tmp_path):
    proc = cli("hedgenet-phonons", tmp_path, "calculator=model", f"model_path={model_files['truncated']}",
               f"hydra.run.dir={tmp_path}/runs/ph")
    one_clean_error(proc, str(model_files["truncated"]), "truncated or corrupt")
    proc = cli("hedgenet-pipeline", tmp_path, f"model_path={model_files['crafted']}", "stages=[phonons]",
               "dry_run=true", f"hydra.run.dir={tmp_path}/runs/pipe")
    one_clean_error(proc, str(model_files["crafted"]), "was not loaded")
    assert not model_files["marker"].exists()


# ------------------------------------------------------------------------------------------ datasets
def test_two_labellers_on_one_dataset(tmp_path):
    """Started together on a new dataset: one labels, the other stops at once naming the holder; every
    sample once, readable; a rerun labels nothing."""
    args = [*LABEL, "dataset.rattle.n_per_amplitude=4", "dataset.name=shared"]
    procs = [cli("hedgenet-label", tmp_path, *args, f"hydra.run.dir={tmp_path}/runs/l{k}", wait=False)
             for k in range(2)]
    outs = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _, _ in outs)
    assert codes == [0, 2], outs
    loser = next(err for rc, _, err in outs if rc == 2)
    assert "is being labelled by another process (pid" in loser and "Traceback" not in loser
    store = DatasetStore(tmp_path / "data" / "shared.h5")
    with h5py.File(store.path) as f:
        assert sorted(f["samples"].keys()) == [f"{i:06d}" for i in range(4)]
    assert [s["sample_id"] for s in store.iter_samples()] == [0, 1, 2, 3]
    assert not list(store.path.parent.glob("*.tmp"))
    again = cli("hedgenet-label", tmp_path, *args, f"hydra.run.dir={tmp_path}/runs/l2")
    assert again.returncode == 0 and "skipped_done=4" in again.stdout.replace(" ", "")


def _chunk_of(path: Path, sample: str, key: str) -> tuple[int, int]:
    with h5py.File(path) as f:
        info = f["samples"][sample][key].id.get_chunk_info(0)
        return info.byte_offset, info.size


@pytest.mark.parametrize("damage", ["zeroed", "flipped"])
def test_damaged_chunk_names_the_sample(tiny_dataset, tmp_path, damage):
    path = tmp_path / "d.h5"
    shutil.copyfile(tiny_dataset, path)
    offset, size = _chunk_of(path, "000001", "H")
    with open(path, "r+b") as fh:
        fh.seek(offset + size // 3)
        chunk = bytearray(fh.read(64))
        fh.seek(offset + size // 3)
        fh.write(bytes(64) if damage == "zeroed" else bytes(b ^ 0x5A for b in chunk))
    store = DatasetStore(path)
    store.read_sample(0)  # the other samples are intact
    with pytest.raises(DatasetError, match=r"sample 1 of .* cannot be read: its stored H is damaged") as err:
        store.read_sample(1)
    assert f"hedgenet-dataset drop {path} --sample 1" in str(err.value)
    assert list(store.damaged()) == [1]
    assert store.drop([1]) == [1] and store.ids() == [0, 2]  # a rerun of hedgenet-label relabels it


def test_stored_second_order_is_replaced_in_place_and_refused_when_not_finite(tiny_dataset, tmp_path):
    store = DatasetStore(tmp_path / "so.h5")
    shutil.copyfile(tiny_dataset, store.path)
    ids, n = store.ids(), len(store.read_reference()["numbers"])
    e, m = 5, 4
    rng = np.random.default_rng(0)
    edges, shifts, n_orb = rng.integers(0, n, (2, e)), np.zeros((e, 3), int), np.full(n, m)

    def put(pairs, value):
        dH2 = np.full((pairs, e, m, m), value, dtype=np.float32)
        store.add_second_order(rng.normal(size=(pairs, n, 3)), dH2, dH2 / 10, np.ones((pairs, e), bool),
                               edges, shifts, n_orb, 300.0)

    put(2, 0.5)
    put(3, 0.25)  # replaces the first: one group, the samples untouched
    got = store.read_second_order()
    assert store.second_order_settings() == (3, 300.0) and store.ids() == ids
    assert got["dH2"].shape == (3, e, m, m) and np.allclose(got["dS2"], 0.025) and got["temperature_K"] == 300.0
    np.testing.assert_array_equal(got["edge_index"], edges)
    put(1, np.nan)
    with pytest.raises(DatasetError, match=r"second-order response stored in .*: non-finite values\. Fix: rerun "
                                           r"hedgenet-label"):
        store.read_second_order()
    assert store.ids() == ids


def test_nan_label_is_refused_at_write_and_at_load(tiny_dataset, tmp_path, tiny_root):
    # at write: a worker's staged sample with a NaN force is recorded as failed, with the reason
    store = DatasetStore(tmp_path / "w.h5")
    shutil.copyfile(tiny_dataset, store.path)
    sample = store.read_sample(0)
    arrays = {k: v for k, v in sample.items() if isinstance(v, np.ndarray)}
    arrays["forces"] = arrays["forces"].copy()
    arrays["forces"][3, 1] = np.nan
    store.stage(7, arrays, {"sample_id": 7, "seed": 1, "kind": "rattle", "status": "ok"})
    store.consolidate()
    assert 7 not in store.ids() and "forces: 1 NaN/inf values" in store.failures()[7]
    # at load: a NaN in a stored sample's positions is refused when training loads the data, naming the sample
    root = tiny_root(tmp_path / "root")
    with h5py.File(root / "data" / "tiny.h5", "r+") as f:
        f["samples"]["000002"]["positions"][5, 0] = np.nan
    with pytest.raises(DatasetError, match=r"sample 2 of .* has unusable labels \(positions: 1 NaN/inf values\)"):
        DatasetStore(root / "data" / "tiny.h5").read_sample(2)
    from hedgenet.training.data import load_samples

    with pytest.raises(DatasetError, match=r"sample 2 of .*tiny.h5 has unusable labels"):
        load_samples([root / "data" / "tiny.h5"])


def test_full_disk_at_the_write_is_clean(tiny_dataset, tmp_path, monkeypatch):
    import hedgenet.data.store as store_mod
    from hedgenet.models import io as model_io

    store = DatasetStore(tmp_path / "f.h5")
    shutil.copyfile(tiny_dataset, store.path)
    before = store.path.read_bytes()
    sample = store.read_sample(0)
    arrays = {k: v for k, v in sample.items() if isinstance(v, np.ndarray)}
    store.stage(5, arrays, {"sample_id": 5, "seed": 1, "kind": "rattle", "status": "ok"})

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    def fills_half_way(fd, data):  # the disk fills while the new file is being written
        os.write(fd, data[: len(data) // 2])
        full()

    monkeypatch.setattr(store_mod, "_write_all", fills_half_way)
    with pytest.raises(DatasetError, match="no space left on the device while adding samples"):
        store.consolidate()
    assert store.path.read_bytes() == before and store.staged_ids() == [5]  # old file and staged sample kept
    assert not list(tmp_path.glob("*.tmp")) and not list(store.staging.glob(".*"))
    monkeypatch.setattr(store_mod.np, "savez", full)  # ... or while staging a sample
    with pytest.raises(DatasetError, match="no space left on the device while staging sample 6"):
        store.stage(6, arrays, {"sample_id": 6})
    assert not list(store.staging.glob(".*"))
    monkeypatch.undo()
    # the free-space check refuses before writing anything
    monkeypatch.setattr(store_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 10**5))
    with pytest.raises(DatasetError, match=r"only 0\.1 MiB free .* Nothing was written"):
        store.consolidate()
    monkeypatch.undo()
    assert store.consolidate() == 1 and 5 in store.ids()
    # a model file cut short by a full disk leaves no temporary file behind

    real_open = open

    def fills_up(path, mode="r", *a, **k):  # the model file's write hits a full disk part-way
        fh = real_open(path, mode, *a, **k)
        if "w" in mode:
            fh.write(b"PK\x03\x04partial")
            fh.flush()
            fh.write = full
        return fh

    monkeypatch.setattr(model_io, "open", fills_up, raising=False)
    with pytest.raises(OSError) as err:
        untrained_model(tmp_path / "m.pt")
    assert err.value.errno == errno.ENOSPC and not list(tmp_path.glob("m.pt*"))


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody may write into: mode 555, or, for root (who ignores modes), the immutable flag."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        pytest.skip("running as root without chattr: no directory is read-only for root here")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)])


def test_consolidation_skips_a_sample_another_worker_is_still_writing(tiny_dataset, tmp_path):
    """A worker stages through ``.<id>.<pid>.tmp.npz``, which a glob for ``*.npz`` also finds: the parent's
    consolidation in that instant once stopped the main job's labelling (``int('.000027.23026')``)."""
    store = DatasetStore(tmp_path / "f.h5")
    shutil.copyfile(tiny_dataset, store.path)
    sample = store.read_sample(0)
    arrays = {k: v for k, v in sample.items() if isinstance(v, np.ndarray)}
    store.stage(5, arrays, {"sample_id": 5, "seed": 1, "kind": "rattle", "status": "ok"})
    with store.locked():  # as the labelling run holds it while its workers stage
        writing = store.staging / f".000006.{os.getpid() + 1}.tmp.npz"  # half-written by a live worker
        writing.write_bytes(b"PK\x03\x04")
        assert store.staged_ids() == [5]
        assert store.consolidate() == 1 and 5 in store.ids() and 6 not in store.ids()
        assert writing.exists()  # the worker's file is its own: left for it to finish and rename


def test_read_only_root_is_one_clear_error(read_only_dir, tmp_path):
    proc = cli("hedgenet-label", read_only_dir, *LABEL, "dataset.rattle.n_per_amplitude=1", cwd=tmp_path)
    line = one_clean_error(proc, "cannot write", "Fix: set HEDGENET_ROOT")
    assert str(read_only_dir) in line
    # with a writable run directory, the dataset's folder is the next thing refused, as clearly
    proc = cli("hedgenet-label", read_only_dir, *LABEL, "dataset.rattle.n_per_amplitude=1",
               f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    one_clean_error(proc, f"cannot write {read_only_dir}/data", "Nothing was written", "Fix: set HEDGENET_ROOT")


# ------------------------------------------------------------------------------------------ training
def test_non_finite_loss_stops_training(tiny_root, tmp_path):
    root = tiny_root(tmp_path)
    proc = cli("hedgenet-train", root, f"data.paths=[{root}/data/tiny.h5]", *TINY_TRAIN, "logger=none",
               "train.max_epochs=3", "train.optimizer.lr=1e30", f"hydra.run.dir={root}/runs/inf")
    one_clean_error(proc, "NonFiniteLossError: the training loss became nan at epoch 1", "Fix: a smaller")
    assert proc.returncode == 2 and not (root / "runs" / "inf" / "model.pt").exists()


def _epochs(run: Path) -> tuple[list[int], list[int]]:
    hist = [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()]
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    val = [int(float(r["epoch"])) for r in rows if r.get("val/loss")]
    return hist, val


def _wait_for(predicate, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _history_rows(run: Path) -> int:
    return len((run / "history.jsonl").read_text().splitlines()) if (run / "history.jsonl").exists() else 0


def test_sigterm_saves_resumable_state_and_resume_keeps_logs_whole(tiny_root, tmp_path):
    root = tiny_root(tmp_path)
    run = root / "runs" / "t"
    args = [f"data.paths=[{root}/data/tiny.h5]", *TINY_TRAIN, "logger=csv", "train.max_epochs=400"]
    proc = cli("hedgenet-train", root, *args, f"hydra.run.dir={run}", wait=False)
    _wait_for(lambda: (run / "checkpoints" / "last.ckpt").exists() and _history_rows(run) >= 3)
    proc.send_signal(signal.SIGTERM)  # what a scheduler sends at the time limit
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped by SIGTERM" in err and "Resume with:" in err and "Traceback" not in err
    assert not (run / "model.pt").exists() and (run / "checkpoints" / "last.ckpt").exists()
    command = shlex.split(err.split("Resume with:")[1].strip().splitlines()[0])
    assert command[0] == "hedgenet-train" and "train.resume=last" in command and f"hydra.run.dir={run}" in command
    command[0] = str(BIN / command[0])
    # the resumed run gets Ctrl-C (SIGINT) as soon as it has restored the checkpoint: status 130, logs intact
    restored = (run / "train.log").read_text().count("Restored all states")
    proc = subprocess.Popen(command, cwd=root, env=_env(root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(lambda: (run / "train.log").read_text().count("Restored all states") > restored)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT and "stopped by SIGINT" in err and "Traceback" not in err
    hist, val = _epochs(run)  # each epoch once from 0, at least up to the checkpoint's epoch (>= 1)
    assert hist == list(range(len(hist))) and val == list(range(len(val))) and min(len(hist), len(val)) >= 2
    end = max(len(hist), len(val)) + 2
    command = [c.replace("train.max_epochs=400", f"train.max_epochs={end}") for c in command]
    resumed = subprocess.run(command, cwd=root, env=_env(root), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _epochs(run) == (list(range(end)), list(range(end)))  # every epoch once: none repeated, none lost
    assert (run / "model.pt").exists()
    # killed after the last epoch, before model.pt was written: the rerun has nothing to train, still finishes
    first = json.loads((run / "metrics.json").read_text())["val/loss"]
    (run / "model.pt").unlink()
    again = subprocess.run(command, cwd=root, env=_env(root), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run / "model.pt").exists() and _epochs(run) == (list(range(end)), list(range(end)))
    assert json.loads((run / "metrics.json").read_text())["val/loss"] == pytest.approx(first, rel=1e-9)


# ------------------------------------------------------------------------------------------ pipeline
def test_stage_without_its_outputs_is_not_done(tmp_path):
    from hedgenet.pipeline.stages import DONE, Stage

    s = Stage("train", "train", None, [], dir=tmp_path)
    (tmp_path / DONE).write_text("{}")  # a train stage that exited 0 after SIGTERM, without model.pt
    (tmp_path / "metrics.json").write_text("{}")
    assert not s.done and s.missing_outputs() == ["model.pt"]
    (tmp_path / "model.pt").write_bytes(b"x")
    assert s.done


def test_one_root_spelt_three_ways_gives_one_hash(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    env = {k: v for k, v in _env(root).items() if k != "HEDGENET_ROOT"}
    args = ["dry_run=true", "stages=[label,train]"]
    runs = [
        cli("hedgenet-pipeline", root, *args, "hydra.run.dir=runs/dot", cwd=root, env=env),  # "."
        cli("hedgenet-pipeline", root, *args, f"hydra.run.dir={root}/runs/env", cwd=tmp_path),  # $HEDGENET_ROOT
        cli("hedgenet-pipeline", root, *args, "hydra.run.dir=../runs/up", cwd=root / "sub",
            env={**env, "HEDGENET_ROOT": ".."}),  # ".."
    ]
    for p in runs:
        assert p.returncode == 0, p.stderr[-2000:]
    plans = [json.loads((root / "runs" / n / "stages.json").read_text()) for n in ("dot", "env", "up")]
    hashes = [{r["stage"]: r["hash"] for r in plan} for plan in plans]
    assert hashes[0] == hashes[1] == hashes[2], hashes
    dirs = {r["dir"] for plan in plans for r in plan if r["stage"] == "label"}
    assert len(dirs) == 1


# ------------------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="module")
def compose_cfg():
    from hydra import compose, initialize_config_dir

    from hedgenet.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        yield lambda name, *ov: compose(name, overrides=[*ov, "paths.output_dir=/tmp/out"])


@pytest.mark.parametrize("overrides,message", [
    (["temperatures.K=[-100,300]"], "temperatures.K: temperatures must be finite and ≥ 0 K"),
    (["dataset.rattle.amplitudes_A=[-0.02]"], "rattle amplitudes are standard deviations in Å and must be > 0"),
    (["dataset.supercell=[0,0]"], "dataset.supercell=[0, 0]: a supercell is 2 (or 3) whole numbers ≥ 1"),
    (["dataset.thermal.temperatures_K=[0.0]", "dataset.thermal.quantum=false"],
     "classical sampling displaces nothing at 0 K"),
])
def test_label_inputs_are_refused_before_any_work(compose_cfg, overrides, message):
    from hedgenet.cli.label import check_label_config
    from hedgenet.config import ConfigError

    with pytest.raises(ConfigError) as err:
        check_label_config(compose_cfg("label", *overrides))
    assert message in str(err.value) and "Fix:" in str(err.value)


@pytest.mark.parametrize("kwargs,message", [
    ({"n_bootstrap": -1}, "fermi_velocity.n_bootstrap=-1: the error bars are the spread of bootstrap draws"),
    ({"quantum": False, "temperatures_K": (0.0, 300.0)}, "displaces nothing at 0 K"),
])
def test_fermi_velocity_inputs_are_refused(kwargs, message):
    from hedgenet.physics.fermi_velocity import RenormalizationSettings

    with pytest.raises(ValueError, match=message):
        RenormalizationSettings(**kwargs).check()


def test_deeph_import_refuses_non_finite_positions(tiny_dataset, tmp_path):
    from hedgenet.cli.dataset import main as dataset_main
    from hedgenet.data.deeph_format import import_deeph

    folder = tmp_path / "deeph"
    dataset_main(["export-deeph", str(tiny_dataset), str(folder), "--sample", "0"])
    pos = np.loadtxt(folder / "site_positions.dat")
    pos[2, 7] = np.nan
    np.savetxt(folder / "site_positions.dat", pos)
    with pytest.raises(ValueError, match=r"site_positions.dat: positions of atoms \[7\] .* are NaN or inf"):
        import_deeph(folder)
    lat = np.loadtxt(folder / "lat.dat")
    lat[0, 0] = np.inf
    np.savetxt(folder / "lat.dat", lat)
    with pytest.raises(ValueError, match="lat.dat: the lattice holds NaN or inf"):
        import_deeph(folder)


def test_layer_count_hint_names_a_fix_hedgenet_train_accepts():
    from hedgenet.graphs.relations import RelationSpec

    spec = RelationSpec(name="by_layer_pair", types=("L0-L0", "L0-L1", "L1-L1"), cutoffs=(3.0, 3.5, 3.0), n_layers=2)
    with pytest.raises(ValueError) as err:
        spec.classify(np.array([6, 6]), np.array([6, 6]), np.array([0, 2]), np.array([2, 0]))
    assert "relations.n_layers" not in str(err.value) and "relations=intra_inter" in str(err.value)


def test_unreadable_checkpoint_to_resume_from_is_named(tmp_path):
    from hedgenet.config import ConfigError
    from hedgenet.training.callbacks import check_resume_checkpoint

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    (ckpt.parent / "epoch=3-step=4.ckpt").write_bytes(b"")
    ckpt.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ConfigError, match=r"last.ckpt, cannot be read .* Fix: resume from another checkpoint"):
        check_resume_checkpoint(ckpt)


def _processes_with(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmdline = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                out.append(int(p.name))
    return out


def test_sigterm_to_the_pipeline_stops_its_stage_and_a_rerun_finishes(tmp_path):
    """A scheduler stops the pipeline's pid only: the running stage gets the signal too (no orphan keeps
    labelling into the stage directory while a rerun starts there), and the rerun completes every sample once."""
    args = ["stages=[label]", "reference_stages=[]", "overrides.label.dataset.supercell=[4,4]",
            "overrides.label.dataset.n_workers=1", "overrides.common.reference.block_cutoff=3.5",
            "overrides.label.dataset.rattle.n_per_amplitude=4", "overrides.label.dataset.thermal.n_per_temperature=0",
            "+overrides.label.dataset.rigid.shifts_A=[]", "+overrides.label.dataset.strain.strains=[]",
            "+overrides.label.dataset.consolidate_every_s=0", "+material.params.a=2.458", "+material.params.d=3.32",
            "material.relax=[]", f"hydra.run.dir={tmp_path}/runs/p"]
    proc = cli("hedgenet-pipeline", tmp_path, *args, wait=False)
    stage_root = tmp_path / "outputs" / "pipeline" / "stages" / "label"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(stage_root.glob("*/dataset.h5")):
        time.sleep(0.5)  # the first samples are consolidated: the stage is labelling
    (stage_dir,) = list(stage_root.iterdir())
    assert _processes_with(f"hydra.run.dir={stage_dir}"), "the label stage is not running"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    time.sleep(1.0)
    assert not _processes_with(f"hydra.run.dir={stage_dir}"), "the stage outlived the pipeline"
    again = cli("hedgenet-pipeline", tmp_path, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert DatasetStore(stage_dir / "dataset.h5").ids() == list(range(8))
