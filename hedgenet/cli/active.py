"""``hedgenet-active``: active learning with a committee and the reference (Hydra app, conf/active.yaml).

    hedgenet-active 'seed_data=[<root>/data/seed.h5]' 'test_paths=[<held-out>.h5]'
    hedgenet-active ... active.strategy=random       # the baseline: the same pool and budget, picked at random
    hedgenet-active ... active.strategy=stratified   # each kind's most uncertain, the batch shared as the pool is
    hedgenet-active ... active.batch_size=8 active.max_labels=40 'train.train.max_epochs=60'

Round r: ``hedgenet-train committee.size=K`` on the seed data plus the candidates labelled so far
(``<run dir>/rounds/<r>/train``; with ``active.committee_size=1`` one model, which ranks by its own last-layer
estimate at a third of a committee's training and scoring cost); the committee scores every unlabelled candidate of the pool
(:mod:`hedgenet.training.active`); the ``active.batch_size`` most uncertain are labelled by the reference into
``pool.path`` (resumable and parallel as ``hedgenet-label``). The run stops when the budget
(``active.max_labels``) is spent, after ``active.max_rounds`` picking rounds, when no candidate's spread exceeds
``active.target_force_spread_meV_A`` or when the pool is exhausted; the last round's committee is the result
(``<run dir>/committee.json``, or ``model.pt`` for one model: a model_path for every physics command). Each round is a line of rounds.jsonl,
rounds.csv and rounds.md, and a point of rounds.png. A rerun with the same ``hydra.run.dir`` resumes: finished
rounds, committee members and labels are kept, a round's picks are stored before its labelling starts.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from hedgenet.config import (
    ConfigError,
    check_config,
    check_material,
    config_dir,
    resolved_dict,
)
from hedgenet.reference import reference_settings
from hedgenet.run_io import run_stage


def check_active_config(cfg: DictConfig) -> DictConfig:
    """The typed config, or a ConfigError naming the fix (unknown strategy or score, sizes, missing seed data,
    fewer than 1 member, one model without its estimate)."""
    from hedgenet.training.active import SCORES, STRATEGIES

    checked = check_config(cfg, "active")
    check_material(cfg.material)
    a = cfg.active
    if a.strategy not in STRATEGIES:
        raise ConfigError(f"active.strategy={a.strategy!r} unknown. Fix: one of {list(STRATEGIES)}")
    if a.score not in SCORES:
        raise ConfigError(f"active.score={a.score!r} unknown. Fix: one of {list(SCORES)}")
    for key in ("batch_size", "max_labels"):
        if int(a[key]) < 1:
            raise ConfigError(f"active.{key}={a[key]} must be ≥ 1. Fix: e.g. active.{key}=4")
    if int(a.max_rounds) < 0:
        raise ConfigError(f"active.max_rounds={a.max_rounds} must be ≥ 0 (0: train and score the seed committee only)")
    if not list(cfg.seed_data):
        raise ConfigError("seed_data is empty: the first committee needs labelled cells to train on. Fix: label a "
                          "small set with hedgenet-label (e.g. dataset.name=seed dataset.rattle.n_per_amplitude=2) "
                          "and pass seed_data=[<its .h5>]")
    for p in [*cfg.seed_data, *cfg.test_paths]:
        if not Path(str(p)).is_file():
            raise ConfigError(f"{p} does not exist. Fix: give labelled datasets written by hedgenet-label")
    if "committee" in (cfg.train or {}):
        raise ConfigError("train.committee is set by the loop. Fix: active.committee_size=K instead")
    if int(a.committee_size) < 1:
        raise ConfigError(f"active.committee_size={a.committee_size} must be ≥ 1 (1: one model ranked by its own "
                          "last-layer estimate; K ≥ 2: a committee's spread). Fix: active.committee_size=3")
    if int(a.committee_size) == 1 and OmegaConf.select(cfg.train, "train.uncertainty.method",
                                                       default="last_layer") is None:
        raise ConfigError("active.committee_size=1 ranks candidates by the model's own estimate, but the train "
                          "overrides set train.uncertainty.method=null. Fix: drop that override, or "
                          "active.committee_size=3")
    if a.strategy == "oracle":
        from hedgenet.training.active import ORACLE_SCORES

        if a.labels_from is None:
            raise ConfigError("active.strategy=oracle ranks the candidates by the round's actual errors, so every "
                              "candidate must be labelled beforehand. Fix: active.labels_from=<the pool labelled by "
                              "hedgenet-label with this recipe and seed> (a benchmark's bound, not a way to save calls)")
        if a.score not in ORACLE_SCORES:
            raise ConfigError(f"active.strategy=oracle ranks by actual errors with active.score in "
                              f"{list(ORACLE_SCORES)}, not {a.score!r}. Fix: active.score=both")
    if a.score == "phonons" and a.strategy not in ("random", "oracle"):
        if int(a.committee_size) != 1:
            raise ConfigError(f"active.score=phonons works on one model's last layer, not a committee of "
                              f"{a.committee_size}. Fix: active.committee_size=1")
        if a.strategy != "uncertainty":
            raise ConfigError(f"active.score=phonons picks its batch greedily over all kinds of candidates; "
                              f"active.strategy={a.strategy} does not apply. Fix: active.strategy=uncertainty")
        if int(a.phonon_probes) < 1:
            raise ConfigError(f"active.phonon_probes={a.phonon_probes} must be ≥ 1. Fix: e.g. active.phonon_probes=32")
    return checked


def single_model(cfg: DictConfig) -> bool:
    """One model per round, ranked by its own last-layer estimate (``active.committee_size=1``)."""
    return int(cfg.active.committee_size) == 1


def _store_header(cfg: DictConfig, reference, params: dict, fingerprint: str) -> dict:
    from hedgenet.data.build import provenance

    return {"fingerprint": fingerprint, "solver_settings": reference.settings(),
            "orbital_layout": reference.layout.to_json(),
            "material": {"name": cfg.material.name, "builder": cfg.material.builder, "params": params},
            "supercell": list(cfg.pool.supercell), "config": OmegaConf.to_yaml(cfg, resolve=True),
            "provenance": provenance()}


def train_round(cfg: DictConfig, train_dir: Path, data_paths: list[str]) -> dict:
    """Train (or finish, or keep) the round's committee (or single model) with hedgenet-train in ``train_dir``;
    its metrics."""
    from hydra.core.hydra_config import HydraConfig

    from hedgenet.pipeline.stages import flatten_overrides, run_logged

    if (train_dir / result_file(cfg)).exists() and (train_dir / "summary.json").exists():
        return json.loads((train_dir / "summary.json").read_text())
    choices = HydraConfig.get().runtime.choices
    material_overrides = [o for o in HydraConfig.get().overrides.task if o.lstrip("+~").startswith("material.")]
    args = [f"material={choices['material']}", *material_overrides, f"reference={choices['reference']}",
            f"reference.block_cutoff={cfg.reference.block_cutoff}", *flatten_overrides(cfg.train),
            *([] if single_model(cfg) else [f"committee.size={int(cfg.active.committee_size)}"]),
            f"data.paths=[{','.join(data_paths)}]", f"data.test_paths=[{','.join(map(str, cfg.test_paths))}]",
            f"hydra.run.dir={train_dir}"]
    cmd = [str(Path(sys.executable).parent / "hedgenet-train"), *args]
    train_dir.mkdir(parents=True, exist_ok=True)
    (train_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    status = run_logged(cmd, train_dir.parent / "train.log")
    if status != 0:
        tail = (train_dir.parent / "train.log").read_text()[-1500:]
        if status in (2,):
            raise ConfigError(f"the round's hedgenet-train refused its config:\n{tail}\nFix: correct the `train` "
                              "overrides (they are conf/train.yaml's keys)")
        raise RuntimeError(f"hedgenet-train of {train_dir} ended with status {status}; log {train_dir.parent / 'train.log'}"
                           f"\n{tail}\nRerun the same hedgenet-active command to resume (finished members are kept)")
    return json.loads((train_dir / "summary.json").read_text())


def run_active(cfg: DictConfig, run_dir: Path) -> dict:
    check_active_config(cfg)
    from hedgenet.data.store import DatasetStore

    with DatasetStore(Path(str(cfg.pool.path))).locked():  # one loop per pool file
        return _active(cfg, run_dir)


def _active(cfg: DictConfig, run_dir: Path) -> dict:
    from hedgenet.cli.label import labelling_context
    from hedgenet.data.build import dataset_fingerprints, recipe_specs, wants_thermal
    from hedgenet.data.labelling import label_dataset
    from hedgenet.data.store import DatasetStore
    from hedgenet.reference import make_reference
    from hedgenet.structures.supercell import make_phonopy, supercell_atoms
    from hedgenet.training.active import (
        append_round,
        candidate_errors,
        candidate_spreads,
        error_score,
        model_spreads,
        pick,
        plot_rounds,
        read_rounds,
        round_row,
        uncertainty_score,
        write_rounds_table,
    )
    from hedgenet.training.phonon_aware import phonon_aware_round

    a = cfg.active
    pool = resolved_dict(cfg.pool)
    reference, unit, params, thermal_force_constants, excluded = labelling_context(cfg, cfg.pool)
    base = supercell_atoms(make_phonopy(unit, list(pool["supercell"])), unit)
    reference.check_elements(base)
    reference.check_cell(base)
    phonon = thermal_force_constants() if wants_thermal(pool) else None
    specs = recipe_specs(base, pool, int(cfg.seed), phonon, reference)
    by_id = {s.sample_id: s for s in specs}
    store = DatasetStore(Path(pool["path"]))
    fingerprints = dataset_fingerprints(params, cfg.material.builder, pool, int(cfg.seed), reference)
    fingerprint = fingerprints[0]
    labels_from = None
    if a.labels_from is not None:
        labels_from = DatasetStore(Path(str(a.labels_from)))
        if not labels_from.exists() or not labels_from.has_fingerprint(fingerprints):
            raise ConfigError(f"active.labels_from={a.labels_from} is not a dataset of this pool (its recipe, seed, "
                              "material or reference settings differ: another fingerprint). Fix: the pool's keys and "
                              "`seed` as the hedgenet-label command that wrote it, or active.labels_from=null")
    if store.exists():
        store.check_fingerprint(fingerprints)
    else:
        store.create(_store_header(cfg, reference, params, fingerprint), base)
    store.consolidate()  # labels a killed run left staged
    seeds = [DatasetStore(Path(str(p))) for p in cfg.seed_data]
    n_seed = sum(len(d.ids()) for d in seeds)
    # seed cells that are samples of this very pool (a subset of its labelling: the same fingerprint) are labelled
    # already: they are never offered as candidates
    in_seed = {i for d in seeds if d.has_fingerprint(fingerprints) for i in d.ids()}
    reference_spec = {"name": cfg.reference.name, **reference_settings(cfg)}
    print(f"hedgenet-active: pool of {len(specs)} candidates ({pool['path']}), {n_seed} seed cells; resume with the "
          f"same command and hydra.run.dir={run_dir}", file=sys.stderr)

    rows = read_rounds(run_dir)
    t0 = time.perf_counter()
    r = len(rows)
    while not (rows and rows[-1].get("stop")):
        round_dir = run_dir / "rounds" / str(r)
        picks_file = round_dir / "picked.json"
        # picked before a kill: the same candidates (never a new draw), offered as they were then
        picked = json.loads(picks_file.read_text())["picked"] if picks_file.exists() else None
        labelled = sorted(set(store.ids()) - set(picked or []))
        data_paths = [str(p) for p in cfg.seed_data] + ([str(store.path)] if labelled else [])
        print(f"round {r}: committee on {n_seed + len(labelled)} labelled cells", file=sys.stderr)
        metrics = train_round(cfg, round_dir / "train", data_paths)
        # labelled (here or in the seed set) or failed: a failed candidate is not offered again
        done = (store.done_ids() | in_seed) - set(picked or [])
        candidates = [s for s in specs if s.sample_id not in done]
        structures = [s.structure(base) for s in candidates]
        spreads = (model_spreads(round_dir / "train" / "model.pt", structures) if single_model(cfg)
                   else candidate_spreads(round_dir / "train" / "committee.json", structures))
        row = round_row(r, n_seed, len(labelled), metrics, spreads)
        target = a.target_force_spread_meV_A
        budget_left = int(a.max_labels) - len(done - in_seed)
        stop = None if picked is not None else (
            "pool exhausted" if not candidates else "max_labels" if budget_left <= 0 else
            "max_rounds" if r >= int(a.max_rounds) else
            "target spread reached" if target is not None and row.get("pool_force_spread_max_meV_A") is not None
            and row["pool_force_spread_max_meV_A"] < float(target) else None)
        if stop:
            row["stop"] = stop
            append_round(run_dir, row)
            rows.append(row)
            print(f"round {r}: stop ({stop})", file=sys.stderr)
            break
        if picked is None:
            ids = [s.sample_id for s in candidates]
            n_pick, round_seed, extra = min(int(a.batch_size), budget_left), 1000 * int(a.seed) + r, {}
            if a.strategy != "random" and a.score == "phonons":
                result = phonon_aware_round(round_dir / "train" / "model.pt", structures, data_paths, base, n_pick,
                                            int(a.phonon_probes), round_seed)
                picked, scores = sorted(ids[i] for i in result["picked"]), result["gains"]
                extra = {"phonon_target_variance": result["variance"]}
            elif a.strategy == "oracle":
                errors = candidate_errors(round_dir / "train" / result_file(cfg), oracle_samples(labels_from, ids))
                scores, extra = error_score(errors, str(a.score)), {k: v.tolist() for k, v in errors.items()}
                picked = pick(ids, scores, n_pick, "oracle", round_seed)
                row.update(pool_ranking_spearman(spreads, errors))
            else:
                scores = uncertainty_score(spreads, str(a.score)) if a.strategy != "random" else None
                picked = pick(ids, scores, n_pick, str(a.strategy), round_seed, kinds=[s.kind for s in candidates])
            tmp = picks_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"picked": picked, "strategy": str(a.strategy), "score": str(a.score),
                                       "candidates": ids, "scores": None if scores is None else scores.tolist(),
                                       **extra, **{k: v.tolist() for k, v in spreads.items()}}))
            tmp.replace(picks_file)
        t_label = time.perf_counter()
        copied = copy_labels(labels_from, store, picked) if labels_from is not None else []
        counts = label_dataset(store, base, [by_id[i] for i in picked if i not in copied], make_reference,
                               reference_spec, n_workers=int(pool["n_workers"]),
                               consolidate_every_s=float(pool["consolidate_every_s"]), progress=bool(cfg.progress),
                               reference=reference)
        counts["copied"] = len(copied)
        row.update(picked=picked, picked_kinds=[by_id[i].kind for i in picked], label_s=time.perf_counter() - t_label,
                   label_counts=counts)
        append_round(run_dir, row)
        rows.append(row)
        print(f"round {r}: labelled {picked} ({', '.join(by_id[i].kind for i in picked)})", file=sys.stderr)
        r += 1

    write_rounds_table(rows, run_dir)
    plot_rounds(rows, run_dir / "rounds.png", f"{cfg.material.name}: {a.strategy} picks of {a.batch_size} per round")
    last_train = run_dir / "rounds" / str(rows[-1]["round"]) / "train"
    last = publish_model(last_train, run_dir) if single_model(cfg) else publish_committee(last_train, run_dir)
    return {"model_path": str(last), "committee_size": int(a.committee_size), "strategy": str(a.strategy), "score": str(a.score), "rounds": rows,
            "n_rounds": len(rows), "n_seed": n_seed, "n_picked": len(store.ids()), "pool_size": len(specs),
            "pool_path": str(store.path), "stop": rows[-1]["stop"], "excluded_modes": list(excluded),
            "time_s_this_run": time.perf_counter() - t0}


def pool_ranking_spearman(spreads: dict, errors: dict) -> dict:
    """How well the round's own spreads rank the pool's actual errors (``oracle`` rounds, which know both):
    Spearman ρ of the mean force spread against the mean force error per candidate, and of H likewise."""
    from scipy.stats import spearmanr

    out = {}
    for q, spread_key, error_key in (("forces", "force_spread_eV_A", "force_error_eV_A"),
                                     ("H", "H_spread_eV", "H_error_eV")):
        if spread_key in spreads and error_key in errors and len(errors[error_key]) > 2:
            out[f"pool_spearman_{q}"] = float(spearmanr(spreads[spread_key], errors[error_key]).statistic)
    return out


def oracle_samples(labels_from, ids) -> list[dict]:
    """The labelled samples ``ids`` of ``labels_from`` (``active.strategy=oracle`` ranks by their actual errors);
    a ConfigError naming the fix when the pool's labelling lacks some."""
    missing = sorted(set(ids) - set(labels_from.ids()))
    if missing:
        raise ConfigError(f"active.strategy=oracle needs every candidate labelled in active.labels_from="
                          f"{labels_from.path}; {len(missing)} are not (ids {missing[:8]}{' …' if len(missing) > 8 else ''}). "
                          "Fix: label the whole pool with hedgenet-label (this recipe and seed), or another strategy")
    return [labels_from.read_sample(i) for i in ids]


