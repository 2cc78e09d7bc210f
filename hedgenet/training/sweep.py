"""Optuna sweeps of ``hedgenet-train`` runs (``hedgenet-sweep``), driven directly with Optuna ≥ 4.

    hedgenet-sweep hparams_search=hedgenet                          # 20 trials; study in sweeps/<study>.db
    hedgenet-sweep hparams_search=hedgenet sweep.n_trials=10         # again: the study resumes (+10 trials)
    hedgenet-sweep hparams_search=hedgenet sweep.storage=journal:sweeps/hedgenet.journal   # one per worker

The search space is ``sweep.params`` of ``conf/hparams_search/<family>.yaml`` (config key → ``choice(...)``,
``interval(lo, hi)``, ``tag(log, interval(...))`` or ``range(...)``, Hydra's sweep syntax). Each trial asks the
study for a point, composes ``train.yaml`` with Hydra's compose API from the launch's overrides plus the sampled
values, and trains it in this process as ``hedgenet-train`` would (its own run directory ``<sweep.dir>/trial_<n>``
with resolved_config.yaml, .hydra/, metrics.json, model.pt). The validation objectives are reported to the trial
after each epoch (:class:`~hedgenet.training.callbacks.TrialPruning`), so the pruner stops trials that fall
behind; a pruned trial still finishes its run directory. After the launch, the best trial (or, for several
objectives, each trial of the Pareto set) is written as a Hydra config of its sampled values,
``$HEDGENET_ROOT/sweeps/tuned/<study>.yaml``, which ``hedgenet-train tuned=<study>`` composes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hedgenet.config import ConfigError

log = logging.getLogger("hedgenet.sweep")

PRUNERS = ("median", "successive_halving", "none")
SAMPLERS = ("tpe", "random")
DIRECTIONS = ("minimize", "maximize")
STORAGE_HELP = ("sqlite:///<file>.db (one machine), journal:<file> (many workers sharing a file system) or an "
                "RDB URL such as postgresql://<user>@<host>/<db> or mysql+pymysql://<user>@<host>/<db>")


class SweepStopped(Exception):
    """The sweep stops before its trials are done: a user error (exit 2) or a signal (128 + signal)."""

    def __init__(self, message: str, exit_status: int = 2):
        super().__init__(message)
        self.exit_status = exit_status


# --- checks shared with the trials ---------------------------------------------------------------------------

def check_single_device(trainer: DictConfig) -> None:
    """ConfigError unless ``trainer`` trains on exactly one device of one node without DDP."""
    devices, strategy, nodes = trainer.devices, str(trainer.strategy), trainer.num_nodes
    if "ddp" in strategy or str(devices) != "1" or int(nodes) != 1:
        raise ConfigError(
            f"a sweep trains each trial on one device, but the trainer asks for strategy={strategy}, "
            f"devices={devices}, num_nodes={nodes} (DDP ranks would each run the sweep). "
            "Fix: trainer=cpu or trainer=gpu in a sweep; run trials in parallel as several hedgenet-sweep worker "
            "processes sharing one study (sweep.storage=journal:<file> or an RDB URL) instead."
        )


def valid_objectives(task: str) -> list[str]:
    """The validation metrics a model of ``task`` logs each epoch (``val/loss`` and ``val/<quantity>_mae|rmse``)."""
    from hedgenet.models.base import TASKS
    from hedgenet.training.metrics import ErrorMetrics

    names = ErrorMetrics(tuple(TASKS[task])).names
    return ["val/loss"] + [f"val/{n}_{s}" for n in names for s in ("mae", "rmse")]


def check_objectives(spec: DictConfig, task: str) -> None:
    objectives, directions = list(spec.objectives), list(spec.directions)
    if not objectives or len(objectives) != len(directions):
        raise ConfigError(f"sweep.objectives={objectives} and sweep.directions={directions} need one direction per "
                          "objective. Fix: e.g. sweep.objectives=[val/forces_mae,val/H_all_mae] "
                          "sweep.directions=[minimize,minimize]")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ConfigError(f"sweep.directions={directions}: {bad[0]!r} is not a direction. Fix: minimize or maximize")
    if len(set(objectives)) != len(objectives):
        raise ConfigError(f"sweep.objectives={objectives} names one metric twice. Fix: list each once")
    valid = valid_objectives(task) if task in ("forces", "hamiltonian", "joint") else None
    for name in objectives:
        if valid is not None and name not in valid:
            import difflib

            near = difflib.get_close_matches(name, valid, n=1)
            raise ConfigError(
                f"sweep objective {name!r} is not a validation metric of a task={task} model"
                + (f" (did you mean {near[0]}?)" if near else "") + f"; valid: {valid}. Fix: set sweep.objectives to "
                "names from that list (a sweep selects on the validation set, never on test/*)")
    if len(objectives) > 1 and spec.pruner.name != "none":
        raise ConfigError(f"sweep.objectives={objectives} make a multi-objective study, which Optuna cannot prune. "
                          "Fix: add sweep.pruner.name=none")


def check_yardstick(objectives: list[str], space: dict) -> None:
    """ConfigError when an objective is ``val/loss`` and the space searches loss weights: ``val/loss`` is the sum
    weighted by each trial's own weights, so trials with other weights would be ranked on other yardsticks (a
    smaller weight scores better whatever it does to the model)."""
    weights = sorted(k for k in space if k.startswith("train.loss_weights."))
    if "val/loss" in objectives and weights:
        raise ConfigError(f"sweep.objectives={list(objectives)} rank trials on val/loss, the loss weighted by each "
                          f"trial's own weights, while the space searches {weights}: a trial with smaller weights "
                          "scores better whatever it does to the model. Fix: an objective every trial measures alike "
                          "(e.g. sweep.objectives=[val/forces_mae] or [val/H_all_mae]), or fix the weights "
                          f"({weights[0]}=<value>)")


def objective_value(metrics: dict, name: str, run_dir: Path) -> float:
    """``metrics[name]`` as a float, or a ConfigError listing the metric names there are."""
    value = metrics.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        names = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and "/" in k)
        raise ConfigError(f"sweep objective {name!r} is not in this run's metrics ({run_dir}/metrics.json, kept); "
                          f"available: {names}. Fix: set sweep.objectives to names from that list.")
    return float(value)


# --- search space -----------------------------------------------------------------------------------------------

def to_distribution(key: str, text: str):
    """The Optuna distribution of one search-space entry in Hydra's sweep syntax (``choice``, ``interval``,
    ``tag(log, interval(...))``, ``range``), or a ConfigError naming the syntax."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    fix = (f"Fix: write {key}: choice(a, b, ...), interval(lo, hi), tag(log, interval(lo, hi)) or "
           "range(start, stop, step)")
    try:
        override = OverridesParser.create().parse_override(f"{key}={text}")
    except Exception as err:  # noqa: BLE001 — Hydra's grammar errors: reported with the syntax
        raise ConfigError(f"search space {key}: {text!r} cannot be parsed ({str(err).splitlines()[0]}). {fix}") from None
    value = override.value()
    if not override.is_sweep_override():
        raise ConfigError(f"search space {key}: {text!r} is one value, not a distribution. {fix}")
    log_scale = "log" in getattr(value, "tags", set())
    if isinstance(value, ChoiceSweep):
        choices = list(value.list)
        if any(not isinstance(c, (str, int, float, bool, type(None))) for c in choices):
            raise ConfigError(f"search space {key}: choice values must be numbers, strings, booleans or null. {fix}")
        return CategoricalDistribution(choices)
    if isinstance(value, IntervalSweep):
        lo, hi = value.start, value.end
        if isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool):
            return IntDistribution(int(lo), int(hi), log=log_scale)
        return FloatDistribution(float(lo), float(hi), log=log_scale)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if all(float(x).is_integer() for x in (start, stop, step)) and not any(isinstance(x, float) for x in (start, stop, step)):
            last = int(start) + (math.ceil((int(stop) - int(start)) / int(step)) - 1) * int(step)
            return IntDistribution(int(start), last, step=int(step), log=log_scale and step == 1)
        n = math.ceil((float(stop) - float(start)) / float(step) - 1e-12)
        return FloatDistribution(float(start), float(start) + (n - 1) * float(step), step=float(step))
    raise ConfigError(f"search space {key}: {text!r} is not a distribution hedgenet-sweep knows. {fix}")


