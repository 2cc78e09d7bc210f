"""The learning-curves benchmark's pure parts (no training): nested subsets, subset files, the table and the
figure from a rows JSON, and hedgenet-compare's learning-curves section; and its runner resuming a killed training
(a one-epoch tiny model)."""

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("learning_curves")


def test_nested_subsets_are_nested_seeded_and_sorted(bench):
    ids = list(range(100, 160))
    sub = bench.nested_subsets(ids, [4, 12, 48, 60], seed=0)
    assert {n: len(s) for n, s in sub.items()} == {4: 4, 12: 12, 48: 48, 60: 60}
    assert set(sub[4]) <= set(sub[12]) <= set(sub[48]) <= set(sub[60]) == set(ids)
    assert all(s == sorted(s) for s in sub.values())
    assert sub == bench.nested_subsets(list(reversed(ids)), [4, 12, 48, 60], seed=0)  # order of ids irrelevant
    assert bench.nested_subsets(ids, [12], seed=1)[12] != sub[12]
    assert bench.nested_subsets(ids, [12], seed=0)[12] == sub[12]  # one size alone (--pool-cells): the same cells
    with pytest.raises(ValueError, match="pool of 60"):
        bench.nested_subsets(ids, [61], seed=0)


def test_pool_holds_the_largest_size(bench):
    for n in (4, 24, 48, 49, 100, 192, 300):
        scale = bench.pool_scale(n)
        assert bench.RECIPE_UNIT["cells"] * scale + bench.RECIPE_UNIT["fixed_cells"] >= n
    assert bench.pool_scale(192) == 7  # 42 rattles per amplitude, 28 thermal samples per temperature


def test_subset_file_keeps_only_its_samples(bench, tiny_dataset, tmp_path):
    from hedgenet.data.store import DatasetStore

    ids = DatasetStore(tiny_dataset).ids()
    keep = ids[::2]
    out = bench.write_subset(Path(tiny_dataset), tmp_path / "sub.h5", keep)
    assert DatasetStore(out).ids() == keep
    assert DatasetStore(tiny_dataset).ids() == ids  # the pool is untouched
    assert bench.write_subset(Path(tiny_dataset), out, keep) == out  # reused


def rows_json(path: Path) -> Path:
    rows = []
    for family, h in (("hedgenet", True), ("mace", False)):
        for n in (12, 24, 48):
            for seed in (0, 1):
                err = 100.0 * (12 / n) ** 0.5 * (1 + 0.1 * seed)
                rows.append({"family": family, "n_cells": n, "n_train": n - 1, "seed": seed,
                             "forces_mae_meV_A": err, "H_mae_meV": err / 10 if h else None,
                             "phonon_mae_THz": err / 100, "gamma_shear_THz": 0.9, "gamma_breathing_THz": 2.5,
                             "train_cpu_s": 10.0 * n, "phonons_cpu_s": 5.0})
    path.write_text(json.dumps({"settings": {"epochs": 30, "phonon_supercell": [7, 7]},
                                "reference": {"gamma_shear_THz": 0.95, "gamma_breathing_THz": 2.6}, "rows": rows}))
    return path


def test_table_and_plot_from_rows(tmp_path):
    from hedgenet.report import learning_curves as lc

    data = lc.load(rows_json(tmp_path / "lc.json"))
    header, rows = lc.table(data)
    assert header[:3] == ["family", "cells (train)", "seeds"] and "force MAE (meV/Å)" in header
    assert [r[:3] for r in rows[:3]] == [["hedgenet", "12 (11)", "0,1"], ["hedgenet", "24 (23)", "0,1"],
                                         ["hedgenet", "48 (47)", "0,1"]]
    assert rows[0][3] == "105 ± 7"  # mean ± std (ddof 1) of 100 and 110 meV/Å
    h = header.index("H MAE (meV)")
    assert rows[0][h] == "10.5 ± 0.7" and rows[3][h] == "—"  # MACE has no Hamiltonian head
    assert rows[-1][0] == "reference (xTB)" and rows[-1][header.index("Γ shear (THz)")] == "0.950"
    png = lc.plot(data, tmp_path / "lc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lc.plot({"rows": [{"family": "x", "n_cells": 4, "seed": 0}]}, tmp_path / "none.png") is None


def test_compare_shows_learning_curves(tmp_path, capsys):
    from hedgenet.cli.compare import main

    main(["--learning-curves", str(rows_json(tmp_path / "lc.json")), "--out", str(tmp_path / "report")])
    md = (tmp_path / "report" / "comparison.md").read_text()
    assert "## Learning curves" in md and "| hedgenet | 12 (11) | 0,1 |" in md
    assert "![" in md and (tmp_path / "report" / "learning_curves.png").exists()
    assert "Learning curves" in (tmp_path / "report" / "comparison.html").read_text()
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(SystemExit):
        main(["--learning-curves", str(tmp_path / "bad.json"), "--out", str(tmp_path / "r2")])
    assert "not a learning-curves JSON" in capsys.readouterr().err


def test_rows_of_an_earlier_run_are_reused_only_with_the_same_settings(bench, tmp_path):
    """--reuse: the finished rows of a learning_curves.json from another machine count as done (and an existing
    row is kept), but not when the settings differ (another epoch count, pool, phonon cell or recipe)."""
    settings = {"epochs": 30, "val_fraction": 0.05, "phonon_supercell": [7, 7], "pool_cells": 192,
                "train_overrides": {"hedgenet": ["variant=hedgenet"], "mace": ["variant=mace"]}}
    rows = [{"family": f, "n_cells": n, "seed": 0, "epochs": 30, "forces_mae_meV_A": 1.0 * n}
            for f in ("hedgenet", "mace") for n in (12, 24)]
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"settings": {**settings, "train_overrides": {"hedgenet": ["variant=hedgenet"]},
                                                "command": "x"}, "rows": rows}))
    rows_dir = tmp_path / "rows"
    rows_dir.mkdir()
    (rows_dir / "hedgenet_n12_seed0_e30.json").write_text(json.dumps({"kept": True}))
    assert bench.reuse_rows(earlier, settings, rows_dir, "_e30") == 3
    assert json.loads((rows_dir / "hedgenet_n12_seed0_e30.json").read_text()) == {"kept": True}
    assert json.loads((rows_dir / "mace_n24_seed0_e30.json").read_text())["forces_mae_meV_A"] == 24.0
    for key, other in (("epochs", 60), ("pool_cells", 96), ("phonon_supercell", [5, 5]),
                       ("train_overrides", {"hedgenet": ["variant=hedgenet", "train.optimizer.lr=0.01"]})):
        with pytest.raises(SystemExit, match=key):
            bench.reuse_rows(earlier, {**settings, key: other}, rows_dir, "_e30")