def copy_labels(source, store, ids) -> list[int]:
    """Stage the samples ``ids`` that ``source`` (a store of the same pool) holds into ``store``, as labelled
    there; returns their ids (the others are for the reference)."""
    have = set(source.ids())
    copied = []
    for i in ids:
        if i not in have:
            continue
        if i not in store.done_ids():
            arrays, attrs = source.read_sample_parts(i)
            attrs = {k: v.item() if hasattr(v, "item") else v for k, v in attrs.items()}
            store.stage(i, arrays, {**attrs, "copied_from": str(source.path)})
        copied.append(i)
    store.consolidate()
    return copied


def result_file(cfg: DictConfig) -> str:
    """What a round's training leaves and the run publishes: ``committee.json``, or ``model.pt`` for one model."""
    return "model.pt" if single_model(cfg) else "committee.json"


def publish_model(train_dir: Path, run_dir: Path) -> Path:
    """``<run_dir>/model.pt``: the last round's model (with its calibrated estimate), the run's result."""
    import os
    import shutil

    tmp = run_dir / "model.pt.tmp"
    shutil.copyfile(train_dir / "model.pt", tmp)
    os.replace(tmp, run_dir / "model.pt")
    return run_dir / "model.pt"


def publish_committee(train_dir: Path, run_dir: Path) -> Path:
    """``<run_dir>/committee.json``: the last round's committee (its members and calibration), the run's result."""
    from hedgenet.models.committee import (
        COMMITTEE_FILE,
        read_committee,
        write_committee,
    )

    info = read_committee(train_dir)
    extra = {k: v for k, v in info.items() if k not in ("format", "members", "member_paths", "path")}
    return write_committee(run_dir / COMMITTEE_FILE, info["member_paths"], extra)


def print_summary(summary: dict) -> None:
    print(f"hedgenet-active: {summary['n_rounds']} rounds, {summary['n_picked']} of {summary['pool_size']} candidates "
          f"labelled ({summary['strategy']}), stop: {summary['stop']}; model_path {summary['model_path']}")


def _user_errors() -> tuple[type[BaseException], ...]:
    from hedgenet.cli.label import USER_ERRORS
    from hedgenet.models.committee import CommitteeFileError

    return (*USER_ERRORS, CommitteeFileError)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="active")
def _main(cfg: DictConfig) -> None:
    run_stage("hedgenet-active", cfg, run_active, lambda summary, run: print_summary(summary), _user_errors())


def main() -> None:
    from hedgenet.cli import run_hydra_app

    run_hydra_app(_main)


if __name__ == "__main__":
    main()