def split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line's plain overrides (kept for every trial) and its search-space ones (``key=choice(...)``,
    ``interval``, ``range``: they add to or replace ``sweep.params``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed, searched = [], {}
    for text in overrides:
        try:
            o = parser.parse_override(text)
        except Exception:  # noqa: BLE001 — left to Hydra's compose, whose message names the problem
            fixed.append(text)
            continue
        if o.is_sweep_override():
            searched[o.get_key_element()] = text.split("=", 1)[1]
        else:
            fixed.append(text)
    return fixed, searched


def override_value(value) -> str:
    """``value`` as it is written on Hydra's command line (a float exactly, a string quoted when needed)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z_][\w\-./:]*", value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def search_space(cfg: DictConfig, fixed: list[str], searched: dict[str, str]) -> dict:
    """``{key: distribution}``: ``sweep.params`` with the command line's search-space overrides; a key fixed on
    the command line (``key=value``) is not searched; a key both fixed and searched there is refused, and so is
    a key that is neither a key of the train config nor a config group."""
    from hedgenet.config import unknown_key_message

    spec = cfg.sweep
    params = {str(k): str(v) for k, v in (spec.params or {}).items()}
    fixed_keys = {o.split("=", 1)[0].lstrip("+~") for o in fixed}
    both = sorted(fixed_keys & set(searched))
    if both:
        raise ConfigError(f"{both[0]} is given both as a value and as a search space on the command line. "
                          f"Fix: drop one of them")
    params.update(searched)
    for key in fixed_keys & set(params):
        log.info(f"{key} is fixed on the command line: not searched")
        params.pop(key)
    if not params:
        raise ConfigError("the search space is empty (sweep.params). Fix: give hparams_search=<family> or "
                          "search-space overrides such as 'train.optimizer.lr=tag(log,interval(1e-4,1e-2))'")
    groups = dict(cfg.hydra.runtime.choices)
    for key in params:
        section, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, section, default=None) if section else cfg
        if key not in groups and not (isinstance(parent, DictConfig) and leaf in parent):
            valid = list(parent.keys()) if isinstance(parent, DictConfig) else []
            raise ConfigError("search space: " + unknown_key_message(key, valid).replace(
                "(on the command line or in the YAML file that sets it)", "in sweep.params or the search-space override"))
    return {k: to_distribution(k, v) for k, v in params.items()}


# --- storage, study, sampler, pruner ---------------------------------------------------------------------------

def make_storage(url: str):
    """An Optuna storage from ``sweep.storage``: ``journal:<file>`` (JournalStorage on a file, for many worker
    processes), ``sqlite:///<file>`` or any other RDB URL; a ConfigError naming the accepted forms otherwise."""
    import optuna

    url = str(url)
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):].removeprefix("//"))
        if not path.name:
            raise ConfigError(f"sweep.storage={url!r} names no file. Fix: journal:<file>, e.g. "
                              "journal:sweeps/<study>.journal")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(f"sweep.storage={url!r} is not a storage Optuna can open. Fix: {STORAGE_HELP}")
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}
                                          if url.startswith("sqlite") else None)
    except ModuleNotFoundError as err:
        raise ConfigError(f"sweep.storage={url!r} needs the database driver {err.name!r}, which is not installed. "
                          f"Fix: pip install {err.name} (or use sqlite:/// or journal: storage)") from None
    except Exception as err:  # noqa: BLE001 — SQLAlchemy's URL, dialect and connection errors
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"sweep.storage={url!r} cannot be opened ({type(err).__name__}: {first}). "
                          f"Fix: {STORAGE_HELP}") from None


