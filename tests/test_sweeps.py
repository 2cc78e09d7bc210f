"""hedgenet-sweep (Optuna ≥ 4, trials composed with Hydra and trained in-process) on tiny real data: a 6-trial
study whose median pruner stops trials early, a second launch that resumes it, the best trial exported and
trained again with ``tuned=<study>`` (and compared), two worker processes sharing one journal-file study, a
multi-objective study, and the refusals (objective names, storage URLs, DDP, a changed search space)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cli_runner import BIN, TINY_TRAIN, program_env, run_cli, run_module, run_program

# TINY_TRAIN fixes the model's width, basis and cutoffs (so the HedgeNet family's search over them is off), 3
# epochs; the family's optimiser, EMA and loss-weight knobs are searched, and layers from a tiny choice
EPOCHS = 3
FIXED = [o for o in TINY_TRAIN if not o.startswith("train.max_epochs=")] + [
    f"train.max_epochs={EPOCHS}", "trainer.enable_progress_bar=false"]
SPACE = ["model.size.num_layers=choice(1,2)"]
# median pruning from the third trial on, from the first epoch: with the seeds fixed, the same trials are pruned
PRUNING = ["sweep.pruner.name=median", "sweep.pruner.n_startup_trials=2", "sweep.pruner.n_warmup_steps=0"]
STUDY = "tiny"
CONF = Path(__file__).resolve().parents[1] / "conf"


def sweep(root: Path, tiny_dataset: Path, *overrides: str, check: bool = True):
    return run_program("hedgenet-sweep", root, [
        "hparams_search=hedgenet", f"data.paths=[{tiny_dataset}]", *FIXED, *SPACE, f"sweep.study_name={STUDY}",
        "sweep.objectives=[val/forces_mae]", *PRUNING, *overrides], check=check)


def load_study(root: Path, name: str = STUDY, storage: str | None = None):
    import optuna

    return optuna.load_study(study_name=name, storage=storage or f"sqlite:///{root}/sweeps/{name}.db")


def trial_dir(root: Path, number: int, name: str = STUDY) -> Path:
    return root / "outputs" / "sweeps" / name / f"trial_{number}"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweep_root")


@pytest.fixture(scope="module")
def first(root, tiny_dataset):
    return sweep(root, tiny_dataset, "sweep.n_trials=6")


def test_six_trials_median_pruner_stops_some_early(root, first):
    study = load_study(root)
    states = [t.state.name for t in study.trials]
    assert len(states) == 6 and "PRUNED" in states and states.count("COMPLETE") >= 2, states
    log = (root / "outputs" / "sweeps" / STUDY / "sweep.log").read_text()
    for t in study.trials:
        run = trial_dir(root, t.number)
        metrics = json.loads((run / "metrics.json").read_text())  # every trial is a finished run directory
        assert (run / "model.pt").exists() and t.user_attrs["run_dir"] == str(run)
        cfg = yaml.safe_load((run / "resolved_config.yaml").read_text())
        assert cfg["train"]["optimizer"]["lr"] == t.params["train.optimizer.lr"]
        assert cfg["model"]["size"]["num_layers"] == t.params["model.size.num_layers"]
        assert cfg["model"]["size"]["channels"] == 8 and "sweep" not in cfg  # fixed keys are not searched
        steps = sorted(t.intermediate_values)
        assert steps == list(range(1, len(steps) + 1))  # the objective, reported after every epoch
        assert t.intermediate_values[steps[-1]] == pytest.approx(metrics["val/forces_mae"], rel=1e-9)
        if t.state.name == "PRUNED":
            assert steps[-1] < EPOCHS and metrics["pruned_after_epoch"] == steps[-1] == metrics["epochs_trained"]
            value = t.intermediate_values[steps[-1]]
            assert f"trial {t.number} pruned after epoch {steps[-1]}/{EPOCHS}: val/forces_mae={value:.6g}" in log
        else:
            assert steps[-1] == EPOCHS and "pruned_after_epoch" not in metrics
            assert t.value == pytest.approx(metrics["val/forces_mae"], rel=1e-12)
    # trial 0 is the baseline: the composed config's own values of the searched keys (conf/train.yaml, the model's)
    train = yaml.safe_load((CONF / "train.yaml").read_text())["train"]
    layers = yaml.safe_load((CONF / "model" / "hedgenet_small.yaml").read_text())["size"]["num_layers"]
    assert study.trials[0].params == {
        "train.optimizer.lr": train["optimizer"]["lr"], "train.optimizer.weight_decay": train["optimizer"]["weight_decay"],
        "train.ema_decay": train["ema_decay"], "train.loss_weights.energy": train["loss_weights"]["energy"],
        "model.size.num_layers": layers}
    assert "trial 0 is the baseline" in log
    assert [t.number for t in study.trials if t.user_attrs.get("baseline")] == [0]  # marked in the study for good
    hydra_cfg = yaml.safe_load((trial_dir(root, 0) / ".hydra" / "hydra.yaml").read_text())
    assert hydra_cfg["hydra"]["runtime"]["choices"]["model"] == "hedgenet_small"
    assert "0 trials so far, new" in first.stdout and "launch done" in log


def test_baseline_value_outside_its_search_space_is_left_to_the_sampler(tmp_path, tiny_dataset):
    run_program("hedgenet-sweep", tmp_path, [
        "hparams_search=hedgenet", f"data.paths=[{tiny_dataset}]", *FIXED, *SPACE, "sweep.study_name=outside",
        "train.optimizer.lr=tag(log,interval(1e-2,2e-2))", "sweep.n_trials=0"])
    [waiting] = load_study(tmp_path, "outside").trials  # enqueued, not yet run (no trial in this launch)
    assert waiting.state.name == "WAITING"
    fixed = waiting.system_attrs["fixed_params"]
    assert "train.optimizer.lr" not in fixed and fixed["model.size.num_layers"] == 2, fixed
    log = (tmp_path / "outputs" / "sweeps" / "outside" / "sweep.log").read_text()
    assert "train.optimizer.lr=0.005 lies outside its search space" in log


def test_second_launch_resumes_the_study(root, first, tiny_dataset):
    before = {t.number: (t.params, t.state, t.intermediate_values) for t in load_study(root).trials}
    proc = sweep(root, tiny_dataset, "sweep.n_trials=2")
    assert "6 trials so far" in proc.stdout and "resuming" in proc.stdout
    study = load_study(root)
    assert len(study.trials) == 8 and not any(t.state.name == "RUNNING" for t in study.trials)
    assert {t.number: (t.params, t.state, t.intermediate_values) for t in study.trials[:6]} == before
    # trial n samples with seed + n: the resumed launch draws new points
    old = {round(p["train.optimizer.lr"], 12) for p, _, _ in before.values()}
    assert all(round(t.params["train.optimizer.lr"], 12) not in old for t in study.trials[6:])
    assert all((trial_dir(root, n) / "metrics.json").exists() for n in (6, 7))


def test_best_trial_round_trips_through_hedgenet_train_and_compare(root, first, tiny_dataset, tmp_path):
    study = load_study(root)
    best = study.best_trial
    tuned = root / "sweeps" / "tuned" / f"{STUDY}.yaml"
    text = tuned.read_text()
    assert f"Best trial {best.number} of study {STUDY}" in text and "override /model: hedgenet_small" in text
    # the exported values, composed by hedgenet-train, give the best trial's config (another seed: compared below)
    _, run = run_cli("hedgenet-train", root, "tuned", [f"tuned={STUDY}", f"data.paths=[{tiny_dataset}]", *FIXED, "seed=1"])
    best_dir = trial_dir(root, best.number)

    def config(d: Path) -> dict:
        return yaml.safe_load((d / "resolved_config.yaml").read_text().replace(str(d), "<run dir>"))

    a, b = config(best_dir), config(run)
    assert b["seed"] == 1 and a["seed"] == 0
    a["seed"] = b["seed"] = None
    assert a == b
    # hedgenet-compare: the best trial and its retrained seed make one arm over two seeds
    compare_dir = tmp_path / "tuned_runs"
    for d in (best_dir, run):
        shutil.copytree(d, compare_dir / d.name, ignore=shutil.ignore_patterns("checkpoints", "wandb"))
    proc = run_module("hedgenet.cli.compare", root, [str(compare_dir), "--phonons", "off"])
    assert "2 runs in 1 arms" in proc.stdout, proc.stdout[-2000:]
    # the whole sweep directory is a hyperparameter sweep, not a comparison: refused with the fix
    proc = run_module("hedgenet.cli.compare", root, [str(root / "outputs" / "sweeps" / STUDY), "--phonons", "off"],
                      check=False)
    assert proc.returncode == 2 and "not a hyperparameter sweep" in proc.stderr, proc.stderr[-2000:]


def test_two_workers_share_one_journal_study(root, tiny_dataset):
    journal = root / "sweeps" / "shared.journal"
    args = [str(BIN / "hedgenet-sweep"), "hparams_search=hedgenet", f"data.paths=[{tiny_dataset}]", *FIXED, *SPACE,
            "sweep.study_name=shared", f"sweep.storage=journal:{journal}", "sweep.pruner.name=none",
            "sweep.n_trials=2"]
    workers = [subprocess.Popen(args, cwd=root, env=program_env(root), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=900) for w in workers]
    for w, (out, err) in zip(workers, outs):
        assert w.returncode == 0, out[-2000:] + err[-2000:]
    study = load_study(root, "shared", storage=_journal(journal))
    numbers = sorted(t.number for t in study.trials)
    assert numbers == [0, 1, 2, 3] and all(t.state.name == "COMPLETE" for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4  # no point drawn twice
    log = (root / "outputs" / "sweeps" / "shared" / "sweep.log").read_text()
    for w in workers:  # each worker ran its own 2 trials, into its own run directories
        mine = re.findall(rf"\[[^:\]]+:{w.pid}\] trial (\d+) complete", log)
        assert len(mine) == 2, log
    for n in numbers:
        assert (trial_dir(root, n, "shared") / "metrics.json").exists()


def _journal(path: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def test_multi_objective_study_exports_its_pareto_set(root, tiny_dataset):
    objectives = ["val/forces_mae", "val/H_all_mae"]
    base = [f"sweep.objectives=[{','.join(objectives)}]", "sweep.directions=[minimize,minimize]",
            "sweep.study_name=pareto", "sweep.n_trials=2", "train.max_epochs=1"]
    proc = sweep(root, tiny_dataset, *base, check=False)  # the median pruner cannot prune two objectives
    assert proc.returncode == 2 and "sweep.pruner.name=none" in proc.stderr, proc.stderr[-2000:]
    sweep(root, tiny_dataset, *base, "sweep.pruner.name=none")
    study = load_study(root, "pareto")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"] and len(study.trials) == 2
    for t in study.trials:
        metrics = json.loads((trial_dir(root, t.number, "pareto") / "metrics.json").read_text())
        assert t.values == pytest.approx([metrics[o] for o in objectives], rel=1e-12)
    files = sorted((root / "sweeps" / "tuned").glob("pareto_trial*.yaml"))
    assert [f.name for f in files] == sorted(f"pareto_trial{t.number}.yaml" for t in study.best_trials)


@pytest.mark.parametrize(("overrides", "expected"), [
    (["sweep.objectives=[val/force_mae]"], ["'val/force_mae'", "did you mean val/forces_mae", "Fix:"]),
    (["sweep.objectives=[test/forces_mae]"], ["never on test/*", "Fix:"]),
    # val/loss is weighted by each trial's own loss weights: no yardstick while the space searches them
    (["sweep.objectives=[val/loss]"], ["val/loss", "['train.loss_weights.energy']", "sweep.objectives=[val/forces_mae]"]),
    (["sweep.storage=sweeps/bad.db"], ["journal:<file>", "sqlite:///", "Fix:"]),
    (["sweep.storage=nosuchdb://host/x"], ["cannot be opened", "Fix:"]),
    (["trainer=ddp_sim"], ["one device", "trainer=cpu"]),
    (["sweep.pruner.name=hyperband"], ["'hyperband' unknown", "successive_halving"]),
    (["model.size.num_layer=choice(1,2)"], ["model.size.num_layer", "did you mean model.size.num_layers"]),
])
def test_bad_inputs_are_refused_before_any_trial(root, tiny_dataset, overrides, expected):
    proc = sweep(root, tiny_dataset, "sweep.study_name=refused", *overrides, check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    for text in expected:
        assert text in proc.stderr, proc.stderr[-2000:]
    assert not (root / "outputs" / "sweeps" / "refused").exists()


def test_changed_search_space_ddp_trials_and_train_path_are_refused(root, first, tiny_dataset):
    n = len(load_study(root).trials)
    proc = sweep(root, tiny_dataset, "model.size.num_layers=choice(2,3)", check=False)
    assert proc.returncode == 2 and "model.size.num_layers" in proc.stderr and "sweep.study_name" in proc.stderr
    assert len(load_study(root).trials) == n  # nothing was added
    # a trainer a trial samples is checked before that trial trains
    proc = sweep(root, tiny_dataset, "trainer=choice(ddp_sim)", "sweep.study_name=ddp_sampled", "sweep.n_trials=1",
                 check=False)
    assert proc.returncode == 2 and "one device" in proc.stderr, proc.stderr[-2000:]
    assert [t.state.name for t in load_study(root, "ddp_sampled").trials] == ["FAIL"]
    # the old multirun path is gone: hedgenet-train names the command that replaced it
    proc, _ = run_cli("hedgenet-train", root, "old_path", ["hparams_search=hedgenet"], check=False)
    assert proc.returncode == 2 and "hedgenet-sweep hparams_search=hedgenet" in proc.stderr


def test_search_space_syntax():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hedgenet.training.sweep import override_value, to_distribution

    assert to_distribution("a", "choice(1, 2.5, x)") == CategoricalDistribution([1, 2.5, "x"])
    assert to_distribution("a", "tag(log, interval(1e-4, 2e-2))") == FloatDistribution(1e-4, 2e-2, log=True)
    assert to_distribution("a", "interval(4.0, 6.0)") == FloatDistribution(4.0, 6.0)
    assert to_distribution("a", "range(8, 33, 8)") == IntDistribution(8, 32, step=8)
    assert to_distribution("a", "range(0, 1, 0.25)") == FloatDistribution(0.0, 0.75, step=0.25)
    for value, text in ((1e-05, "1e-05"), (0.0009111295702454771, "0.0009111295702454771"), (True, "true"),
                        (None, "null"), ("hedgenet_small", "hedgenet_small"), ("a b", "'a b'")):
        assert override_value(value) == text


def test_val_loss_ranks_trials_only_while_the_loss_weights_are_fixed():
    from hedgenet.config import ConfigError
    from hedgenet.training.sweep import check_yardstick, to_distribution

    lr = {"train.optimizer.lr": to_distribution("train.optimizer.lr", "tag(log, interval(1e-4, 2e-2))")}
    check_yardstick(["val/loss"], lr)  # one weighting for every trial: val/loss is a yardstick
    weights = {**lr, "train.loss_weights.H": to_distribution("train.loss_weights.H", "choice(10, 100)")}
    check_yardstick(["val/forces_mae"], weights)
    with pytest.raises(ConfigError, match=r"searches \['train.loss_weights.H'\].*train.loss_weights.H=<value>"):
        check_yardstick(["val/forces_mae", "val/loss"], weights)
