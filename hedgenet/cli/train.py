"""``hedgenet-train``: fit HedgeNet (or a baseline) to labelled datasets with Lightning (Hydra app).

    hedgenet-train                                           # HedgeNet small, joint task, on the default dataset
    hedgenet-train task=forces model=hedgenet_medium relations=single
    hedgenet-train trainer=ddp_sim train.max_epochs=5        # 2 CPU processes (gloo)
    hedgenet-train train.resume=<run dir>/checkpoints/last.ckpt
    hedgenet-train tuned=hedgenet_ab_bilayer_graphene         # the best trial of a hedgenet-sweep study
    hedgenet-train experiment=compare_baselines              # every model × 3 seeds on one split (multirun)

Writes into the run directory: resolved_config.yaml, split.json, history.jsonl, metrics.json,
parity_*.png, learning_curves.png, checkpoints/ and model.pt (the EMA weights when EMA is on).
Hyperparameter sweeps: ``hedgenet-sweep hparams_search=<family>`` (hedgenet/cli/sweep.py).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hedgenet.config import config_dir
from hedgenet.run_io import run_stage


def _report(metrics: dict, run) -> None:
    keys = [k for k in metrics if k.endswith("_mae") and "-" not in k]
    print("\n".join(f"{k:28s} {metrics[k]:.4g}" for k in keys))
    print(f"training time {metrics['train_time_s']:.1f} s; run directory {run.run_dir}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _main(cfg: DictConfig) -> None:
    import sys

    from hedgenet.data.store import DatasetError
    from hedgenet.training.callbacks import NonFiniteLossError, TrainingInterrupted
    from hedgenet.training.run import run_train

    if cfg.get("sweep") is not None:  # before the run writes anything
        from hydra.core.hydra_config import HydraConfig

        family = HydraConfig.get().runtime.choices.get("hparams_search")
        print(f"hedgenet-train: error: ConfigError: hparams_search={family} is a search space, which "
              f"hedgenet-sweep explores. Fix: hedgenet-sweep hparams_search={family} [overrides]; train its best "
              "trial with hedgenet-train tuned=<study>", file=sys.stderr)
        raise SystemExit(2)
    # open_tracker=False: with logger=wandb, Lightning's WandbLogger opens the W&B run on global rank 0 only
    run_stage("hedgenet-train", cfg, run_train, _report, (DatasetError, NonFiniteLossError, TrainingInterrupted),
              open_tracker=False)


def main() -> None:
    from hedgenet.cli import run_hydra_app

    run_hydra_app(_main)


if __name__ == "__main__":
    main()
