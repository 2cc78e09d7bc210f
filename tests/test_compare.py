"""experiment=compare_baselines and hedgenet-compare on real tiny runs: HedgeNet and its homogeneous
ablation (relations=single), 2 seeds each, one split; the table, phonons against the reference, the HTML
page in headless Chromium, and clear errors for empty or mixed directories."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from browser import render
from cli_runner import TINY_TRAIN, run_cli, run_module, run_sweep

PHONONS = ["--phonon-supercell", "4", "4", "--phonon-npoints", "5"]
ARMS = {"hedgenet_small (intra_inter)": "hedgenet", "hedgenet_small (single)": "hedgenet_single"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compare_root")


@pytest.fixture(scope="module")
def multirun(root, tiny_dataset) -> Path:
    return run_sweep("hedgenet-train", root, "compare", [
        "experiment=compare_baselines", "variant=hedgenet,hedgenet_single", "seed=0,1",
        f"data.paths=[{tiny_dataset}]", f"data.test_paths=[{tiny_dataset}]", *TINY_TRAIN])[1]


def run_dir(multirun: Path, variant: str, seed: int) -> Path:
    (found,) = multirun.glob(f"[0-9]*_{variant}_seed{seed}")  # <job number>_<variant>_seed<seed>
    return found


def compare(root: Path, runs: Path, *args: str, check: bool = True):
    return run_module("hedgenet.cli.compare", root, [str(runs), *args], check=check)


@pytest.fixture(scope="module")
def report(root, multirun) -> Path:
    proc = compare(root, multirun, *PHONONS)
    assert "computing reference phonons" in proc.stdout
    return multirun / "compare"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_multirun_shares_one_split_and_tags_wandb_runs(multirun):
    runs = {f"{v}_seed{s}": run_dir(multirun, v, s) for v in ARMS.values() for s in (0, 1)}
    assert len([p for p in multirun.iterdir() if p.is_dir()]) == 4
    splits = {(r / "split.json").read_text() for r in runs.values()}
    assert len(splits) == 1  # data.split_seed is fixed; seed only changes initialisation and batch order
    m0, m1 = (json.loads((runs[f"hedgenet_seed{s}"] / "metrics.json").read_text()) for s in (0, 1))
    assert m0["val/forces_mae"] != m1["val/forces_mae"]
    run = runs["hedgenet_single_seed1"]
    (record,) = run.glob("wandb/offline-run-*/run-*.wandb")
    data = record.read_bytes()

    def field(number: int, text: str) -> bytes:  # a protobuf string field of W&B's RunRecord
        return bytes([number << 3 | 2, len(text)]) + text.encode()

    assert field(6, "compare_baselines_ab_bilayer_graphene") in data  # group
    for tag in ("compare_baselines", "model:hedgenet_small", "relations:single", "seed:1",
                "material:ab_bilayer_graphene"):
        assert field(10, tag) in data, tag  # tags


def test_table_from_real_runs(multirun, report):
    rows = {r["arm"]: r for r in read_csv(report / "comparison.csv")}
    assert set(rows) == set(ARMS)
    for arm, variant in ARMS.items():
        row = rows[arm]
        assert row["split"] == "test" and row["seeds"] == "0 1"
        metrics = [json.loads((run_dir(multirun, variant, s) / "metrics.json").read_text()) for s in (0, 1)]
        for key, metric, scale in (("forces_mae", "test/forces_mae", 1), ("H_inter_mae", "test/H_inter_mae", 1),
                                   ("bands_mae", "test/bands_mae", 1), ("train_time_s", "train_time_s", 1),
                                   ("inference_ms", "inference_time_s_per_structure", 1e3)):
            values = [scale * m[metric] for m in metrics]
            assert float(row[f"{key}_mean"]) == pytest.approx(np.mean(values), rel=1e-9), key
            assert float(row[f"{key}_std"]) == pytest.approx(np.std(values, ddof=1), rel=1e-9), key
            assert row[f"{key}_n"] == "2"
        assert float(row["n_parameters_mean"]) == metrics[0]["n_parameters"]
        assert float(row["phonon_mae_THz_mean"]) > 0 and row["vf_mae_1e5_m_s_n"] == "0"
    assert rows["hedgenet_small (single)"]["n_parameters_mean"] != rows["hedgenet_small (intra_inter)"]["n_parameters_mean"]
    md = (report / "comparison.md").read_text()
    assert "| hedgenet_small (single) | 0,1 |" in md and "held-out test set" in md and "—" in md
    # the paper's margin, 100·(ours/theirs − 1) %: negative when HedgeNet's error is lower
    margin = re.search(r"phonon MAE, hedgenet_small \(intra_inter\) vs hedgenet_small \(single\): ([+-][\d.]+) %", md)
    ours, theirs = (float(rows[a]["phonon_mae_THz_mean"]) for a in ARMS)
    assert float(margin.group(1)) == pytest.approx(100 * (ours / theirs - 1), abs=0.051)
    assert len(read_csv(report / "runs.csv")) == 4


def test_reference_phonons_are_physical_and_cached(root, multirun, report):
    from hedgenet.physics.comparison import PhononSettings, phonon_cell, reference_phonons
    from hedgenet.report.runs import read_run

    run = read_run(run_dir(multirun, "hedgenet", 0))
    settings = PhononSettings(supercell=(4, 4), npoints=5)
    reference, unit, supercell = phonon_cell(run.config, settings, root / ".cache" / "hedgenet")
    caches = sorted((root / ".cache" / "hedgenet" / "force_constants").glob("*.npz"))
    mtimes, said = [c.stat().st_mtime_ns for c in caches], []
    again = reference_phonons(run.config["material"], reference, unit, supercell, settings, root / ".cache" / "hedgenet",
                              said.append)
    assert "from the cache" in said[0]  # the report's run computed the force constants; nothing recomputed
    assert sorted((root / ".cache" / "hedgenet" / "force_constants").glob("*.npz")) == caches
    assert [c.stat().st_mtime_ns for c in caches] == mtimes
    f = again["frequencies_THz"]
    assert np.sort(np.abs(f[0]))[:3].max() < 0.05  # acoustic modes vanish at Γ (sum rule imposed)
    assert 40 < f.max() < 52  # graphene's optical branch (GFN1-xTB E2g ≈ 45 THz)


@pytest.fixture(scope="module")
def phonon_runs(root, multirun):
    cell = ["phonons.supercell=[4,4]", "phonons.npoints=5", "+material.params.a=2.458", "+material.params.d=3.32",
            "material.relax=[]"]
    _, ref = run_cli("hedgenet-phonons", root, "xtb_phonons", cell)
    _, model = run_cli("hedgenet-phonons", root, "model_phonons",
                       [*cell, "calculator=model", f"model_path={run_dir(multirun, 'hedgenet', 1)}/model.pt", f"compare_with={ref}"])
    return ref, model


def test_phonon_mae_matches_hedgenet_phonons(phonon_runs, report):
    """The same model and cell through hedgenet-phonons (compare_with the reference run) gives the same MAE."""
    summary = json.loads((phonon_runs[1] / "summary.json").read_text())
    row = next(r for r in read_csv(report / "runs.csv") if r["arm"] == "hedgenet_small (intra_inter)" and r["seed"] == "1")
    assert float(row["phonon_mae_THz"]) == pytest.approx(summary["frequency_mae_vs_compare_THz"], rel=1e-6)


def test_html_report_renders_in_headless_chromium(report, tmp_path):
    dom, console = render(report / "comparison.html", tmp_path / "profile")
    n_images = dom.count("<img")
    assert n_images >= 6  # error bars, phonon bands, parity forces and H of both arms
    assert f'data-images-loaded="{n_images}/{n_images}"' in dom and 'data-render-errors="0"' in dom
    assert console == [], console
    assert "hedgenet_small (single)" in dom and "<table>" in dom
    page = (report / "comparison.html").read_text()
    assert not re.search(r'(src|href)="(?!data:)', page)  # self-contained: every image is a data URI
    # the check itself catches a broken page (script error, undecodable image)
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("</body>", '<img src="data:image/png;base64,AAAA"><script>noSuchFunction();</script></body>'))
    dom, console = render(broken, tmp_path / "profile2")
    assert any("noSuchFunction" in line for line in console)
    assert f'data-images-loaded="{n_images}/{n_images + 1}"' in dom and 'data-render-errors="2"' in dom


def test_empty_directory_fails_clearly(root, tmp_path):
    proc = compare(root, tmp_path, check=False)
    assert proc.returncode == 2 and "no runs in" in proc.stderr and "Fix:" in proc.stderr, proc.stderr[-1000:]


def _copy_runs(multirun: Path, dest: Path) -> Path:
    for run in multirun.iterdir():
        if (run / "resolved_config.yaml").exists():
            shutil.copytree(run, dest / run.name, ignore=shutil.ignore_patterns("wandb", "checkpoints"))
    return dest


@pytest.fixture(scope="module")
def odd_runs(root, tiny_dataset) -> dict[str, Path]:
    """Real runs that do not belong in the comparison: another learning rate (same split), another split,
    a failure. The first two are one multirun (one start-up)."""
    _, multi = run_sweep("hedgenet-train", root, "odd", [
        f"data.paths=[{tiny_dataset}]", f"data.test_paths=[{tiny_dataset}]", *TINY_TRAIN, "seed=5",
        "train.optimizer.lr=0.001", "data.split_seed=0,1", "hydra.sweep.subdir=split${data.split_seed}"])
    proc, failed = run_cli("hedgenet-train", root, "failed", ["data.paths=[/nonexistent.h5]"], check=False)
    assert proc.returncode == 2
    return {"lr": multi / "split0", "split": multi / "split1", "failed": failed}


@pytest.mark.parametrize(
    ("odd", "expected"),
    [
        ("split", ["different data or splits", "data.split_seed", "Fix:"]),
        ("lr", ["not only in their seed", "train.optimizer.lr", "Fix:"]),
        ("failed", ["It failed: DatasetError", "Fix: rerun it"]),
        ("phonons", ["hedgenet-phonons run, not a hedgenet-train run", "Fix:"]),
    ],
)
def test_mixed_directory_fails_clearly(root, multirun, odd_runs, phonon_runs, tmp_path, odd, expected):
    mixed = _copy_runs(multirun, tmp_path / "mixed")
    odd_dir = phonon_runs[0] if odd == "phonons" else odd_runs[odd]
    shutil.copytree(odd_dir, mixed / f"odd_{odd}", ignore=shutil.ignore_patterns("wandb", "checkpoints"))
    proc = compare(root, mixed, "--phonons", "off", check=False)
    assert proc.returncode == 2, proc.stdout[-1000:]
    for text in expected:
        assert text in proc.stderr, proc.stderr[-1500:]
    assert not (mixed / "compare").exists()


@pytest.mark.slow
def test_fermi_velocity_error_column(root, multirun, tmp_path):
    """v_F(T) of one model against a reference run (same settings): the column is their MAE over T. The
    model is barely trained: this checks the bookkeeping (an untrained model may have no states near K, so
    the run is the one seed known to give a fit; the numbers are deterministic)."""
    fv = ["fermi_velocity.supercell=[4,4]", "reference.block_cutoff=3.5", "sampler.n_samples=4",
          "fermi_velocity.temperatures_K=[0,300]", "fermi_velocity.n_bootstrap=10", "fermi_velocity.n_q=5",
          "progress=false", "+material.params.a=2.458", "+material.params.d=3.32", "material.relax=[]",
          # the barely trained model has imaginary modes that would stop its run; both runs share the setting
          "sampler.imaginary_threshold_THz=null"]
    _, ref = run_cli("hedgenet-fermi-velocity", root, "fv/xtb", fv)
    _, model = run_cli("hedgenet-fermi-velocity", root, "fv/model",
                       [*fv, "calculator=model", f"model_path={run_dir(multirun, 'hedgenet', 0)}/model.pt"])
    compare(root, multirun, "--phonons", "off", "--fermi-velocity", str(root / "runs" / "fv"), "--out", str(tmp_path))
    a, b = (json.loads((d / "summary.json").read_text())["by_temperature"]["all"] for d in (model, ref))
    expected = np.mean([abs(a[T]["v0_1e5_m_s"] - b[T]["v0_1e5_m_s"]) for T in ("0.0", "300.0")])
    rows = read_csv(tmp_path / "runs.csv")
    got = {(r["arm"], r["seed"]): r["vf_mae_1e5_m_s"] for r in rows}
    assert float(got[("hedgenet_small (intra_inter)", "0")]) == pytest.approx(expected, rel=1e-9)
    assert sum(v != "" for v in got.values()) == 1
    assert (tmp_path / "ab_bilayer_graphene" / "fermi_velocity.png").exists()
