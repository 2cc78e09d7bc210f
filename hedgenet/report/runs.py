"""Finished ``hedgenet-train`` runs of a multirun directory, grouped for a comparison, with the checks
that keep a table honest: one dataset and one split per material, arms that differ only in the seed.

A run directory holds ``resolved_config.yaml``, ``metrics.json``, ``split.json`` and ``model.pt``
(``hedgenet-train``) and Hydra's ``.hydra/hydra.yaml`` (the config-group choices, e.g. ``model``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class CompareError(ValueError):
    """The directory cannot be compared as it is; the message names the problem and the fix."""


# config keys that may differ between the runs of one arm (besides ``seed``) and between arms
RUN_LOCAL_KEYS = ("seed", "paths", "logger", "train.resume", "objective")
# what must be identical across all runs of one material's table: the data and the split
DATA_KEYS = ("data.paths", "data.test_paths", "data.val_fraction", "data.test_fraction", "data.split_seed",
             "reference", "material")


@dataclass
class TrainRun:
    """One finished ``hedgenet-train`` run."""

    dir: Path
    config: dict
    metrics: dict
    split: dict
    choices: dict = field(default_factory=dict)

    @property
    def material(self) -> str:
        return str(self.config["material"]["name"])

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def model(self) -> str:
        """The ``model`` config choice (e.g. ``hedgenet_small``), else the model's builder name."""
        return str(self.choices.get("model") or self.config["model"]["name"])

    @property
    def relations(self) -> str:
        return str(self.config["relations"]["name"])

    @property
    def arm(self) -> str:
        """The comparison arm: model choice, and for HedgeNet its relation set, e.g. ``hedgenet_small (single)``;
        the baselines use no relation types (one homogeneous graph), so their arm is the model alone."""
        if self.config["model"]["name"] == "hedgenet":
            return f"{self.model} ({self.relations})"
        return self.model

    @property
    def model_path(self) -> Path:
        return self.dir / "model.pt"


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _drop(flat: dict, keys) -> dict:
    return {k: v for k, v in flat.items() if not any(k == p or k.startswith(p + ".") for p in keys)}


def _settings(run: TrainRun) -> dict:
    """A run's flattened config without what is its own (seed, paths, logger, ...), with its run directory in
    any value (callback paths such as ``callbacks.history.path``) written as ``<run dir>``."""
    flat = flatten(run.config)
    own = str(flat.get("paths.output_dir") or run.dir)
    return _drop({k: v.replace(own, "<run dir>") if isinstance(v, str) and own else v for k, v in flat.items()},
                 RUN_LOCAL_KEYS)


def _select(flat: dict, keys) -> dict:
    return {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in keys)}


def read_run(run_dir: Path) -> TrainRun:
    """A finished train run, or CompareError naming what is missing and the fix."""
    cfg_file = run_dir / "resolved_config.yaml"
    config = yaml.safe_load(cfg_file.read_text()) or {}
    task = config.get("task_name")
    if task != "train" or "model" not in config:
        raise CompareError(
            f"{run_dir} is a {'hedgenet-' + str(task) if task else 'non-hedgenet'} run, not a hedgenet-train run. "
            "Fix: compare a directory holding only hedgenet-train runs (move that one out; v_F runs go to "
            "--fermi-velocity)."
        )
    missing = [f for f in ("metrics.json", "split.json", "model.pt") if not (run_dir / f).exists()]
    if missing:
        err = run_dir / "error.txt"
        why = f" It failed: {err.read_text().strip()}" if err.exists() else " It did not finish."
        raise CompareError(f"run {run_dir} has no {', '.join(missing)}.{why} Fix: rerun it, or move it out of "
                           "the directory to compare the others.")
    choices = {}
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.exists():
        hydra_cfg = yaml.safe_load(hydra_file.read_text()) or {}
        choices = dict(((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {})
    return TrainRun(run_dir, config, json.loads((run_dir / "metrics.json").read_text()),
                    json.loads((run_dir / "split.json").read_text()), choices)


def find_runs(root: Path) -> list[TrainRun]:
    """Every run directory (one holding ``resolved_config.yaml``) below ``root``, read and checked."""
    root = Path(root)
    if not root.is_dir():
        raise CompareError(f"{root} is not a directory. Fix: pass the multirun directory of "
                           "`hedgenet-train experiment=compare_baselines` (outputs/train/compare_baselines/<time>).")
    dirs = sorted(p.parent for p in root.rglob("resolved_config.yaml")
                  if not {"wandb", "checkpoints"} & set(p.relative_to(root).parts))
    if not dirs:
        raise CompareError(
            f"no runs in {root} (no resolved_config.yaml below it). Fix: pass the multirun directory of "
            "`hedgenet-train experiment=compare_baselines` (outputs/train/compare_baselines/<time>)."
        )
    return [read_run(d) for d in dirs]


def _first_difference(a: dict, b: dict) -> tuple[str, object, object] | None:
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            return k, a.get(k, "<unset>"), b.get(k, "<unset>")
    return None


def group_runs(runs: list[TrainRun]) -> dict[str, dict[str, list[TrainRun]]]:
    """``{material: {arm: runs sorted by seed}}``. CompareError when one material's runs were trained on
    different data or splits, or when the runs of one arm differ in more than their seed."""
    out: dict[str, dict[str, list[TrainRun]]] = {}
    for r in runs:
        out.setdefault(r.material, {}).setdefault(r.arm, []).append(r)
    for material, arms in out.items():
        everyone = [r for rs in arms.values() for r in rs]
        first = everyone[0]
        ref_data = _select(flatten(first.config), DATA_KEYS)
        for r in everyone[1:]:
            diff = _first_difference(ref_data, _select(flatten(r.config), DATA_KEYS))
            if diff is None and r.split != first.split:
                diff = ("split.json", "one split", "another split")
            if diff is not None:
                raise CompareError(
                    f"runs of material {material} were trained on different data or splits: {first.dir} has "
                    f"{diff[0]}={diff[1]!r}, {r.dir} has {diff[2]!r}. Fix: compare runs of one dataset and one split "
                    "(same data.paths, data.test_paths, data.split_seed, fractions, reference): put the others in "
                    "another directory."
                )
        for arm, rs in arms.items():
            rs.sort(key=lambda r: r.seed)
            base = _settings(rs[0])
            for r in rs[1:]:
                diff = _first_difference(base, _settings(r))
                if diff is not None:
                    raise CompareError(
                        f"runs of {arm} on {material} differ in {diff[0]} ({diff[1]!r} in {rs[0].dir}, {diff[2]!r} in "
                        f"{r.dir}), not only in their seed. Fix: compare one setting per model over seeds (an "
                        "experiment=compare_baselines multirun), not a hyperparameter sweep; or give each "
                        "setting its own model/variant."
                    )
            seeds = [r.seed for r in rs]
            if len(set(seeds)) != len(seeds):
                raise CompareError(f"{arm} on {material} has several runs with one seed ({sorted(seeds)}): "
                                   f"{[str(r.dir) for r in rs]}. Fix: keep one run per seed.")
    return out
