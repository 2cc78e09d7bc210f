"""What every run writes into its Hydra run directory: resolved config, summary/metrics, logger records."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return obj


@dataclass
class Run:
    cfg: DictConfig
    run_dir: Path
    wandb_run: object | None = None
    extras: dict = field(default_factory=dict)

    def tracker(self):
        """The run's W&B run (``logger=wandb``) in the process that logs (global rank 0), else None: the one
        :func:`start_run` opened, or the one the body's Lightning ``WandbLogger`` opened on rank 0."""
        if self.wandb_run is None and _logger_name(self.cfg) == "wandb" and is_global_zero():
            import sys

            wandb = sys.modules.get("wandb")  # never imported here just to find that no run is open
            if wandb is not None and wandb.run is not None:
                self.wandb_run = wandb.run
        return self.wandb_run

    def log_summary(self, summary: dict, name: str = "summary.json") -> None:
        """``summary`` into ``name`` (JSON) and, with ``logger=wandb``, its numbers into the W&B run's summary.
        The per-epoch metrics of a training run are the logger's (``csv/metrics.csv``), not repeated here."""
        (self.run_dir / name).write_text(json.dumps(_jsonable(summary), indent=1, default=str))
        tracker = self.tracker()
        if tracker is not None:
            flat = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            tracker.summary.update(flat)

    def fail(self, err: BaseException) -> None:
        try:
            (self.run_dir / "error.txt").write_text(f"{type(err).__name__}: {err}\n")
        except OSError:
            pass  # a full disk or a read-only run directory: the console still gets the message


class FileWriteError(RuntimeError):
    """A run cannot write where it was told to (read-only, forbidden, or full disk); the message names the
    file and the fix."""


def file_error_message(err: OSError) -> str | None:
    """One line for the write failures a user fixes (read-only or forbidden directory, full disk), else None."""
    import errno

    name = getattr(err, "filename", None)
    if err.errno == errno.ENOSPC:
        return (f"no space left on the device{f' writing {name}' if name else ''}. Fix: free disk space, or set "
                "HEDGENET_ROOT (or hydra.run.dir) on a disk with room, and rerun: finished work is kept")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"cannot write{f' {name}' if name else ''}: {err.strerror}. Fix: set HEDGENET_ROOT (or "
                "hydra.run.dir) to a writable directory, or make this one writable")
    return None


def _logger_name(cfg) -> str:
    return str((cfg.get("logger") or {}).get("name", "none"))


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
"""Environment variables that carry a process's rank, in Lightning's order (``torchrun`` and Lightning's own
DDP launcher set ``RANK``/``LOCAL_RANK``, ``srun`` sets ``SLURM_PROCID``)."""


def is_global_zero() -> bool:
    """Whether this process is rank 0 by its environment (the first rank variable set), or not a rank at all."""
    import os

    for key in RANK_VARIABLES:
        value = os.environ.get(key)
        if value not in (None, ""):
            try:
                return int(value) == 0
            except ValueError:
                return True
    return True


def tracker_run_name(cfg: DictConfig, run_dir: Path) -> str:
    """The W&B run's name: ``logger.run_name`` if set, else the run directory relative to ``<root>/outputs``
    (``train/runs/2026-12-02_09-28-34-123456``), else relative to ``<root>``, else its last three parts, after
    the experiment's name when one was chosen (``compare_baselines:train/multiruns/2026-12-02_10-00-00/3``)."""
    name = (cfg.get("logger") or {}).get("run_name")
    if name:
        return str(name)
    run_dir = Path(run_dir).resolve()
    name = "/".join(run_dir.parts[-3:])
    try:
        root = Path(str(cfg.paths.root_dir)).resolve()
    except Exception:  # noqa: BLE001 — no paths group, or an unresolvable root: only the name is at stake
        root = None
    for base in ([root / "outputs", root] if root is not None else []):
        if run_dir.is_relative_to(base) and run_dir != base:
            name = run_dir.relative_to(base).as_posix()
            break
    try:
        from hydra.core.hydra_config import HydraConfig

        experiment = HydraConfig.get().runtime.choices.get("experiment")
    except (ImportError, ValueError):
        experiment = None
    return f"{experiment}:{name}" if experiment else name


def start_run(cfg: DictConfig, open_tracker: bool = True) -> Run:
    """Resolve the run directory, write ``resolved_config.yaml`` and, with ``logger=wandb`` and
    ``open_tracker``, open the W&B run on global rank 0 only. A training run passes ``open_tracker=False``:
    its Lightning ``WandbLogger`` opens the run once Lightning knows the DDP rank, and :meth:`Run.tracker`
    finds it for the summary."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    run = Run(cfg=cfg, run_dir=run_dir)
    lg = cfg.get("logger", {})
    if lg.get("name") == "wandb" and open_tracker and is_global_zero():
        import os

        import wandb

        os.environ.setdefault("WANDB_MODE", lg.get("mode", "offline"))
        run.wandb_run = wandb.init(
            project=lg.project, dir=str(run_dir), mode=lg.get("mode", "offline"), group=lg.get("group"),
            name=tracker_run_name(cfg, run_dir), tags=list(lg.get("tags", [])),
            config=OmegaConf.to_container(cfg, resolve=True),
        )
    return run


def finish_run(run: Run) -> None:
    """Close the run's W&B run (``wandb.finish``), whichever opened it; always called, also after an error."""
    tracker = run.tracker()
    if tracker is not None:
        tracker.finish()


def exit_with_user_error(prog: str, run, err: BaseException) -> None:
    """Record ``err`` in the run directory and exit with one clear line (no stack dump), status 2 (or the
    error's own ``exit_status``: 128 + signal for a run stopped by a signal)."""
    import sys

    run.fail(err)
    print(f"{prog}: error: {type(err).__name__}: {err}", file=sys.stderr)
    raise SystemExit(int(getattr(err, "exit_status", 2))) from None


def run_stage(prog: str, cfg, body, report=None, user_errors: tuple = (), open_tracker: bool = True):
    """The life cycle every hedgenet CLI shares: start the run (run directory, resolved config, logger),
    ``summary = body(cfg, run_dir)``, log it (summary.json; with W&B, the run's summary too),
    ``report(summary, run)`` for the console. Errors the user can fix (``ConfigError`` and ``user_errors``)
    become one line and exit status 2; any other error is recorded in error.txt and re-raised; the W&B run
    is always finished. ``open_tracker=False``: the body opens the W&B run itself (:func:`start_run`)."""
    from hedgenet.config import ConfigError

    import sys

    try:
        run = start_run(cfg, open_tracker)
    except OSError as err:
        message = file_error_message(err)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        summary = body(cfg, run.run_dir)
        if summary:
            run.log_summary(summary)
            if report is not None:
                report(summary, run)
        return summary
    except (ConfigError, *user_errors) as err:
        exit_with_user_error(prog, run, err)
    except OSError as err:
        message = file_error_message(err)
        if message is None:
            run.fail(err)
            raise
        exit_with_user_error(prog, run, FileWriteError(message))
    except Exception as err:
        run.fail(err)
        raise
    finally:
        finish_run(run)


def load_run_arrays(run_dir, filename: str, prog: str) -> dict:
    """Arrays of ``filename`` (.npz) in a finished run directory of ``prog``, for ``compare_with``."""
    from pathlib import Path

    import numpy as np

    from hedgenet.config import ConfigError

    f = Path(run_dir) / filename
    if not f.exists():
        raise ConfigError(f"compare_with={run_dir}: no {filename} there. Fix: point it at a {prog} run directory")
    return dict(np.load(f, allow_pickle=False))
