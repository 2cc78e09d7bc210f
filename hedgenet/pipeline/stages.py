"""The MLEPI pipeline as cached stages: label → train → phonons → EPI → Monte Carlo v_F(T) → report.

Every stage is one of the hedgenet console scripts (``hedgenet-label``, ``-train``, ``-phonons``, ``-epi``,
``-fermi-velocity``) run as its own process with Hydra overrides, in a stage directory named by a hash of
what the stage depends on: its fully composed config (minus paths of other stages) and the hashes of the
stages it reads from (the root directory stands as a placeholder in the hashed config, so the spelling of the
root does not matter). A stage whose directory holds ``stage_done.json`` and its outputs (:data:`OUTPUTS`) is
reused, so a rerun with another sampler neither relabels nor retrains, and a rerun after a kill starts at the
stage that was killed (the labeller resumes its dataset, training resumes from ``checkpoints/last.ckpt``).
Nothing finished is ever deleted. Stage directories: ``<root>/outputs/pipeline/stages/<stage>/<hash>/``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hedgenet.config import ConfigError

STAGE_ORDER = ("label", "train", "active", "phonons", "epi", "fermi_velocity")
CLI = {"label": ("hedgenet-label", "label"), "train": ("hedgenet-train", "train"), "active": ("hedgenet-active", "active"),
       "phonons": ("hedgenet-phonons", "phonons"), "epi": ("hedgenet-epi", "epi"),
       "fermi_velocity": ("hedgenet-fermi-velocity", "fermi_velocity")}
PHYSICS = ("phonons", "epi", "fermi_velocity")
DONE = "stage_done.json"
OUTPUTS = {"label": ("dataset.h5", "summary.json"), "train": ("model.pt", "metrics.json"),
           "active": ("committee.json", "summary.json"), "phonons": ("summary.json",),
           "epi": ("summary.json",), "fermi_velocity": ("summary.json",)}
"""Files a finished stage has written into its directory: a stage is done only when they exist."""
ROOT_PLACEHOLDER = "/hedgenet-root"
"""Stands for the root directory in the configs that are hashed: a stage's hash does not depend on how the
root is spelt (``.``, ``$HEDGENET_ROOT``, ``..``, a symlink) nor where it lies."""


class PipelineError(RuntimeError):
    """A stage failed or cannot start; the message names the stage, the cause and the fix."""


def _format_value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_format_value(x) for x in v) + "]"
    s = str(v)
    if any(c in s for c in " ,=[]{}()'\"") and not isinstance(v, (int, float)):
        return "'" + s.replace("'", "\\'") + "'"
    return s


OPEN_TRAIN_SECTIONS = ("train.optimizer.", "train.scheduler.", "trainer.")
"""hedgenet-train's sections whose keys are the optimiser's, scheduler's and Trainer's own arguments."""


def flatten_overrides(section, prefix: str = "") -> list[str]:
    """``{a: {b: 1}, model: small}`` → ``["a.b=1", "model=small"]`` (Hydra override strings)."""
    out = []
    data = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else (section or {})
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += flatten_overrides(v, key + ".")
        else:
            out.append(f"{key}={_format_value(v)}")
    return out


@dataclass
class Stage:
    """One planned stage: ``name`` (e.g. ``phonons_model``), the CLI, its overrides (hashed) and the
    overrides that point at other stages' directories (not hashed: their hashes are in ``depends``)."""

    name: str
    kind: str
    calculator: str | None
    overrides: list[str]
    depends: tuple[str, ...] = ()
    links: dict = field(default_factory=dict)  # override key -> (stage name, file in that stage dir or "")
    hash: str = ""
    dir: Path | None = None
    config: dict | None = None
    outputs_override: tuple[str, ...] | None = None  # a train stage that trains a committee

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.outputs_override or OUTPUTS[self.kind]

    def missing_outputs(self) -> list[str]:
        return [f for f in self.outputs if self.dir is None or not (self.dir / f).exists()]

    @property
    def done(self) -> bool:
        """Finished: ``stage_done.json`` and every output file exist (a stage killed after writing the first
        but before the others is not done, and reruns)."""
        return self.dir is not None and (self.dir / DONE).exists() and not self.missing_outputs()


