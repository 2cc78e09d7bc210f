"""benchmarks/tuned_margins.py: the equal-budget tuning loop on tiny real data (a real hedgenet-sweep study that
stops at its CPU budget and resumes), and the margins of the seed means."""

from __future__ import annotations

import argparse
import json

import pytest
from cli_runner import TINY_TRAIN


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("tuned_margins")


def test_margins_are_relative_differences_of_the_seed_means(bench):
    def row(family, seed, phonons, forces, h):  # the fields of a learning_curves.py row that enter
        return {"family": family, "n_cells": 96, "seed": seed, "phonon_mae_THz": phonons, "forces_mae_meV_A": forces,
                "H_mae_meV": h}

    rows = {"hedgenet": [row("hedgenet", 0, 0.20, 40.0, 1.0), row("hedgenet", 1, 0.22, 44.0, 1.2)],
            "mace": [row("mace", 0, 0.25, 40.0, None), row("mace", 1, 0.23, 44.0, None)]}
    m = bench.margins(rows)["mace"]
    assert m["phonon_mae_THz"]["percent"] == pytest.approx(100 * (0.21 / 0.24 - 1))
    assert m["forces_mae_meV_A"]["percent"] == pytest.approx(0.0)
    assert "H_mae_meV" not in m  # MACE has no Hamiltonian: no margin, not a zero
    # error of the ratio: both means' standard errors (std 0.01414 over 2 seeds each) combined
    se = 0.0141421356 / 2 ** 0.5
    assert m["phonon_mae_THz"]["err_percent"] == pytest.approx(100 * 0.21 / 0.24 * ((se / 0.21) ** 2 + (se / 0.24) ** 2) ** 0.5,
                                                               rel=1e-6)
    assert m["phonon_mae_THz"]["n_seeds"] == [2, 2]


def test_tuning_stops_at_its_budget_and_resumes(bench, tiny_root, tmp_path):
    """One trial spends the tiny budget and a rerun with the same budget adds none; the ledger's CPU seconds are
    those of the launch, and the best trial, a completed one, is exported for tuned=<study>; the finished study is
    recorded, and a root without it (a new machine) restores it from the record instead of tuning again."""
    root = tiny_root(tmp_path / "root")
    taken = ("data.batch_size=", "data.val_fraction=", "train.max_epochs=")
    extra = [o for o in TINY_TRAIN if not o.startswith(taken)] + ["train.ema_decay=null", "logger=csv"]
    args = argparse.Namespace(tune_cells=3, tune_epochs=1, tune_val_fraction=0.34, budget_cpu_s=0.5,
                              record=tmp_path / "record")
    first = bench.tune("hedgenet", root, root / "data" / "tiny.h5", args, extra)
    assert [t["number"] for t in first["trials"]] == [0] and first["best"]["state"] == "COMPLETE"
    assert first["best"]["value"] > 0 and first["trials"][0]["cpu_s"] > 0.5
    ledger = json.loads((root / "tuned_margins" / f"{first['study']}.json").read_text())
    assert len(ledger["launches"]) == 1 and first["spent_cpu_s"] == pytest.approx(ledger["launches"][0]["cpu_s"])
    again = bench.tune("hedgenet", root, root / "data" / "tiny.h5", args, extra)
    assert again["trials"] == first["trials"]  # the budget was spent: nothing run
    tuned = (root / "sweeps" / "tuned" / f"{first['study']}.yaml").read_text()
    assert "Best trial 0 " in tuned
    # trial 0 is the baseline (the defaults): the evaluation takes the untuned rows for it instead of training twice
    assert bench.is_baseline(first["best"]) and "no trial beat the untuned run" in tuned

    # a new machine: a root without the study rebuilds it from the record — the trials, CPU seconds and the tuned
    # config as they were, in an Optuna study of its own, nothing trained
    import optuna

    fresh = tiny_root(tmp_path / "fresh")
    restored = bench.tune("hedgenet", fresh, fresh / "data" / "tiny.h5", args, extra)
    saved = json.loads((tmp_path / "record" / f"{first['study']}.json").read_text())
    assert restored["trials"] == saved["trials"] and restored["spent_cpu_s"] == first["spent_cpu_s"]
    key = lambda t: (t["number"], t["state"], t["value"], t["params"], t["cpu_s"])  # noqa: E731
    assert [key(t) for t in restored["trials"]] == [key(t) for t in first["trials"]]
    study = optuna.load_study(study_name=first["study"], storage=f"sqlite:///{fresh}/sweeps/{first['study']}.db")
    assert [(t.number, t.state.name, t.values, t.params) for t in study.trials] == \
        [(0, "COMPLETE", [first["best"]["value"]], first["best"]["params"])]
    # the committed record names no machine path: the tuning root is <root> in the config's comments
    assert str(root) not in (tmp_path / "record" / f"{first['study']}.json").read_text()
    assert (fresh / "sweeps" / "tuned" / f"{first['study']}.yaml").read_text() == tuned.replace(str(root), "<root>")
    assert not any(fresh.glob("**/trial_*"))  # no trial run on the new machine
    # a study stopped short of this run's budget (here: a larger budget) goes on from its record with the next trial
    more = argparse.Namespace(**{**vars(args), "budget_cpu_s": first["spent_cpu_s"] + 0.1})
    grown = bench.tune("hedgenet", tiny_root(tmp_path / "third"), tmp_path / "third" / "data" / "tiny.h5", more, extra)
    assert [t["number"] for t in grown["trials"]] == [0, 1] and key(grown["trials"][0]) == key(first["trials"][0])
    assert grown["spent_cpu_s"] > first["spent_cpu_s"]
    assert [bench.is_baseline(t) for t in grown["trials"]] == [True, False]  # the mark survives the rebuild
    # a record of another tuning (here a larger budget than this run's) is refused with the fix, never taken for this one
    other = tiny_root(tmp_path / "other")
    with pytest.raises(SystemExit, match="move the record aside"):
        bench.tune("hedgenet", other, other / "data" / "tiny.h5", argparse.Namespace(**{**vars(more), "budget_cpu_s": 0.1}),
                   extra)


