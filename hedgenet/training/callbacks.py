"""Lightning callbacks (module level, so they pickle for ``ddp_spawn``) and the ways a training run stops
early on purpose: a non-finite loss, or SIGTERM/SIGINT (:class:`TrainingInterrupted`)."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter as _ExperimentWriter
from lightning.pytorch.plugins.io import TorchCheckpointIO


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf: the run stops instead of training (and saving) NaN weights."""


class TrainingInterrupted(BaseException):
    """SIGTERM or SIGINT reached ``hedgenet-train``. The process exits with 128 + the signal number (143 for
    SIGTERM, 130 for Ctrl-C), as a killed process would, after saying where the run can resume from. A
    ``BaseException`` like ``KeyboardInterrupt``: raised from the signal handler wherever the main thread is,
    it must not be swallowed by an ``except Exception`` on the way (an import guard, a fallback)."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = int(signum)
        self.exit_status = 128 + self.signum
        super().__init__(message or f"stopped by {signal.Signals(self.signum).name}")


class StopOnSignal:
    """While active, SIGTERM and SIGINT raise :class:`TrainingInterrupted` in the main thread (Lightning's own
    SIGTERM notifier runs first and is kept) and are remembered: an exception raised while Python runs a
    finaliser (``__del__``, a Cython dealloc during garbage collection) is swallowed by the interpreter, so
    :meth:`check` (called by :class:`SignalCheck` at every batch and before the run writes its outputs) raises
    again. Restores the previous handlers on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    received: int | None = None

    def __enter__(self):
        import threading

        self.previous = {}
        StopOnSignal.received = None
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self.previous[s] = signal.signal(s, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        StopOnSignal.received = int(signum)
        raise TrainingInterrupted(signum)

    @staticmethod
    def check() -> None:
        if StopOnSignal.received is not None:
            raise TrainingInterrupted(StopOnSignal.received)

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False


class SignalCheck(Callback):
    """Raises :class:`TrainingInterrupted` at the next batch when a signal arrived but its exception was lost."""

    def on_train_start(self, trainer, pl_module) -> None:
        StopOnSignal.check()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        StopOnSignal.check()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        StopOnSignal.check()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written as model files are: serialised in memory, written to
    ``<file>.<pid>.tmp`` in the checkpoint's own directory, fsynced, renamed into place. (Lightning's own writer
    stages the file in the system's temporary directory and, when that is another filesystem, copies it into
    place: a kill or a full disk during the copy left a truncated checkpoint that the next resume fails on.)"""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        import io

        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(buf.getbuffer())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def check_resume_checkpoint(path: str | Path) -> None:
    """A clear error before training when the checkpoint to resume from cannot be read (truncated, empty)."""
    import torch

    from hedgenet.config import ConfigError

    path = Path(path)
    try:
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001 — any failure to read it is the same problem for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path)
        raise ConfigError(
            f"the checkpoint to resume from, {path}, cannot be read ({type(err).__name__}: {first}). Fix: resume "
            + (f"from another checkpoint of the run (train.resume={path.parent}/{others[-1]}), or " if others else "")
            + f"move {path.name} away and rerun to start the training again"
        ) from None


class NonFiniteLossGuard(Callback):
    """Stop at the first training batch whose loss is NaN or inf, naming the epoch, the step and the fix."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"the training loss became {value} at epoch {trainer.current_epoch}, step {trainer.global_step} "
                "(batch {}): the weights would be NaN from here on, so the run stops and no model.pt is written. "
                "The data were checked finite when loaded, so the optimisation diverged. Fix: a smaller "
                "train.optimizer.lr, a smaller train.gradient_clip_val, or train.loss_weights with less weight on "
                "the diverging term; checkpoints/last.ckpt (if any) holds the last finished epoch.".format(batch_idx)
            )


class TrialPruning(Callback):
    """Reports the validation ``objective`` to an Optuna trial after every validation epoch (step = epochs
    trained) and, when the trial's pruner says so, stops the training at the end of that epoch. The run then
    ends as any other (evaluation, metrics.json, model.pt): :meth:`run_metrics` adds ``pruned_after_epoch``.
    ``trial`` is anything with Optuna's ``report(value, step)`` and ``should_prune()``; ``log(message)`` says
    when a trial is pruned. One device only (a sweep never runs DDP trials)."""

    def __init__(self, trial, objective: str, log=print):
        self.trial, self.objective, self.say = trial, objective, log
        self.pruned: tuple[int, float] | None = None   # (epochs trained, objective value) when pruned

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.pruned is not None:
            return
        metrics = trainer.callback_metrics
        if self.objective not in metrics:
            from hedgenet.config import ConfigError

            names = sorted(k for k in metrics if k.startswith("val/"))
            raise ConfigError(f"sweep objective {self.objective!r} is not among this run's validation metrics "
                              f"{names} (the datasets lack its labels, or the model does not predict it). "
                              "Fix: set sweep.objectives to names from that list")
        value, epochs = float(metrics[self.objective]), trainer.current_epoch + 1
        self.trial.report(value, step=epochs)
        if self.trial.should_prune():
            self.pruned = (epochs, value)
            trainer.should_stop = True
            self.say(f"trial {self.trial.number} pruned after epoch {epochs}/{trainer.max_epochs}: "
                     f"{self.objective}={value:.6g}")

    def run_metrics(self) -> dict:
        return {} if self.pruned is None else {"pruned_after_epoch": self.pruned[0]}