def make_sampler(spec: DictConfig, seed: int | None, n_objectives: int):
    import optuna

    name = spec.sampler.name
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(spec.sampler.n_startup_trials))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"sweep.sampler.name={name!r} unknown; valid: {list(SAMPLERS)}")


def make_pruner(spec: DictConfig):
    import optuna

    p = spec.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(p.n_startup_trials), n_warmup_steps=int(p.n_warmup_steps))
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=int(p.min_resource),
                                                      reduction_factor=int(p.reduction_factor))
    if p.name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"sweep.pruner.name={p.name!r} unknown; valid: {list(PRUNERS)}")


def default_storage(spec: DictConfig, root: str) -> str:
    return str(spec.storage) if spec.storage else f"sqlite:///{root}/sweeps/{spec.study_name}.db"


def open_study(spec: DictConfig, storage_url: str, space: dict):
    """Create or load the study; ConfigError when the stored study cannot continue with this launch's settings
    (other objectives or directions, a search space Optuna refuses)."""
    import optuna
    from optuna.distributions import check_distribution_compatibility

    storage = make_storage(storage_url)
    name = str(spec.study_name)
    directions = list(spec.directions)
    objectives = list(spec.objectives)
    fix = "Fix: resume with the study's settings, or start a new study (sweep.study_name=<new name>)"
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(spec, None, len(objectives)),
                                  pruner=make_pruner(spec))
    except KeyError:
        study = None
    if study is None:
        try:
            study = optuna.create_study(study_name=name, storage=storage, directions=directions,
                                        sampler=make_sampler(spec, None, len(objectives)), pruner=make_pruner(spec))
            study.set_user_attr("objectives", objectives)
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it just now
            study = optuna.load_study(study_name=name, storage=storage, pruner=make_pruner(spec))
    stored_dirs = [d.name.lower() for d in study.directions]
    stored_obj = study.user_attrs.get("objectives", objectives)
    if stored_dirs != directions or list(stored_obj) != objectives:
        raise ConfigError(f"study {name!r} in {storage_url} optimises {list(stored_obj)} ({stored_dirs}), this launch "
                          f"{objectives} ({directions}). {fix}")
    old = {}
    for t in study.get_trials(deepcopy=False):
        old.update(t.distributions)
    for key, dist in space.items():
        if key in old:
            try:
                check_distribution_compatibility(old[key], dist)
            except ValueError:
                raise ConfigError(f"study {name!r} in {storage_url} samples {key} from {old[key]}, this launch "
                                  f"from {dist}. {fix}") from None
    return study