def plan(cfg: DictConfig, choices: dict) -> list[Stage]:
    """The stages of ``cfg.stages`` in dependency order, with hashes and directories (nothing runs)."""
    stages_cfg = list(cfg.stages)
    unknown = [s for s in stages_cfg if s not in STAGE_ORDER]
    if unknown:
        raise ConfigError(f"stages {unknown} unknown; valid: {list(STAGE_ORDER)}")
    bad_ref = [s for s in cfg.reference_stages if s not in PHYSICS]
    if bad_ref:
        raise ConfigError(f"reference_stages {bad_ref}: only {list(PHYSICS)} have a reference counterpart")
    learner = "active" if "active" in stages_cfg else "train"  # the stage whose model the physics stages use
    if "train" in stages_cfg and "active" in stages_cfg:
        raise ConfigError("stages has both `train` and `active`: the physics stages use one model. Fix: keep `active` "
                          "(its last committee, trained on the seed set plus the picked cells) or `train`")
    if cfg.model_path is None and any(s in stages_cfg for s in PHYSICS) and learner not in stages_cfg:
        raise ConfigError("the physics stages need a model: keep `train` (or `active`) in stages or give "
                          "model_path=<model.pt>")
    for kind in ("train", "active"):
        if kind in stages_cfg and "label" not in stages_cfg:
            raise ConfigError(f"the {kind} stage needs the label stage (its data): add `label` to stages")

    # overrides.train.committee.size=K: the train stage trains a committee, and the physics stages use it (its
    # members' mean; its spread is their trust signal)
    committee = any(o.startswith("committee.size=") and o.split("=", 1)[1] not in ("null", "None")
                    for o in flatten_overrides(cfg.overrides.get("train")))
    # overrides.active.active.committee_size=1: the active stage's result is one model (model.pt), not a committee
    single_active = "active.committee_size=1" in flatten_overrides(cfg.overrides.get("active"))
    common = [f"material={choices['material']}", *choices.get("material_overrides", []),
              f"reference={choices['reference']}", *flatten_overrides(cfg.overrides.get("common"))]
    out: list[Stage] = []
    for kind in STAGE_ORDER:
        if kind not in stages_cfg:
            continue
        own = flatten_overrides(cfg.overrides.get(kind))
        if kind == "label":
            out.append(Stage("label", kind, None, common + own, links={"dataset.path": ("label", "dataset.h5")}))
        elif kind == "train":
            # the open sections (the optimiser's, the scheduler's and lightning.Trainer's own arguments) take keys
            # conf/train.yaml does not list (e.g. train.scheduler.anneal_epochs): added, not only overridden
            own = [f"++{o}" if o.startswith(OPEN_TRAIN_SECTIONS) else o for o in own]
            out.append(Stage("train", kind, None, common + own, ("label",), {"data.paths": ("label", "dataset.h5")},
                             outputs_override=("committee.json", "summary.json") if committee else None))
        elif kind == "active":  # the label stage's cells are the seed set; the picked ones go to its own pool file
            # `train` of conf/active.yaml is a plain dict of hedgenet-train overrides: keys it does not list yet
            # (the train stage's recipe) are added
            own = [f"++{o}" if o.startswith("train.") else o for o in own]
            out.append(Stage("active", kind, None, common + own, ("label",),
                             {"seed_data": ("label", "dataset.h5"), "pool.path": ("active", "pool.h5")},
                             outputs_override=("model.pt", "summary.json") if single_active else None))
        else:
            if kind in cfg.reference_stages:
                out.append(Stage(f"{kind}_reference", kind, "reference", common + own + ["calculator=reference"]))
            model_links, model_deps = {}, ()
            if cfg.model_path is None:
                model_links["model_path"] = (("active", "model.pt") if learner == "active" and single_active
                                             else (learner, "committee.json") if learner == "active" or committee
                                             else ("train", "model.pt"))
                model_deps = (learner,)
            if kind in ("phonons", "epi") and kind in cfg.reference_stages:
                model_links["compare_with"] = (f"{kind}_reference", "")
                model_deps += (f"{kind}_reference",)
            extra = [] if cfg.model_path is None else [f"model_path={Path(cfg.model_path).resolve()}"]
            out.append(Stage(f"{kind}_model", kind, "model", common + own + ["calculator=model"] + extra,
                             model_deps, model_links))
    return out


