"""What hedgenet-train logs: one W&B run under DDP (named, with the figures and the model artifact), callbacks
from config (early stopping, learning-rate monitor), each log line once, one metrics file per run."""

from __future__ import annotations

import csv
import json
import logging
import struct
from pathlib import Path

import pytest
from cli_runner import run_cli

TINY = [
    "relations.r_intra=3.0", "relations.r_inter=3.5", "model.size.channels=8", "model.num_basis=4",
    "model.radial_hidden=8", "data.val_fraction=0.34", "train.log_every_n_steps=1",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory, tiny_root) -> Path:
    return tiny_root(tmp_path_factory.mktemp("logging_root"))


def train(root: Path, name: str, *overrides: str):
    return run_cli("hedgenet-train", root, name, [f"data.paths=[{root}/data/tiny.h5]", *TINY, *overrides])


def wandb_records(path: Path):
    """The records of an offline W&B run file (``run-<id>.wandb``: W&B's header, then LevelDB-log chunks of
    32 KiB blocks, each a ``wandb_internal_pb2.Record``), read without wandb's service."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL, FIRST | MIDDLE, LAST
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def log_messages(text: str) -> list[str]:
    """The messages of a Hydra log (``[time][logger][LEVEL] - message``), without their time stamps."""
    return [line.split("] - ", 1)[1] for line in text.splitlines() if line.startswith("[") and "] - " in line]


def test_ddp_run_is_one_named_wandb_run_with_figures_and_model(root):
    """trainer=ddp_sim with ``ddp`` (2 gloo processes; the command is re-executed for rank 1, as trainer=ddp does
    on GPUs): one offline W&B run, named after the run directory, holding the figures and model.pt. (ddp_spawn,
    trainer=ddp_sim's own strategy, makes one W&B run too: tests/test_training.py's DDP run logs to W&B.)"""
    strategy = "ddp"
    proc, run = train(root, f"ddp_{strategy}", "logger=wandb", "trainer=ddp_sim", f"trainer.strategy={strategy}",
                      "data.batch_size=1", "train.max_epochs=1")
    runs = sorted((run / "wandb").glob("*run-*"))
    assert [p.name.startswith("offline-run-") for p in runs] == [True], runs  # exactly one, offline
    records = list(wandb_records(next(runs[0].glob("run-*.wandb"))))
    started = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert len(started) == 1 and started[0].display_name == f"runs/ddp_{strategy}", started
    assert started[0].run_group == "train"
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert [a.type for a in artifacts] == ["model"] and artifacts[0].name == f"hedgenet-{started[0].run_id}"
    files = {e.path: e.size for e in artifacts[0].manifest.contents}
    assert files == {"model.pt": (run / "model.pt").stat().st_size}
    logged = {"/".join(i.nested_key) or i.key for r in records if r.WhichOneof("record_type") == "history"
              for i in r.history.item}
    assert {"train/loss", "val/loss", "figures/parity_forces/path", "figures/learning_curves/path"} <= logged
    summary = {i.key or "/".join(i.nested_key) for r in records if r.WhichOneof("record_type") == "summary"
               for i in r.summary.update}
    assert {"val/forces_mae", "epochs_trained"} <= summary
    images = {p.name.rsplit("_", 2)[0] for p in (runs[0] / "files" / "media" / "images" / "figures").glob("*.png")}
    assert {"parity_forces", "parity_H", "learning_curves"} <= images
    # one log stream: each Lightning line once on the console and once in train.log (rank 0's log)
    messages = log_messages((run / "train.log").read_text())
    assert messages and len(messages) == len(set(messages)), messages
    assert (proc.stdout + proc.stderr).count("GPU available:") == 1
    assert json.loads((run / "metrics.json").read_text())["epochs_trained"] == 1


def test_callbacks_from_config_early_stopping_lr_monitor_one_metrics_file(root):
    """callbacks=[early_stopping,lr_monitor]: a min_delta no epoch can beat stops the run after patience + 1
    epochs; the learning rate is a column of the run's one metrics file; each log line is written once."""
    proc, run = train(root, "callbacks", "logger=csv", "train.max_epochs=20", "callbacks=[early_stopping,lr_monitor]",
                      "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=1e9")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 20 and metrics["epochs_trained"] == 2
    assert len((run / "history.jsonl").read_text().splitlines()) == 2
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*.csv")) == ["csv/metrics.csv"]
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")] == [0.005, 0.005]  # train.optimizer.lr
    assert sorted({r["epoch"] for r in rows if r.get("val/loss")}) == ["0", "1"]
    log = (run / "train.log").read_text()
    messages = log_messages(log)
    assert len(messages) == len(set(messages)) and log.count("GPU available:") == 1, log
    assert (proc.stdout + proc.stderr).count("GPU available:") == 1


def test_lr_monitor_without_logger_is_refused(root):
    proc, _ = run_cli("hedgenet-train", root, "lr_none", [f"data.paths=[{root}/data/tiny.h5]", *TINY, "logger=none",
                                                          "callbacks=lr_monitor"], check=False)
    assert proc.returncode == 2 and "Fix: logger=csv" in proc.stderr, proc.stderr[-2000:]


def test_single_log_stream_drops_lightning_console_handlers():
    import lightning  # noqa: F401 — adds its console handler to the "lightning" logger

    from hedgenet.training.tracking import single_log_stream

    root_logger, records = logging.getLogger(), []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    keep = Keep()
    root_logger.addHandler(keep)
    try:
        single_log_stream()
        assert not [h for h in logging.getLogger("lightning").handlers if type(h) is logging.StreamHandler]
        logging.getLogger("lightning.pytorch.test").warning("once")
        assert records == ["once"]
    finally:
        root_logger.removeHandler(keep)


def test_tracker_run_name_and_rank(monkeypatch, tmp_path):
    from omegaconf import OmegaConf

    from hedgenet.run_io import is_global_zero, tracker_run_name

    cfg = OmegaConf.create({"paths": {"root_dir": str(tmp_path)}, "logger": {"name": "wandb", "run_name": None}})
    assert tracker_run_name(cfg, tmp_path / "outputs" / "train" / "runs" / "2026-12-02_10-00-00") == \
        "train/runs/2026-12-02_10-00-00"
    assert tracker_run_name(cfg, tmp_path / "runs" / "mine") == "runs/mine"
    cfg.logger.run_name = "ab-bilayer-seed0"
    assert tracker_run_name(cfg, tmp_path / "runs" / "mine") == "ab-bilayer-seed0"
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert is_global_zero()
    monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning's DDP launcher gives the command it re-executes
    assert not is_global_zero()
    monkeypatch.setenv("RANK", "0")
    assert is_global_zero()