def test_a_killed_training_resumes_from_its_last_checkpoint(bench, tiny_root, tmp_path):
    """The benchmarks' runner (learning curves, active learning, v_F convergence): a training run directory with a
    checkpoint and no summary (killed) continues from its last epoch, not from scratch."""
    import torch
    from cli_runner import TINY_TRAIN

    root = tiny_root(tmp_path / "root")
    run = tmp_path / "runs" / "train_tiny"
    args = [f"data.paths=[{root}/data/tiny.h5]", *TINY_TRAIN, "logger=csv", "train.ema_decay=null"]
    bench.cli("train", root, run, *args)  # one epoch
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    (run / "summary.json").unlink()  # as if killed after the first epoch
    bench.cli("train", root, run, *args, "train.max_epochs=2")
    log = (run.parent / "train_tiny.log").read_text()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1], log[-2000:]  # epoch 0 is not trained again
    assert first["epoch"] == 0 and torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1


def test_a_training_whose_caller_is_killed_still_finishes_and_saves(bench, tiny_root, tmp_path):
    """The runner (the pipeline's run_logged) hands the training a log file, not a pipe: the benchmark that started
    it killed outright (SIGKILL, a session's end) leaves the training to finish its epochs and write its model and
    summary. (A SIGTERM is forwarded instead: the training stops at a resumable checkpoint.)"""
    import os
    import signal
    import subprocess
    import sys
    import time

    from cli_runner import TINY_TRAIN

    root = tiny_root(tmp_path / "root")
    run = tmp_path / "runs" / "train_tiny"
    args = [f"data.paths=[{root}/data/tiny.h5]", *TINY_TRAIN, "logger=csv", "train.ema_decay=null",
            "train.max_epochs=12"]
    code = (f"import sys; sys.path.insert(0, {str(Path(bench.__file__).parent)!r}); "
            "from pathlib import Path; from interlayer_ablation import cli; "
            f"cli('train', Path({str(root)!r}), Path({str(run)!r}), *{args!r})")
    caller = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.time() + 300
    while not (run / "history.jsonl").exists() and caller.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.kill(caller.pid, signal.SIGKILL)  # the caller only: its training is orphaned mid-run
    caller.wait()
    assert not (run / "summary.json").exists(), "the training finished before its caller was killed: nothing tested"
    while not (run / "summary.json").exists() and time.time() < deadline:
        time.sleep(0.5)
    log = (run.parent / "train_tiny.log").read_text()
    assert (run / "summary.json").exists() and (run / "model.pt").exists(), log[-2000:]
    assert json.loads((run / "summary.json").read_text())["epochs_trained"] == 12


def test_a_finished_training_asked_for_more_epochs_is_not_reused(load_benchmark, tmp_path):
    """The benchmarks' runner reuses a finished run only for the epochs it was trained for: a finished 30-epoch run
    directory copied under a 44-epoch run's name (or rerun with more epochs) continues instead of being evaluated
    as is."""
    finished = load_benchmark("interlayer_ablation").finished
    run = tmp_path / "train_x"
    assert not finished("train", run, ["train.max_epochs=30"])  # nothing there yet
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"epochs": 30, "epochs_trained": 27}))  # early-stopped at 27
    assert finished("train", run, ["seed=0", "train.max_epochs=30"])
    assert not finished("train", run, ["seed=0", "train.max_epochs=44"])
    assert finished("train", run, ["seed=0"])  # no epochs asked: any finished run
    assert finished("phonons", run, ["train.max_epochs=44"])  # only trainings have epochs
    (run / "summary.json").write_text(json.dumps({"epochs_trained": 30}))  # a summary older than the field
    assert finished("train", run, ["train.max_epochs=44"])