def compose_stage(stage: Stage) -> dict:
    """The stage's composed and resolved config (Hydra compose API, inside the running pipeline app), with
    the root directory as :data:`ROOT_PLACEHOLDER`: it is hashed, and the stage itself gets the real root."""
    from hydra import compose

    _, config_name = CLI[stage.kind]
    try:
        cfg = compose(config_name=config_name, overrides=stage.overrides + ["paths.output_dir=null",
                                                                             f"paths.root_dir={ROOT_PLACEHOLDER}"])
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # Hydra's override/missing-key errors: name the stage
        raise ConfigError(f"stage {stage.name}: its config does not compose: {err}. Fix: the overrides under "
                          f"`overrides.{stage.kind}` or `overrides.common`") from None


def assign_hashes(stages: list[Stage], root: Path) -> None:
    from hedgenet import __version__

    by_name = {s.name: s for s in stages}
    for s in stages:
        cfg = compose_stage(s)
        s.config = cfg
        for k in ("progress", "logger", "task_name"):
            cfg.pop(k, None)
        payload = {"stage": s.name, "config": cfg, "version": __version__,
                   "depends": {d: by_name[d].hash for d in s.depends if d in by_name}}
        s.hash = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
        s.dir = root / "outputs" / "pipeline" / "stages" / s.name / s.hash


def stage_command(stage: Stage, by_name: dict) -> list[str]:
    prog, _ = CLI[stage.kind]
    args = list(stage.overrides)
    for key, (other, fname) in stage.links.items():
        target = by_name[other].dir / fname if fname else by_name[other].dir
        args.append(f"{key}=[{target}]" if key in ("data.paths", "seed_data") else f"{key}={target}")
    if stage.kind in ("label", "fermi_velocity", "active"):
        args.append("progress=false")
    if stage.kind == "train":
        args.append("train.resume=auto")  # killed during training: continue from the last epoch
    return [str(Path(sys.executable).parent / prog), *args, f"hydra.run.dir={stage.dir}"]


def check_disk(root: Path, min_free_GB: float, stage: str) -> None:
    existing = next(p for p in (root, *root.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 1e9
    if free < min_free_GB:
        raise PipelineError(f"only {free:.2f} GB free under {root} before stage {stage} (need {min_free_GB} GB). "
                            "Fix: free disk space or set HEDGENET_ROOT elsewhere, then rerun: finished stages are kept")


def wait_forwarding_signals(proc: subprocess.Popen) -> int:
    """Wait for a stage's process, passing SIGTERM and SIGHUP sent to the pipeline on to it (a scheduler's
    stop reaches only the pipeline's pid): the stage then exits as it does when stopped itself (training:
    a resumable checkpoint), and no orphan keeps writing into the stage directory while a rerun starts there.
    Ctrl-C reaches the whole process group; the pipeline waits for the stage to finish its exit, then stops."""
    import signal
    import threading

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    handled = (signal.SIGTERM, signal.SIGHUP)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, forward) for sig in handled}
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                forward(signal.SIGINT, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_logged(cmd: list[str], log_path: Path, env: dict | None = None) -> int:
    """Run a CLI as a child process, its output appended to ``log_path`` after a ``$ command`` line (a file, not a
    pipe: a child whose caller was killed outright still finishes and saves), W&B offline unless WANDB_MODE says
    otherwise, ``env`` added to the environment, SIGTERM/SIGHUP forwarded (:func:`wait_forwarding_signals`); its
    exit status. OSError when it cannot start."""
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), **(env or {})}
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return wait_forwarding_signals(proc)