# --- one trial -----------------------------------------------------------------------------------------------

@dataclass
class Sweep:
    """A launch: the composed base config, its command-line overrides, the search space and the study."""

    cfg: DictConfig                      # the composed train config with its sweep section (and hydra)
    fixed: list[str]                     # overrides every trial is composed with
    space: dict
    study: object
    storage: str
    dir: Path
    counts: dict = field(default_factory=lambda: {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0})

    @property
    def spec(self) -> DictConfig:
        return self.cfg.sweep


def baseline_params(cfg: DictConfig, space: dict) -> dict:
    """The composed config's own value of every searched key (a config group: its chosen option) that the key's
    distribution holds: the untuned run as a trial. A value outside its search space is left to the sampler."""
    groups = dict(cfg.hydra.runtime.choices)
    out = {}
    for key, dist in space.items():
        value = groups[key] if key in groups else OmegaConf.select(cfg, key, default=None)
        try:
            inside = value is not None and not OmegaConf.is_config(value) and dist._contains(dist.to_internal_repr(value))
        except (ValueError, TypeError):
            inside = False
        if inside:
            out[key] = value
        else:
            log.info(f"baseline trial: {key}={value} lies outside its search space {dist}; the sampler draws it")
    return out


def suggest(trial, space: dict) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    out = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            out[key] = trial.suggest_categorical(key, d.choices)
        elif isinstance(d, FloatDistribution):
            out[key] = trial.suggest_float(key, d.low, d.high, log=d.log, step=d.step)
        else:
            out[key] = trial.suggest_int(key, d.low, d.high, log=d.log, step=d.step)
    return out