class HistoryWriter(Callback):
    """Rank 0 keeps one JSON line of ``callback_metrics`` per validation epoch in ``path``, one row per epoch:
    a resumed run first drops the rows of the epochs it will redo, and rows written again replace the old
    ones; the file is rewritten atomically, so a kill never leaves half a line. ``previous``: the history of the
    run a resumed run continues from (when it resumes into a new run directory), whose earlier epochs it keeps."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.previous: Path | None = None
        self.rows: dict[int, dict] = {}

    @staticmethod
    def read(path: Path) -> dict[int, dict]:
        rows = {}
        if path is not None and Path(path).exists():
            for line in Path(path).read_text().splitlines():
                try:
                    row = json.loads(line)
                    rows[int(row["epoch"])] = row
                except (ValueError, KeyError, TypeError):
                    continue  # a torn line of an older writer
        return rows

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        start = trainer.current_epoch  # after a checkpoint was restored: the first epoch this run trains
        rows = self.read(self.path)
        if not rows and self.previous is not None and self.previous.resolve() != self.path.resolve():
            rows = self.read(self.previous)
        self.rows = {e: r for e, r in rows.items() if e < start}
        self._write()

    def on_validation_end(self, trainer, pl_module) -> None:
        # not on_validation_epoch_end: Lightning runs the callbacks' epoch-end hooks before the module's, where the
        # epoch's error metrics are logged, so the row would hold the previous epoch's MAEs
        if trainer.is_global_zero and not trainer.sanity_checking:
            row = {k: float(v) for k, v in trainer.callback_metrics.items()}
            row["epoch"] = trainer.current_epoch
            self.rows[trainer.current_epoch] = row
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(self.rows[e]) + "\n" for e in sorted(self.rows)))
        os.replace(tmp, self.path)


class KeepLoggedEpochs(Callback):
    """Keeps ``csv/metrics.csv`` whole across kills and resumes (with :func:`resumable_csv_logger`): when
    training starts (after a checkpoint was restored) the file is rewritten with the rows of the epochs before
    the one the run restarts at (``rows``: read before the run started), and it is rewritten, atomically, at
    the end of every epoch before the checkpoint of that epoch is saved. So the file always holds every epoch
    the checkpoint holds, once."""

    def __init__(self, rows: list[dict]):
        self.rows = rows
        self.seeded = False

    def _seed(self, trainer) -> None:
        self.seeded = True
        writer = _writer(trainer)
        if writer is None:
            return
        start = trainer.current_epoch
        # rows without an epoch (a LearningRateMonitor's) are kept by their step: those logged before the
        # step the run restarts at
        step = int(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step))
        writer.rows = [r for r in self.rows if _kept(r, start, step)] + writer.rows
        writer.ready = True
        writer.save()

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._seed(trainer)

    def _flush(self, trainer) -> None:
        writer = _writer(trainer)
        if trainer.is_global_zero and writer is not None and not trainer.sanity_checking:
            writer.save()

    def on_validation_end(self, trainer, pl_module) -> None:
        self._flush(trainer)  # callbacks run before ModelCheckpoint: the rows reach the disk first

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._flush(trainer)

    def on_fit_end(self, trainer, pl_module) -> None:
        """A run resumed after its last epoch trains nothing (no ``on_train_start``): keep the rows here."""
        if trainer.is_global_zero and not self.seeded:
            self._seed(trainer)


def _writer(trainer):
    logger = trainer.logger
    writer = getattr(logger, "experiment", None) if logger is not None else None
    return writer if isinstance(writer, _WholeFileWriter) else None


class _WholeFileWriter(_ExperimentWriter):
    """Lightning's CSV experiment writer, except that it never deletes an existing ``metrics.csv`` when it
    starts, and every save rewrites the whole file atomically (a temporary file, then a rename) from all rows
    of this run plus the earlier epochs it keeps: a kill never leaves a torn or emptied file."""

    def __init__(self, log_dir: str):
        self.rows: list[dict] = []
        self.ready = False  # set when the earlier epochs' rows are in (KeepLoggedEpochs): no write before
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:  # the parent deletes metrics.csv here
        return

    def save(self) -> None:
        if not self.ready:  # e.g. the logger finalised by a stop during start-up: the file stays as it was
            return
        self.rows.extend(self.metrics)
        self.metrics = []
        keys = sorted({k for r in self.rows for k in r})
        self.metrics_keys = keys
        path = Path(self.metrics_file_path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        import csv

        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, path)


class ResumableCSVLogger(CSVLogger):
    """A CSVLogger writing through :class:`_WholeFileWriter`."""

    @property
    def experiment(self):
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _WholeFileWriter(log_dir=self.log_dir)
        return self._experiment


def resumable_csv_logger(save_dir: str) -> ResumableCSVLogger:
    """``<save_dir>/csv/metrics.csv``, saved at the end of every epoch (:class:`KeepLoggedEpochs`) and at the
    end of the run, not every 100 steps."""
    return ResumableCSVLogger(save_dir=save_dir, name="csv", version="", flush_logs_every_n_steps=10**9)


def _epoch_of(row: dict):
    try:
        return int(float(row.get("epoch")))
    except (TypeError, ValueError):
        return None


def _kept(row: dict, start_epoch: int, start_step: int) -> bool:
    """Whether a row of the earlier run belongs before the epoch (and step) a resumed run restarts at."""
    epoch = _epoch_of(row)
    if epoch is not None:
        return epoch < start_epoch
    try:
        return int(float(row.get("step"))) < start_step
    except (TypeError, ValueError):
        return False


def read_csv_rows(path: Path) -> list[dict]:
    """Rows of an existing CSV metrics file (empty values dropped), for :class:`KeepLoggedEpochs`."""
    import csv

    if not Path(path).exists():
        return []
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]