def run_stage_process(stage: Stage, by_name: dict, min_free_GB: float) -> float:
    """Run one stage's CLI into its directory; returns its wall time (s). Raises PipelineError on failure."""
    check_disk(stage.dir, min_free_GB, stage.name)
    cmd = stage_command(stage, by_name)
    try:
        stage.dir.mkdir(parents=True, exist_ok=True)
        (stage.dir / DONE).unlink(missing_ok=True)  # a stage that runs is not done until it has finished again
        (stage.dir / "command.txt").write_text(" ".join(cmd) + "\n")
    except OSError as err:
        raise PipelineError(f"stage {stage.name} cannot write its directory {stage.dir}: {err.strerror or err}. "
                            "Fix: set HEDGENET_ROOT to a writable directory with free space, then rerun: finished "
                            "stages are kept") from None
    cpu0 = _children_cpu_s()
    t0 = time.perf_counter()
    try:
        returncode = run_logged(cmd, stage.dir / "stage.log")
    except OSError as err:
        raise PipelineError(f"stage {stage.name} could not start ({err})") from None
    seconds = time.perf_counter() - t0
    cpu_seconds = _children_cpu_s() - cpu0
    if returncode == 0 and stage.missing_outputs():
        missing = stage.missing_outputs()
        tail = (stage.dir / "stage.log").read_text()[-1500:]
        raise PipelineError(f"stage {stage.name} ended without writing {missing} (exit status 0); it is not marked "
                            f"done. Log: {stage.dir / 'stage.log'}\n--- last lines ---\n{tail}\nFix: rerun the same "
                            "command: the stage runs again (training resumes from its last checkpoint).")
    if returncode != 0:
        tail = (stage.dir / "stage.log").read_text()[-1500:]
        if returncode < 0:
            why = f"was killed by signal {-returncode}"
        elif returncode > 128:
            why = f"was stopped by signal {returncode - 128} (exit status {returncode})"
        elif "No space left" in tail:
            why = "ran out of disk space"
        else:
            why = f"failed (exit status {returncode})"
        raise PipelineError(f"stage {stage.name} {why}. Log: {stage.dir / 'stage.log'}\n--- last lines ---\n{tail}\n"
                            "Finished stages are kept: fix the cause and rerun the same command to resume here.")
    _write_json_atomic(stage.dir / DONE, {"stage": stage.name, "hash": stage.hash, "seconds": seconds,
                                          "cpu_seconds": cpu_seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    return seconds


def _children_cpu_s() -> float:
    """User + system CPU time (s) of finished child processes: a stage's CPU cost, whatever the load."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise PipelineError(f"no space left writing {path}. Fix: free disk space and rerun") from None
        raise


def load_outputs(stage: Stage) -> dict:
    """The stage's summary (summary.json, or metrics.json for training) and its wall time."""
    d = stage.dir
    done = json.loads((d / DONE).read_text())
    out = {"dir": str(d), "seconds": done["seconds"], "cpu_seconds": done.get("cpu_seconds")}
    for name in ("summary.json", "metrics.json"):
        if (d / name).exists():
            out[name.split(".")[0]] = json.loads((d / name).read_text())
    if stage.kind == "train" and "metrics" not in out and "summary" in out:  # a committee: its members' means
        prefix = "members_mean/"
        out["metrics"] = {k[len(prefix):]: v for k, v in out["summary"].items() if k.startswith(prefix)}
        out["metrics"].update({k: v for k, v in out["summary"].items() if k.startswith(("committee", "calibration/"))})
    return out
