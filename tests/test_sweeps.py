"""Optuna sweeps of hedgenet-train on tiny real data: 3 trials into a sqlite study, a second launch that
resumes it, one device per trial, and the configurable objective."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import TINY_TRAIN, run_cli, run_sweep

# the HedgeNet family's search space, shrunk to tiny models (sweep overrides extend hydra.sweeper.params)
TINY_SPACE = ["model.size.channels=choice(4,8)", "model.size.num_layers=choice(1,2)", "model.num_basis=choice(4,6)",
              "relations.r_inter=interval(3.4,3.6)"]
STUDY = "tiny_study"
# a key given both as a fixed value and as a search space stays fixed: drop the fixed ones
FIXED = [o for o in TINY_TRAIN if o.split("=")[0] not in {s.split("=")[0] for s in TINY_SPACE}]


def sweep(root: Path, name: str, tiny_dataset: Path, *overrides: str, check: bool = True):
    return run_sweep("hedgenet-train", root, name,
                     ["hparams_search=hedgenet", f"data.paths=[{tiny_dataset}]", *FIXED, *TINY_SPACE,
                      f"hydra.sweeper.study_name={STUDY}", "objective=val/forces_mae", *overrides], check=check)


def load_study(root: Path):
    import optuna

    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{root}/sweeps/{STUDY}.db")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweep_root")


@pytest.fixture(scope="module")
def first(root, tiny_dataset):
    return sweep(root, "first", tiny_dataset, "hydra.sweeper.n_trials=3")[1]


def test_three_trials_in_a_sqlite_study(root, first):
    study = load_study(root)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    for t in study.trials:  # the value Optuna holds is the objective in the trial's own metrics.json
        run = first / str(t.number)
        metrics = json.loads((run / "metrics.json").read_text())
        assert t.value == pytest.approx(metrics["val/forces_mae"], rel=1e-12)
        cfg = (run / "resolved_config.yaml").read_text()
        assert f"channels: {t.params['model.size.channels']}" in cfg
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3


def test_second_launch_resumes_the_study(root, first, tiny_dataset):
    before = {t.number: (t.params, t.value) for t in load_study(root).trials}
    proc, second = sweep(root, "second", tiny_dataset, "hydra.sweeper.n_trials=1")
    assert "3 trials so far, resuming" in proc.stdout + proc.stderr
    study = load_study(root)
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert {t.number: (t.params, t.value) for t in study.trials[:3]} == before
    # the sampler seed is offset by the stored trials: the resumed launch draws new start-up points
    old_lrs = {round(p["train.optimizer.lr"], 12) for p, _ in before.values()}
    assert all(round(t.params["train.optimizer.lr"], 12) not in old_lrs for t in study.trials[3:])
    assert (first / "0" / "model.pt").exists() and (second / "0" / "model.pt").exists()


def test_ddp_is_refused_before_the_study_starts(root, tiny_dataset):
    proc, _ = sweep(root, "ddp", tiny_dataset, "trainer=ddp_sim", "hydra.sweeper.study_name=ddp_study", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "one device" in proc.stderr and "trainer=cpu" in proc.stderr
    assert not (root / "sweeps" / "ddp_study.db").exists()


def test_ddp_sampled_inside_a_trial_is_refused(root, tiny_dataset):
    proc, _ = sweep(root, "ddp_sampled", tiny_dataset, "trainer=choice(ddp_sim)", "hydra.sweeper.n_trials=1",
                    "hydra.sweeper.study_name=ddp_sampled", check=False)
    assert proc.returncode == 2 and "one device" in proc.stderr, proc.stderr[-2000:]


def test_changed_search_space_and_reused_sweep_dir_are_refused(root, first, tiny_dataset):
    proc, _ = sweep(root, "changed", tiny_dataset, "model.size.channels=choice(8,16)", check=False)
    assert proc.returncode == 2 and "model.size.channels" in proc.stderr and "study_name" in proc.stderr
    proc, _ = sweep(root, "first", tiny_dataset, "hydra.sweeper.n_trials=1", check=False)
    assert proc.returncode == 2 and "overwrite" in proc.stderr
    assert len(load_study(root).trials) >= 3  # nothing was added by the refused launches


def test_objective_names_are_checked(root, tiny_dataset):
    base = [f"data.paths=[{tiny_dataset}]", *TINY_TRAIN]
    proc, run = run_cli("hedgenet-train", root, "bad_objective", [*base, "objective=val/force_mae"], check=False)
    assert proc.returncode == 2 and "val/forces_mae" in proc.stderr and not (run / "metrics.json").exists()
    # a test/* objective without a test set: known only after training; the finished run is kept
    proc, run = run_cli("hedgenet-train", root, "no_test_set", [*base, "objective=test/forces_mae"], check=False)
    assert proc.returncode == 2 and "available" in proc.stderr and "val/loss" in proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert (run / "model.pt").exists() and metrics["val/loss"] > 0
    assert metrics["inference_time_s_per_structure"] > 0 and metrics["inference_atoms_per_structure"] == 64
