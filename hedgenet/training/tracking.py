"""What a training run logs and where: one log stream, one metrics file, one W&B run.

* **One log stream.** Lightning's top-level ``lightning`` logger carries a console handler of its own and also
  passes its records on to the root logger, where Hydra's handlers write them to the console and to
  ``<run dir>/train.log``: every Lightning line was printed twice. :func:`single_log_stream` removes Lightning's
  own console handlers when the root logger has handlers (a Hydra app), so each line reaches the console once
  and ``train.log`` once.
* **One metrics file.** ``logger=csv``: ``<run dir>/csv/metrics.csv``, one row per logged step and epoch
  (written by :class:`~hedgenet.training.callbacks.ResumableCSVLogger`, kept whole across kills and resumes).
  The final numbers go to ``metrics.json`` (and ``summary.json``), not to a second CSV file.
* **One W&B run.** ``logger=wandb``: Lightning's ``WandbLogger`` opens the run itself, lazily, on global rank 0
  only (its ``experiment`` is ``rank_zero_experiment``; with ``ddp_spawn`` it opens the run in the launching
  process and the rank-0 worker attaches to it), so a DDP run is one W&B run, not one per rank. The run is
  named after the run directory (:func:`hedgenet.run_io.tracker_run_name`), carries the resolved config,
  every logged metric, the figures (parity plots, learning curves) and ``model.pt`` as a ``model`` artifact
  (:func:`log_run_outputs`). Offline by default: ``wandb sync <run dir>/wandb/offline-run-*`` uploads it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


def single_log_stream() -> None:
    """Lightning's log records reach the console and the run's log file once: through the root logger's
    handlers (Hydra's), not also through Lightning's own console handlers. Without root handlers (a plain
    script, a ``ddp_spawn`` worker) Lightning's handlers stay: they are then the only stream."""
    if not logging.getLogger().handlers:
        return
    for name in LIGHTNING_LOGGERS:
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            if type(handler) is logging.StreamHandler:  # console handlers only; a user's file handler stays
                log.removeHandler(handler)
        log.propagate = True


def wandb_logger(cfg: DictConfig, run_dir: Path):
    """Lightning's ``WandbLogger`` for ``logger=wandb``: nothing is opened here; the run is created on global
    rank 0 when Lightning first logs (or, with ``ddp_spawn``, in the launching process before the workers
    start), named after the run directory, with the resolved config."""
    from lightning.pytorch.loggers import WandbLogger

    from hedgenet.run_io import tracker_run_name

    lg = cfg.logger
    mode = str(lg.get("mode") or "offline")
    return WandbLogger(
        name=tracker_run_name(cfg, run_dir), project=lg.get("project"), save_dir=str(run_dir), mode=mode,
        group=lg.get("group"), tags=list(lg.get("tags") or []), job_type=str(cfg.get("task_name", "train")),
        config=OmegaConf.to_container(cfg, resolve=True), log_model=False,
    )


def log_run_outputs(logger, run_dir: Path, model_name: str, metrics: dict, log_model: bool = True) -> None:
    """Into the W&B run of ``logger`` (rank 0, after training): every figure of the run directory
    (``figures/<name>``: parity plots, learning curves) and, with ``log_model``, ``model.pt`` as an artifact
    of type ``model`` named ``<model>-<run id>``, whose metadata hold the final scalar metrics. Offline, the
    artifact is recorded in the run and uploaded by ``wandb sync``."""
    import wandb

    run = logger.experiment
    if not isinstance(run, wandb.Run):  # a disabled run (mode=disabled) or a rank that does not log
        return
    figures = {f"figures/{p.stem}": wandb.Image(str(p)) for p in sorted(Path(run_dir).glob("*.png"))}
    if figures:
        run.log(figures)
    model_file = Path(run_dir) / "model.pt"
    if log_model and model_file.exists():
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        artifact = wandb.Artifact(f"{model_name}-{run.id}", type="model", metadata=scalars,
                                  description=f"hedgenet {model_name} model file (hedgenet.models.io.load_model)")
        artifact.add_file(str(model_file), name="model.pt")
        run.log_artifact(artifact, aliases=["latest"])
