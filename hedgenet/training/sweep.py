"""Hydra Optuna sweeps of ``hedgenet-train``: one device per trial and a persistent, resumable study.

    hedgenet-train hparams_search=hedgenet                        # 20 trials, study in sweeps/hedgenet.db
    hedgenet-train hparams_search=hedgenet hydra.sweeper.n_trials=10   # again: the study resumes (+10)

The search spaces live in ``conf/hparams_search/<family>.yaml``; each sets ``hydra.callbacks.optuna_study``
to :class:`OptunaStudySetup`, which runs once before the sweeper creates or loads its study.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from hedgenet.config import ConfigError

log = logging.getLogger(__name__)


def is_optuna_sweeper(hydra_cfg) -> bool:
    return "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower()


def check_single_device(trainer: DictConfig) -> None:
    """ConfigError unless ``trainer`` trains on exactly one device of one node without DDP."""
    devices, strategy, nodes = trainer.devices, str(trainer.strategy), trainer.num_nodes
    if "ddp" in strategy or str(devices) != "1" or int(nodes) != 1:
        raise ConfigError(
            f"an Optuna sweep trains each trial on one device, but the trainer asks for strategy={strategy}, "
            f"devices={devices}, num_nodes={nodes} (DDP ranks would sample different hyperparameters). "
            "Fix: trainer=cpu or trainer=gpu in a sweep; run trials in parallel with a launcher "
            "(hydra/launcher=joblib or submitit_slurm) instead."
        )


def check_one_device_per_trial(cfg: DictConfig) -> None:
    """Inside an Optuna sweep trial (a trial may sample ``trainer`` too): :func:`check_single_device`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN and is_optuna_sweeper(hc):
        check_single_device(cfg.trainer)


def sqlite_path(storage: str | None) -> Path | None:
    """The database file of an ``sqlite:///<path>`` storage URL (None for other storages)."""
    if storage is None or not str(storage).startswith("sqlite:///"):
        return None
    return Path(str(storage)[len("sqlite:///"):])


def stored_trials(storage: str, study_name: str) -> list:
    """The trials a stored study holds ([] when the study or its database does not exist yet)."""
    import optuna

    db = sqlite_path(storage)
    if db is not None and not db.exists():
        return []
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no study of that name in this storage
        return []
    return study.trials


def check_search_space(config: DictConfig, trials: list) -> None:
    """ConfigError when this launch's search space (``hydra.sweeper.params`` and sweep overrides) cannot
    continue the stored study (Optuna refuses a changed choice list or a distribution of another kind)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import check_distribution_compatibility

    sweeper = config.hydra.sweeper
    params = [f"{k}={v}" for k, v in (sweeper.params or {}).items()]
    params += list(config.hydra.overrides.task)
    new, _ = create_params_from_overrides(params)
    old = {}
    for t in trials:
        old.update(t.distributions)
    for name, dist in new.items():
        if name in old:
            try:
                check_distribution_compatibility(old[name], dist)
            except ValueError:
                raise ConfigError(
                    f"study {sweeper.study_name!r} in {sweeper.storage} samples {name} from {old[name]}, this launch "
                    f"from {dist}. Fix: resume with the study's search space, or start a new study "
                    f"(hydra.sweeper.study_name=<new name>)."
                ) from None


class OptunaStudySetup(Callback):
    """Before an Optuna sweep starts: refuse a multi-device trainer, a sweep folder holding an earlier
    launch's trials, and a search space the stored study cannot continue; create the sqlite database's
    folder, and offset the sampler seed by the number of trials already in the study, so a resumed study draws
    new start-up points instead of repeating the first launch's (the seed stays reproducible: the same
    seed and the same study history give the same trials)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # Hydra turns a callback's exceptions into warnings: exit here, before any trial is created
        import sys

        try:
            self._setup(config)
        except ConfigError as err:
            print(f"hedgenet-train: error: ConfigError: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def _setup(self, config: DictConfig) -> None:
        hydra_cfg = config.hydra
        if not is_optuna_sweeper(hydra_cfg):
            return
        check_single_device(config.trainer)
        sweep_dir = Path(str(hydra_cfg.sweep.dir))
        if sweep_dir.is_dir() and any(sweep_dir.glob("*/resolved_config.yaml")):
            raise ConfigError(
                f"hydra.sweep.dir={sweep_dir} holds the trials of an earlier launch; this launch numbers its trials "
                "from 0 again and would overwrite them. Fix: leave hydra.sweep.dir at its default (one timestamped "
                "folder per launch) or give each launch a new folder."
            )
        sweeper = hydra_cfg.sweeper
        if sweeper.study_name is None or sweeper.storage is None:
            raise ConfigError("a resumable sweep needs hydra.sweeper.study_name and hydra.sweeper.storage "
                              "(e.g. sqlite:///sweeps/<name>.db). Fix: set both (conf/hparams_search/*.yaml do).")
        storage = str(sweeper.storage)
        db = sqlite_path(storage)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        trials = stored_trials(storage, str(sweeper.study_name))
        check_search_space(config, trials)
        done = len(trials)
        seed = sweeper.sampler.get("seed")
        if seed is not None and done:
            with read_write(hydra_cfg), open_dict(hydra_cfg):
                sweeper.sampler.seed = int(seed) + done
        log.info(f"Optuna study {sweeper.study_name!r} in {storage}: {done} trials so far"
                 + (", resuming" if done else ", new") + f"; sampler seed {sweeper.sampler.get('seed')}")
