"""Config schemas (hedgenet.config_schema): unknown keys and wrong types refused with a hint, open sections
(trainer, callbacks) reaching Lightning, and settings stated once (block cutoff, temperatures)."""

from __future__ import annotations

import pytest
import torch
import yaml
from cli_runner import TINY_TRAIN, run_cli
from hydra import compose, initialize_config_dir

from hedgenet.config import ConfigError, check_config, config_dir


def _refused(proc, *expected):
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert "Traceback" not in out and "Fix:" in out, out[-2000:]
    for e in expected:
        assert e in out, out[-2000:]


def test_trainer_and_callbacks_come_from_config(tiny_dataset, tmp_path):
    # 2 training samples, one per batch: accumulating 2 batches makes one optimizer step in the epoch
    _, run = run_cli("hedgenet-train", tmp_path, "accumulate", [
        f"data.paths=[{tiny_dataset}]", *TINY_TRAIN, "data.batch_size=1", "+trainer.accumulate_grad_batches=2",
        "callbacks=early_stopping", "logger=none"])
    resolved = yaml.safe_load((run / "resolved_config.yaml").read_text())
    assert resolved["trainer"]["_target_"] == "lightning.Trainer"
    assert resolved["trainer"]["accumulate_grad_batches"] == 2
    assert set(resolved["callbacks"]) == {"model_checkpoint", "history", "early_stopping"}
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 1  # 2 batches, accumulated
    assert any(k.startswith("EarlyStopping") for k in ckpt["callbacks"]), list(ckpt["callbacks"])
    assert (run / "history.jsonl").exists() and (run / "model.pt").exists()


@pytest.mark.parametrize("args,expected", [
    (["train.max_epoch=3"], "did you mean train.max_epochs?"),       # Hydra's struct mode, reported alike
    (["+train.max_epoch=3"], "did you mean train.max_epochs?"),      # the schema
    (["+trainer.acumulate_grad_batches=2"], "did you mean trainer.accumulate_grad_batches?"),  # L.Trainer args
    (["+trainer.max_epochs=3"], "set train.max_epochs instead"),
    (["+callbacks.stop={_target_:lightning.pytorch.callbacks.EarlyStopping,monitor:val/loss,patiense:3}"],
     "did you mean callbacks.stop.patience?"),
    (["train.max_epochs=many"], "train.max_epochs='many' has the wrong type"),
    (["+data.batch_sise=2"], "did you mean data.batch_size?"),
])
def test_train_config_errors(tmp_path, args, expected):
    proc, _ = run_cli("hedgenet-train", tmp_path, "bad", args, check=False, timeout=300)
    _refused(proc, expected)


@pytest.mark.parametrize("args,expected", [
    (["phonons.npoint=3"], "did you mean phonons.npoints?"),
    (["phonons.npoints=abc"], "phonons.npoints='abc' has the wrong type"),
])
def test_phonons_config_errors(tmp_path, args, expected):
    proc, _ = run_cli("hedgenet-phonons", tmp_path, "bad", args, check=False, timeout=300)
    _refused(proc, expected)


@pytest.mark.parametrize("yaml_text, expected", [
    ("name: my_bilayer\nbuilder: bilayer_graphene\nparams: {stacking: AB}\nlable_supercell: [5, 5]\n"
     "block_cutoff_A: 5.0\n", ("material.lable_supercell", "did you mean material.label_supercell?")),
    ("name: my_bilayer\nbuilder: bilayer_graphene\nrelax:\n  - {parametr: a, builder: monolayer_graphene, "
     "supercell: [6, 6], bounds: [2.38, 2.54]}\nlabel_supercell: [5, 5]\nblock_cutoff_A: 5.0\n",
     ("material.relax[0].parametr", "did you mean material.relax[0].parameter?")),
])
def test_misspelt_key_in_a_user_material_file(tmp_path, yaml_text, expected):
    conf = tmp_path / "myconf" / "material"
    conf.mkdir(parents=True)
    (conf / "my_bilayer.yaml").write_text(yaml_text)
    proc, _ = run_cli("hedgenet-phonons", tmp_path, "bad",
                      ["--config-dir", str(tmp_path / "myconf"), "material=my_bilayer"], check=False, timeout=300)
    _refused(proc, *expected)


@pytest.fixture(scope="module")
def compose_cfg():
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        yield lambda name, *ov: compose(name, overrides=[*ov, "paths.output_dir=/tmp/out"])


def test_every_primary_config_matches_its_schema(compose_cfg):
    for name in ("label", "train", "phonons", "epi", "fermi_velocity", "pipeline"):
        check_config(compose_cfg(name), name)
    for option in ("gpu", "ddp", "ddp_sim"):
        check_config(compose_cfg("train", f"trainer={option}"), "train")
    with pytest.raises(ConfigError, match=r"overrides.phonon \(did you mean overrides.phonons\?\)"):
        check_config({**yaml.safe_load("overrides: {phonon: {}}")}, "pipeline", allow_missing=True)


def test_block_cutoff_and_temperatures_are_stated_once(compose_cfg):
    from hedgenet.pipeline.stages import plan

    for material in ("ab_bilayer_graphene", "bilayer_mos2", "twisted_bilayer_graphene"):
        label = compose_cfg("label", f"material={material}")
        assert label.reference.block_cutoff == label.material.block_cutoff_A
    label = compose_cfg("label", "temperatures.K=[0,50,200]")
    assert list(label.dataset.thermal.temperatures_K) == [50, 200]
    assert list(compose_cfg("fermi_velocity", "temperatures.K=[0,50]").fermi_velocity.temperatures_K) == [0, 50]
    # the pipeline hands the material's cutoff and labelling cell, and one temperature list, to every stage
    for experiment, cutoff in (("ab_bilayer_graphene", 5.0), ("bilayer_mos2", 5.5), ("twisted_bilayer_graphene", 5.0)):
        cfg = compose_cfg("pipeline", f"experiment={experiment}", "temperatures.K=[0,77]")
        overrides = {s.name: s.overrides for s in plan(cfg, {"material": "x", "reference": "xtb"})}
        for name, ov in overrides.items():
            assert f"reference.block_cutoff={cutoff}" in ov, (name, ov)
        assert "temperatures.K=[0,77]" in overrides["label"]
        if "fermi_velocity_model" in overrides:
            assert "fermi_velocity.temperatures_K=[0,77]" in overrides["fermi_velocity_model"]