def test_evaluation_rows_accumulate_in_the_record_and_are_reusable(bench, load_benchmark, tmp_path):
    """Each seed's learning_curves.py output adds its rows to the record (a rerun of a seed replaces its row), and
    the record is a learning_curves.json that --reuse takes: a seed finished on one machine is not trained again."""
    lc = load_benchmark("learning_curves")
    settings = {"epochs": 30, "val_fraction": 0.05, "phonon_supercell": [7, 7], "pool_cells": 405,
                "train_overrides": {"mace": ["variant=mace", "tuned=margins_mace_n48_e15"]}}

    def run(seed, forces):
        out = tmp_path / "learning_curves_margins_mace_n48_e15.json"
        out.write_text(json.dumps({"settings": {**settings, "seeds": [seed], "pool": str(tmp_path / "data" / "pool.h5")},
                                   "rows": [
            {"family": "mace", "n_cells": 96, "seed": seed, "epochs": 30, "forces_mae_meV_A": forces}]}))
        return out

    record = tmp_path / "record" / "margins_mace_n48_e15_rows.json"
    bench.merge_rows(record, run(0, 50.0), tmp_path)
    bench.merge_rows(record, run(1, 52.0), tmp_path)
    rows = bench.merge_rows(record, run(1, 51.0), tmp_path)  # seed 1 again: replaced, not doubled
    assert [(r["seed"], r["forces_mae_meV_A"]) for r in rows] == [(0, 50.0), (1, 51.0)]
    assert json.loads(record.read_text())["settings"]["seeds"] == [0, 1]  # the rows' seeds, not the last run's
    # a later run that reused seed 0's row (learning_curves.py marks it) leaves the record as it was
    text = record.read_text()
    reused = json.loads(run(0, 50.0).read_text())
    reused["rows"][0]["reused_from"] = str(record)
    (tmp_path / "reused.json").write_text(json.dumps(reused))
    assert bench.merge_rows(record, tmp_path / "reused.json", tmp_path) == json.loads(text)["rows"]
    assert record.read_text() == text
    # the record is committed: the run root's path is written as <root>, no machine path
    assert str(tmp_path) not in record.read_text()
    assert json.loads(record.read_text())["settings"]["pool"] == "<root>/data/pool.h5"
    rows_dir = tmp_path / "rows"
    rows_dir.mkdir()
    assert lc.reuse_rows(record, settings, rows_dir, "_e30_margins_mace_n48_e15") == 2
    assert json.loads((rows_dir / "mace_n96_seed0_e30_margins_mace_n48_e15.json").read_text())["forces_mae_meV_A"] == 50.0
    with pytest.raises(SystemExit, match="not rows of this benchmark"):  # another tuning's rows are refused
        lc.reuse_rows(record, {**settings, "train_overrides": {"mace": ["variant=mace", "tuned=other"]}}, rows_dir, "")


def test_rebuilt_study_keeps_every_recorded_value(bench, tmp_path):
    """A study rebuilt from its record and recorded again keeps each trial as it was: a pruned trial's value (its
    last intermediate value, as Optuna stores it) included, so that moving a study to a new machine loses nothing."""
    import optuna
    from optuna.distributions import FloatDistribution, distribution_to_json

    lr = {"train.optimizer.lr": distribution_to_json(FloatDistribution(1e-4, 2e-2, log=True))}
    trial = lambda n, state, value, steps: {  # noqa: E731
        "number": n, "state": state, "value": value, "params": {"train.optimizer.lr": 5e-3 / (n + 1)}, "cpu_s": 10.0 + n,
        "distributions": lr, "intermediate_values": {str(k): v for k, v in steps.items()}, "user_attrs": {}}
    saved = {"study": "margins2_hedgenet_n48_e15", "budget_cpu_s": 30.0, "spent_cpu_s": 33.0, "tune_subset": "sub.h5",
             "launches": [{"trials": [n], "cpu_s": 10.0 + n} for n in range(3)],
             "trials": [trial(0, "COMPLETE", 63.8, {0: 90.0, 1: 63.8}), trial(1, "PRUNED", 445.6, {0: 445.6}),
                        trial(2, "FAIL", None, {})]}
    record = tmp_path / "record.json"
    record.write_text(json.dumps(saved))
    (tmp_path / "sweeps").mkdir()
    storage = f"sqlite:///{tmp_path}/sweeps/study.db"
    args = argparse.Namespace(budget_cpu_s=30.0)
    bench.rebuild(record, tmp_path, tmp_path / "sub.h5", args, storage, tmp_path / "ledger.json")
    study = optuna.load_study(study_name=saved["study"], storage=storage)
    again = bench.study_record(study, bench.load_ledger(tmp_path / "ledger.json"), args, tmp_path / "sub.h5")
    assert [(t["number"], t["state"], t["value"], t["cpu_s"]) for t in again["trials"]] == \
        [(0, "COMPLETE", 63.8, 10.0), (1, "PRUNED", 445.6, 11.0), (2, "FAIL", None, 12.0)]
    assert again["best"]["number"] == 0 and again["spent_cpu_s"] == 33.0
