"""hedgenet-pipeline end to end at a CI-sized setting (4×4 AB bilayer, 14 cells, 25 epochs): killed during
training and rerun (the label stage is reused, training resumes), the report's files and numbers, model
phonons against the reference's for this small trained case, a rerun with another sampler that only
reruns the Monte Carlo stage, and the pipeline's input errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from browser import render
from cli_runner import BIN, untrained_model

TINY = [
    "reference_stages=[phonons]",
    "overrides.label.dataset.supercell=[4,4]", "overrides.label.dataset.n_workers=1",
    "overrides.common.reference.block_cutoff=4.0",  # the one place the pipeline's block cutoff is stated
    "overrides.label.dataset.rattle.n_per_amplitude=3", "overrides.label.dataset.thermal.n_per_temperature=0",
    # six rigid-layer cells (interlayer distance ± 0.1 Å, slides ± 0.05 Å) instead of the default twenty
    "+overrides.label.dataset.rigid.shifts_A=[[0.0,0.0,-0.1],[0.0,0.0,0.1],[0.05,0.0,0.0],[-0.05,0.0,0.0],"
    "[0.0,0.05,0.0],[0.0,-0.05,0.0]]",
    "+overrides.label.dataset.strain.strains=[[0.01,0.01,0.0],[-0.01,-0.01,0.0]]",  # two strained cells, not four
    "overrides.train.train.max_epochs=25",
    "overrides.phonons.phonons.supercell=[4,4]", "+overrides.phonons.phonons.npoints=11",
    "overrides.epi.epi.supercell=[4,4]",
    "overrides.fermi_velocity.fermi_velocity.supercell=[4,4]",
    "overrides.fermi_velocity.fermi_velocity.temperatures_K=[0,300]",
    "+overrides.fermi_velocity.sampler.n_samples=4", "overrides.fermi_velocity.fermi_velocity.n_bootstrap=10",
]


def pipeline(root: Path, name: str, args, **kw):
    env = {**os.environ, "HEDGENET_ROOT": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = [str(BIN / "hedgenet-pipeline"), *args, f"hydra.run.dir={root}/runs/{name}"]
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw), root / "runs" / name


def finish(proc, timeout=1200) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def stage_dirs(root: Path, stage: str) -> list[Path]:
    return sorted((root / "outputs" / "pipeline" / "stages" / stage).glob("*"))


def test_pipeline_end_to_end_with_kill_resume_and_cache(tmp_path):
    # 1. kill the whole pipeline (process group) while it trains
    proc, _ = pipeline(tmp_path, "first", TINY)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        train = stage_dirs(tmp_path, "train")
        if train and (train[0] / "checkpoints" / "last.ckpt").exists():  # resumable: last.ckpt, not only a best one
            break
        time.sleep(1)
    assert proc.poll() is None, finish(proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    label_done = stage_dirs(tmp_path, "label")[0] / "stage_done.json"
    assert label_done.exists()
    assert not (stage_dirs(tmp_path, "train")[0] / "stage_done.json").exists()
    stamp = label_done.stat().st_mtime

    # 2. rerun the same command: label is reused, training resumes from its checkpoint, all stages finish
    proc, run_dir = pipeline(tmp_path, "second", TINY)
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "label: cached" in out
    assert label_done.stat().st_mtime == stamp
    assert "resuming from" in (stage_dirs(tmp_path, "train")[0] / "stage.log").read_text()  # train.resume=auto
    for f in ("report.md", "report.html", "headline.json", "stages.json", "resolved_config.yaml"):
        assert (run_dir / f).exists(), f
    html = (run_dir / "report.html").read_text()
    n_images = html.count('src="data:image/png;base64,')
    assert n_images >= 4  # phonon bands, couplings, v_F(T), A(k, E) (+ training)
    dom, console = render(run_dir / "report.html", tmp_path / "profile")  # headless Chromium
    assert f'data-images-loaded="{n_images}/{n_images}"' in dom and 'data-render-errors="0"' in dom
    assert console == [], console
    summary = json.loads((run_dir / "summary.json").read_text())
    headline = summary["headline"]
    numbers = [x for v in headline.values() for x in (v.values() if isinstance(v, dict) else [v])]
    assert all(math.isfinite(x) for x in numbers)
    assert 1.0 < headline["v0_static_1e5_m_s"] < 20.0  # a Fermi velocity, in 10⁵ m/s (graphene ~8)
    for mode in ("gamma_shear_THz", "gamma_breathing_THz"):  # Γ interlayer modes, model beside reference
        assert set(headline[mode]) == {"model", "reference"}
    breathing = headline["gamma_breathing_THz"]
    assert breathing["reference"] > 0.5  # xTB's layer breathing mode is real (~2 THz)
    # interlayer physics learned: with the rigid-layer cells and the layer net-force loss the model's breathing
    # mode is real and near the reference's (measured 2.01 vs 2.16 THz; without them −3.56 THz, imaginary)
    assert 0.7 * breathing["reference"] < breathing["model"] < 1.3 * breathing["reference"], breathing
    # and the shear mode, whose restoring force (~0.1 meV/Å per atom at 0.03 Å) needs the interlayer registry
    # and the in-plane layer loss: measured 0.31 vs 0.39 THz on these six rigid cells and 4×4 cells
    shear = headline["gamma_shear_THz"]
    assert 0.5 * shear["reference"] < shear["model"] < 2.0 * shear["reference"], shear
    assert "coupling_sum_ratio" not in headline  # this run has no reference couplings (reference_stages=[phonons])
    ph = json.loads((Path(summary["stages"]["phonons_model"]) / "summary.json").read_text())
    assert ph["asr_violation_after_eV_A2"] < 1e-8  # acoustic sum rule after enforcement
    ref = json.loads((Path(summary["stages"]["phonons_reference"]) / "summary.json").read_text())
    assert 30.0 < ref["max_frequency_THz"] < 60.0  # graphene's optical branch (~47 THz)
    # the trained small model against the reference. Measured (MAE, E2g vs reference): 25 epochs on 6 rattles,
    # 6 rigid and 2 strained cells (this setting) 1.49 THz, −2.7 %, shear 0.31 vs 0.39 THz, breathing 2.01 vs
    # 2.16 THz; with 3 thermal cells more and 30 epochs 0.75 THz, −1.4 %, 0.39 / 2.09 THz at 1.5× the training
    # time; 3 epochs: 7.3 THz.
    assert ph["frequency_mae_vs_compare_THz"] < 2.0
    assert ph["max_frequency_THz"] == pytest.approx(ref["max_frequency_THz"], rel=0.05)
    fv = json.loads((Path(summary["stages"]["fermi_velocity_model"]) / "summary.json").read_text())
    assert set(fv["by_temperature"]) == {"first", "second", "all"}  # the default orders
    # the trained model's own uncertainty (stored by the train stage) is the physics stages' trust signal
    trust = fv["trust"]
    assert "last-layer" in trust["source"] and trust["calibrated"] and trust["H"]["n_evaluations"] >= 2
    assert trust["H"]["threshold"] > 0 and (trust["H"]["max"] > trust["H"]["threshold"]) == trust["H"]["exceeds"]
    assert ph["trust"]["forces"]["n_evaluations"] >= 1
    assert headline["trust_H_spread_max_meV"]["spread"] == pytest.approx(1e3 * trust["H"]["max"])

    # 3. another sampler: only the Monte Carlo stage runs again
    proc, _ = pipeline(tmp_path, "third", TINY + ["overrides.fermi_velocity.sampler=sdm"])
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    for stage in ("label", "train", "phonons_reference", "phonons_model", "epi_model"):
        assert f"{stage}: cached" in out, stage
    assert "fermi_velocity_model: running" in out
    assert len(stage_dirs(tmp_path, "fermi_velocity_model")) == 2


@pytest.mark.parametrize("args, message", [
    (["material=graphite_xyz"], "material"),
    (["overrides.fermi_velocity.fermi_velocity.temperatures_K=[]"], "temperature list is empty"),
    (["+overrides.fermi_velocity.fermi_velocity.fixed_energy_eV=1.5"], "0 < fixed_energy_eV < window_eV"),
    (["stages=[label,phonons]"], "need a model"),
    (["stages=[label,relax]"], "stages ['relax'] unknown"),
    (["stages=[label,train,active,phonons]"], "both `train` and `active`"),
    (["stages=[active,phonons]"], "the active stage needs the label stage"),
    (["overrides.label.dataset.supercell=[3,3]"], "too narrow for reference.block_cutoff=5"),
])
def test_pipeline_input_errors_are_clear_and_nothing_runs(tmp_path, args, message):
    proc, _ = pipeline(tmp_path, "err", args)
    out = finish(proc, 300)
    assert proc.returncode != 0
    assert message in out, out[-2000:]
    assert not (tmp_path / "outputs" / "pipeline" / "stages").exists()  # failed before any stage


def test_model_trained_on_other_elements_is_refused(tmp_path):
    model = untrained_model(tmp_path / "carbon_model.pt")
    proc, _ = pipeline(tmp_path, "err", ["material=bilayer_hbn", f"model_path={model}",
                                         "stages=[phonons]", "reference_stages=[]"])
    out = finish(proc, 300)
    assert proc.returncode == 2
    assert "the model knows elements ['C']" in out and "Fix: train on data of this material" in out


@pytest.mark.parametrize("experiment", ["ab_bilayer_graphene", "twisted_bilayer_graphene", "bilayer_hbn",
                                        "bilayer_mos2"])
def test_every_experiment_composes_into_a_plan(tmp_path, experiment):
    proc, run_dir = pipeline(tmp_path, experiment, [f"experiment={experiment}", "dry_run=true"])
    out = finish(proc, 300)
    assert proc.returncode == 0, out[-2000:]
    plan = json.loads((run_dir / "stages.json").read_text())
    assert [p["stage"] for p in plan][:2] == ["label", "train"]
    assert all(not p["cached"] and len(p["hash"]) == 16 for p in plan)


def test_active_learning_stage_plan():
    """stages=[label,active,...]: the label stage's cells are the seed set, the pool file is the stage's own,
    every round trains with the train stage's recipe, and the physics stages use the active stage's committee."""
    from hydra import compose, initialize_config_dir

    from hedgenet.config import config_dir
    from hedgenet.pipeline.stages import plan

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="pipeline"):
        cfg = compose("pipeline", ["stages=[label,active,phonons]", "overrides.train.train.max_epochs=7"])
    stages = {s.name: s for s in plan(cfg, {"material": "ab_bilayer_graphene", "reference": "xtb"})}
    assert list(stages) == ["label", "active", "phonons_reference", "phonons_model"]
    active = stages["active"]
    assert active.depends == ("label",)
    assert active.links == {"seed_data": ("label", "dataset.h5"), "pool.path": ("active", "pool.h5")}
    assert {"++train.train.max_epochs=7", "++train.model=hedgenet_small", "++train.trainer.precision=32-true"} <= set(
        active.overrides)  # the train stage's recipe, for every round's committee
    assert stages["phonons_model"].links["model_path"] == ("active", "committee.json")
    assert stages["phonons_model"].depends[0] == "active"
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="pipeline"):
        cfg = compose("pipeline", ["stages=[label,active,phonons]", "+overrides.active.active.committee_size=1"])
    stages = {s.name: s for s in plan(cfg, {"material": "ab_bilayer_graphene", "reference": "xtb"})}
    assert stages["active"].outputs == ("model.pt", "summary.json")  # one model per round: the result is model.pt
    assert stages["phonons_model"].links["model_path"] == ("active", "model.pt")


def test_a_committee_in_the_train_stage_is_the_physics_stages_model():
    """overrides.train.committee.size=K: the train stage is done when its committee.json and summary.json exist,
    and the physics stages use the committee."""
    from hydra import compose, initialize_config_dir

    from hedgenet.config import config_dir
    from hedgenet.pipeline.stages import plan

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="pipeline"):
        cfg = compose("pipeline", ["+overrides.train.committee.size=3"])
    stages = {s.name: s for s in plan(cfg, {"material": "ab_bilayer_graphene", "reference": "xtb"})}
    assert stages["train"].outputs == ("committee.json", "summary.json")
    assert "committee.size=3" in stages["train"].overrides
    for name in ("phonons_model", "epi_model", "fermi_velocity_model"):
        assert stages[name].links["model_path"] == ("train", "committee.json"), name


def test_the_train_stage_takes_keys_of_the_open_sections():
    """overrides.train.train.scheduler.anneal_epochs (a key conf/train.yaml does not list, in the scheduler's open
    section) reaches the train stage's composed config; a misspelt key of a closed section still fails there."""
    from hydra import compose, initialize_config_dir

    from hedgenet.config import ConfigError, config_dir
    from hedgenet.pipeline.stages import compose_stage, plan

    extra = ["++overrides.train.train.scheduler.name=anneal", "++overrides.train.train.scheduler.anneal_epochs=10"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="pipeline"):
        cfg = compose("pipeline", ["stages=[label,train]", *extra])
        train = {s.name: s for s in plan(cfg, {"material": "ab_bilayer_graphene", "reference": "xtb"})}["train"]
        assert "++train.scheduler.anneal_epochs=10" in train.overrides
        scheduler = compose_stage(train)["train"]["scheduler"]
        assert scheduler["name"] == "anneal" and scheduler["anneal_epochs"] == 10 and scheduler["patience"] == 4
        cfg = compose("pipeline", ["stages=[label,train]", "++overrides.train.train.max_epoch=3"])
        train = {s.name: s for s in plan(cfg, {"material": "ab_bilayer_graphene", "reference": "xtb"})}["train"]
        with pytest.raises(ConfigError, match="stage train: its config does not compose"):
            compose_stage(train)
