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

    def log_summary(self, summary: dict, name: str = "summary.json") -> None:
        (self.run_dir / name).write_text(json.dumps(_jsonable(summary), indent=1, default=str))
        logger = self.cfg.get("logger", {}).get("name", "none")
        flat = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if logger == "csv":
            import csv

            with open(self.run_dir / "metrics.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(list(flat))
                w.writerow(list(flat.values()))
        elif logger == "wandb" and self.wandb_run is not None:
            self.wandb_run.summary.update(flat)

    def fail(self, err: BaseException) -> None:
        (self.run_dir / "error.txt").write_text(f"{type(err).__name__}: {err}\n")


def start_run(cfg: DictConfig) -> Run:
    """Resolve the run directory, write ``resolved_config.yaml`` and start the logger."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    run = Run(cfg=cfg, run_dir=run_dir)
    lg = cfg.get("logger", {})
    if lg.get("name") == "wandb":
        import os

        import wandb

        os.environ.setdefault("WANDB_MODE", lg.get("mode", "offline"))
        run.wandb_run = wandb.init(
            project=lg.project, dir=str(run_dir), mode=lg.get("mode", "offline"), group=lg.get("group"),
            tags=list(lg.get("tags", [])), config=OmegaConf.to_container(cfg, resolve=True),
        )
    return run


def finish_run(run: Run) -> None:
    if run.wandb_run is not None:
        run.wandb_run.finish()