def compose_trial(overrides: list[str]) -> DictConfig:
    from hydra import compose

    return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def _prepare_run(full: DictConfig, run_dir: Path) -> DictConfig:
    """What Hydra's job runner does before a task: the run directory as the job's output dir, HydraConfig set,
    .hydra/{config,hydra,overrides}.yaml written; returns the task config (no ``hydra``, no ``sweep``)."""
    from hydra.core.hydra_config import HydraConfig

    with read_write(full), open_dict(full):
        full.hydra.runtime.output_dir = str(run_dir)
        full.hydra.job.num = int(run_dir.name.rsplit("_", 1)[-1])
    HydraConfig.instance().set_config(full)
    task = OmegaConf.masked_copy(full, [k for k in full if k not in ("hydra", "sweep")])
    meta = run_dir / ".hydra"
    meta.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(task, meta / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": full.hydra}), meta / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(full.hydra.overrides.task)), meta / "overrides.yaml")
    return task


def run_trial(sweep: Sweep) -> str:
    """Ask the study for one trial, train it, tell the study; returns the trial's state name."""
    import optuna
    from hydra.errors import HydraException

    from hedgenet.data.store import DatasetError
    from hedgenet.run_io import file_error_message, finish_run, start_run
    from hedgenet.training.callbacks import NonFiniteLossError, TrainingInterrupted, TrialPruning
    from hedgenet.training.run import run_train

    study, spec = sweep.study, sweep.spec
    trial = study.ask()
    seed = spec.sampler.seed
    if seed is not None:  # trial n samples with seed + n: reproducible, and new points on resume and per worker
        study.sampler = make_sampler(spec, int(seed) + trial.number, len(spec.objectives))
    params = suggest(trial, sweep.space)
    run_dir = sweep.dir / f"trial_{trial.number}"
    trial.set_user_attr("run_dir", str(run_dir))
    overrides = [*sweep.fixed, *(f"{k}={override_value(v)}" for k, v in params.items())]
    text = ", ".join(f"{k}={override_value(v)}" for k, v in params.items())
    log.info(f"trial {trial.number} started: {text}")

    def fail(err: BaseException, run=None) -> None:
        if run is not None:
            run.fail(err)
        trial.set_user_attr("error", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        sweep.counts["FAIL"] += 1

    run = None
    try:
        try:
            full = compose_trial(overrides)
        except HydraException as err:
            raise ConfigError(f"the trial's config cannot be composed: {str(err).splitlines()[0]}") from None
        check_single_device(full.trainer)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"{run_dir} already holds a run (of another study of this name?); a trial never "
                              f"overwrites one. Fix: move {sweep.dir} away or set sweep.study_name=<new name>")
        run_dir.mkdir(parents=True, exist_ok=True)
        task = _prepare_run(full, run_dir)
        run = start_run(task, open_tracker=False)  # logger=wandb: the trial's WandbLogger opens it
        pruning = [TrialPruning(trial, str(spec.objectives[0]), log.info)] if spec.pruner.name != "none" else []
        metrics = run_train(task, run_dir, callbacks=pruning)
        run.log_summary(metrics)
        values = [objective_value(metrics, str(o), run_dir) for o in spec.objectives]
    except (ConfigError, DatasetError) as err:
        fail(err, run)
        raise SweepStopped(f"trial {trial.number} ({run_dir}): {type(err).__name__}: {err}") from None
    except NonFiniteLossError as err:
        fail(err, run)
        log.warning(f"trial {trial.number} failed (non-finite loss, {text}); the sweep goes on")
        return "FAIL"
    except TrainingInterrupted as err:
        fail(err, run)
        raise SweepStopped(f"stopped by a signal in trial {trial.number} (marked FAIL in the study). Rerun the same "
                           "command to resume the study with new trials", err.exit_status) from None
    except OSError as err:
        message = file_error_message(err)
        fail(err, run)
        if message is None:
            raise
        raise SweepStopped(message) from None
    except Exception as err:
        fail(err, run)
        raise
    finally:
        if run is not None:
            finish_run(run)
    trial.set_user_attr("values", values)
    shown = ", ".join(f"{o}={v:.6g}" for o, v in zip(spec.objectives, values))
    if pruning and pruning[0].pruned is not None:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        sweep.counts["PRUNED"] += 1
        log.info(f"trial {trial.number} PRUNED after epoch {pruning[0].pruned[0]} of {task.train.max_epochs} "
                 f"(final {shown}; run directory {run_dir})")
        return "PRUNED"
    study.tell(trial, values)
    sweep.counts["COMPLETE"] += 1
    log.info(f"trial {trial.number} complete: {shown} ({metrics['train_time_s']:.1f} s)")
    return "COMPLETE"


# --- export of the best trial(s) -------------------------------------------------------------------------------

def tuned_dir(root: str) -> Path:
    """Where ``tuned`` configs go: ``$HEDGENET_ROOT/sweeps/tuned`` (train.yaml's hydra.searchpath)."""
    return Path(root) / "sweeps" / "tuned"


def tuned_config(trial, stem: str, study_name: str, objectives: list[str], groups: dict, launch: list[str]) -> str:
    """The YAML of one trial's sampled values as a Hydra config of group ``tuned`` (package ``_global_``):
    config groups sampled (or chosen by the search space's family, ``model``) as ``override /<group>``,
    every other key nested. ``hedgenet-train tuned=<name>`` composes it on top of train.yaml."""
    body = OmegaConf.create({})
    defaults = [{f"override /{g}": c} for g, c in groups.items()]
    for key, value in trial.params.items():
        if key in groups:
            continue
        OmegaConf.update(body, key, value, force_add=True)
    values = trial.values or []
    header = [
        "# @package _global_",
        f"# Best trial {trial.number} of study {study_name} (hedgenet-sweep): "
        + ", ".join(f"{o}={v:.6g}" for o, v in zip(objectives, values)) + ".",
        f"# Run directory: {trial.user_attrs.get('run_dir')}",
        *(["# It is the baseline trial, the composed config's own values: no trial beat the untuned run."]
          if trial.user_attrs.get("baseline") else []),
        "# The sweep's other settings (not part of this file): " + (" ".join(launch) if launch else "none"),
        f"# Use:  hedgenet-train tuned={stem} [data.paths=...]   (or experiment=compare_baselines variant=<this family> tuned={stem})",
    ]
    doc = OmegaConf.to_yaml(OmegaConf.merge({"defaults": defaults} if defaults else {}, body))
    return "\n".join(header) + "\n" + doc


def export_best(sweep: Sweep, root: str) -> list[Path]:
    """Write the best trial (single objective: ``tuned/<study>.yaml``) or the Pareto set (several objectives:
    ``tuned/<study>_trial<n>.yaml`` each, older Pareto files of the study removed) and return the files."""
    import optuna

    study, spec = sweep.study, sweep.spec
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        log.info("no complete trial yet: nothing exported")
        return []
    out = tuned_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    name = str(spec.study_name)
    choices = dict(sweep.cfg.hydra.runtime.choices)
    launch = [o for o in sweep.fixed if not o.startswith(("sweep.", "hparams_search="))]
    multi = len(spec.objectives) > 1
    trials = study.best_trials if multi else [study.best_trial]
    if multi:
        for old in out.glob(f"{glob_escape(name)}_trial*.yaml"):
            old.unlink()
    files = []
    for t in trials:
        groups = {g: t.params[g] for g in t.params if g in choices}
        if "model" not in groups and choices.get("model"):
            groups["model"] = choices["model"]
        stem = f"{name}_trial{t.number}" if multi else name
        path = out / f"{stem}.yaml"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(tuned_config(t, stem, name, list(spec.objectives), groups, launch))
        os.replace(tmp, path)
        files.append(path)
        log.info(f"{'Pareto' if multi else 'best'} trial {t.number}: "
                 + ", ".join(f"{o}={v:.6g}" for o, v in zip(spec.objectives, t.values))
                 + f" → {path} (hedgenet-train tuned={stem})")
    return files


def glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


# --- the launch ------------------------------------------------------------------------------------------------

def _log_to(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)  # appended by every launch and worker (one line per write)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [{socket.gethostname()}:{os.getpid()}] %(message)s"))
    log.addHandler(handler)
    return handler


def run_sweep(overrides: list[str], config_dir: str) -> dict:
    """One launch of ``hedgenet-sweep`` with these command-line overrides: check, create or load the study, run
    ``sweep.n_trials`` trials, export the best. Returns a summary (study, storage, counts, files)."""
    import optuna
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    fixed, searched = split_overrides(overrides)
    with initialize_config_dir(config_dir=config_dir, version_base="1.3", job_name="train"):
        try:
            cfg = compose_trial(fixed)
        except HydraException as err:
            raise ConfigError(f"{str(err).splitlines()[0]}") from None
        if cfg.get("sweep") is None:
            raise ConfigError("no search space: hedgenet-sweep needs hparams_search=<family>. "
                              "Fix: hedgenet-sweep hparams_search=hedgenet (or mace, deeph_e3; conf/hparams_search/)")
        from hedgenet.config import check_config

        checked = check_config(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), "train",
                               allow_missing=True)
        spec = checked.sweep
        with read_write(cfg), open_dict(cfg):
            cfg.sweep = spec  # the schema's defaults filled in
        spec = cfg.sweep
        if spec.sampler.name not in SAMPLERS:
            raise ConfigError(f"sweep.sampler.name={spec.sampler.name!r} unknown; valid: {list(SAMPLERS)}")
        if spec.pruner.name not in PRUNERS:
            raise ConfigError(f"sweep.pruner.name={spec.pruner.name!r} unknown; valid: {list(PRUNERS)}")
        check_single_device(cfg.trainer)
        check_objectives(spec, str(cfg.task))
        if int(spec.n_trials) < 0:
            raise ConfigError(f"sweep.n_trials={spec.n_trials} < 0. Fix: a number of trials ≥ 0 (0: only export)")
        space = search_space(cfg, fixed, searched)
        check_yardstick(list(spec.objectives), space)
        storage = default_storage(spec, str(cfg.paths.root_dir))
        sweep_dir = Path(str(spec.dir))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = open_study(spec, storage, space)
        done = study.get_trials(deepcopy=False)
        if not done and sweep_dir.is_dir() and any(sweep_dir.glob("trial_*/resolved_config.yaml")):
            raise ConfigError(f"sweep.dir={sweep_dir} holds trials, but study {spec.study_name!r} in {storage} has "
                              "none: they belong to another study of that name. Fix: move that folder away, or set "
                              "sweep.dir or sweep.study_name to a new name")
        handler = _log_to(sweep_dir / "sweep.log")
        if spec.baseline_trial and not done and (baseline := baseline_params(cfg, space)):
            # another worker may have enqueued it just now; the user attribute marks it in the study for good
            study.enqueue_trial(baseline, user_attrs={"baseline": True}, skip_if_exists=True)
            log.info("trial 0 is the baseline, the composed config's own values: "
                     + ", ".join(f"{k}={override_value(v)}" for k, v in baseline.items()))
        sweep = Sweep(cfg, fixed, space, study, storage, sweep_dir)
        try:
            states = {}
            for t in done:
                states[t.state.name] = states.get(t.state.name, 0) + 1
            log.info(f"study {spec.study_name!r} in {storage}: {len(done)} trials so far"
                     + (f" {states}, resuming" if done else ", new") + f"; this launch adds {spec.n_trials}; objectives "
                     f"{list(spec.objectives)} ({list(spec.directions)}); pruner {spec.pruner.name}; sampler "
                     f"{spec.sampler.name} (seed {spec.sampler.seed} + trial number)")
            t0 = time.perf_counter()
            for _ in range(int(spec.n_trials)):
                run_trial(sweep)
            files = export_best(sweep, str(cfg.paths.root_dir))
            summary = {"study": str(spec.study_name), "storage": storage, "dir": str(sweep_dir),
                       "launch": dict(sweep.counts), "n_trials_in_study": len(study.get_trials(deepcopy=False)),
                       "tuned": [str(f) for f in files], "time_s": time.perf_counter() - t0}
            log.info(f"launch done: {json.dumps(sweep.counts)} in {summary['time_s']:.1f} s; the study holds "
                     f"{summary['n_trials_in_study']} trials")
            return summary
        finally:
            log.removeHandler(handler)
            handler.close()
