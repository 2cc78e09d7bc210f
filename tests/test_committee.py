"""Committees of models (docs/training.md, "Committees and uncertainty"): one command trains K members and
keeps finished ones on a rerun; the committee calculator's mean and spread are the members' mean and std; the
calibration measures spread against error and stores scales the calculator applies; bad inputs name the fix."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from ase import Atoms
from cli_runner import TINY_TRAIN, run_cli, run_program

COMMITTEE = [*[a for a in TINY_TRAIN if not a.startswith("train.max_epochs")], "train.max_epochs=2",
             "data.paths=[${paths.data_dir}/tiny.h5]", "committee.size=2"]


@pytest.fixture(scope="module")
def committee(tiny_root, tmp_path_factory):
    """A committee of 2 tiny members trained in one hedgenet-train command, and the stderr of a rerun of the
    same command in the same run directory."""
    root = tiny_root(tmp_path_factory.mktemp("committee"))
    proc, run_dir = run_cli("hedgenet-train", root, "c2", COMMITTEE)
    models = [run_dir / "members" / str(k) / "model.pt" for k in range(2)]
    mtimes = [m.stat().st_mtime_ns for m in models]
    rerun, _ = run_cli("hedgenet-train", root, "c2", COMMITTEE)
    return {"root": root, "run_dir": run_dir, "models": models, "mtimes": mtimes, "rerun": rerun, "first": proc}


def _atoms(root, k: int = 0) -> Atoms:
    from hedgenet.training.data import load_samples

    s = load_samples([str(root / "data" / "tiny.h5")])[0][k]
    atoms = Atoms(numbers=s["numbers"], positions=s["positions"], cell=s["cell"], pbc=s["pbc"])
    atoms.arrays["layer"] = s["layer"]
    return atoms


def test_one_command_trains_every_member_and_a_rerun_keeps_them(committee):
    run_dir = committee["run_dir"]
    for k, model in enumerate(committee["models"]):
        member = model.parent
        assert model.exists() and (member / "metrics.json").exists() and (member / "checkpoints" / "last.ckpt").exists()
        assert json.loads((member / "metrics.json").read_text())["epochs_trained"] == 2  # a real training each
        assert "seed: " + str(k) in (member / "resolved_config.yaml").read_text()
    info = json.loads((run_dir / "committee.json").read_text())
    assert info["members"] == ["members/0/model.pt", "members/1/model.pt"] and info["seeds"] == [0, 1]
    assert {"forces_scale", "H_scale", "S_scale", "forces_spearman"} <= set(info["calibration"])
    assert (run_dir / "reliability.png").stat().st_size > 0
    # members differ (seeds), and the rerun retrained neither of them
    import torch

    a, b = (torch.load(m, weights_only=True)["state_dict"] for m in committee["models"])
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    assert [m.stat().st_mtime_ns for m in committee["models"]] == committee["mtimes"]
    assert committee["rerun"].stderr.count("finished before") == 2


def test_committee_calculator_is_the_members_mean_and_std(committee):
    from hedgenet.calculators import CommitteeCalculator, ModelCalculator, make_calculator

    atoms = _atoms(committee["root"])
    calc = CommitteeCalculator(committee["run_dir"], device="cpu", calibrated=False)
    assert calc.size == 2 and not calc.calibrated
    members = [ModelCalculator(m, device="cpu") for m in committee["models"]]
    forces = np.stack([m.get_forces(atoms.copy()) for m in members])
    energies = [m.get_potential_energy(atoms.copy()) for m in members]
    a = atoms.copy()
    a.calc = calc
    assert a.get_potential_energy() == pytest.approx(np.mean(energies), abs=1e-12)
    np.testing.assert_allclose(a.get_forces(), forces.mean(axis=0), rtol=0, atol=1e-12)
    expected_std = np.sqrt((forces.std(axis=0, ddof=1) ** 2).sum(axis=-1))  # norm of the per-component std
    np.testing.assert_allclose(calc.results["forces_std"], expected_std, rtol=1e-12, atol=1e-15)
    assert calc.results["forces_std"].shape == (len(atoms),) and calc.results["forces_std"].max() > 0

    blocks = [m.predict_hamiltonian(atoms) for m in members]
    mean, spread = calc.predict_hamiltonian_with_spread(atoms)
    H = np.stack([b.H for b in blocks])
    np.testing.assert_allclose(mean.H, H.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean.S, np.mean([b.S for b in blocks], axis=0), rtol=0, atol=1e-12)
    n = mean.n_orb
    for e in range(0, mean.n_edges, 97):  # per block: Frobenius norm of the per-entry std over its orbitals
        ni, nj = n[mean.edge_index[0, e]], n[mean.edge_index[1, e]]
        assert spread["H_std"][e] == pytest.approx(np.linalg.norm(H[:, e, :ni, :nj].std(axis=0, ddof=1)), rel=1e-12, abs=1e-15)
    assert spread["H_std"].shape == (mean.n_edges,)
    # batched prediction (physics: Monte Carlo samples) gives the same mean blocks
    for got in calc.predict_hamiltonians([atoms, atoms], batch_size=2):
        np.testing.assert_allclose(got.H, mean.H, rtol=0, atol=1e-10)
    # a committee's run directory is a model_path for every physics command
    assert isinstance(make_calculator("model", model_path=committee["run_dir"], device="cpu"), CommitteeCalculator)

    # calibrated spreads: the stored scales times the raw spreads
    cal = CommitteeCalculator(committee["run_dir"] / "committee.json", device="cpu")
    info = json.loads((committee["run_dir"] / "committee.json").read_text())["calibration"]
    assert cal.calibrated
    b = atoms.copy()
    b.calc = cal
    b.get_forces()
    # ... the per-atom variance pooled over the atom and its neighbours within the calibration's radius
    from ase.neighborlist import neighbor_list

    assert info["forces_spread_radius_A"] == 2.6
    i, j = neighbor_list("ij", atoms, info["forces_spread_radius_A"])
    var = calc.results["forces_std"] ** 2
    pooled = np.sqrt([(var[a] + var[j[i == a]].sum()) / (1 + (i == a).sum()) for a in range(len(atoms))])
    assert ((i == 0).sum()) == 9  # graphene: 3 first and 6 second neighbours
    np.testing.assert_allclose(cal.results["forces_std"], info["forces_scale"] * pooled, rtol=1e-10)
    np.testing.assert_allclose(cal.predict_hamiltonian_with_spread(atoms)[1]["H_std"], info["H_scale"] * spread["H_std"],
                               rtol=1e-12)


def test_trust_signal_of_what_a_run_evaluated(committee):
    """Every force call and block prediction is recorded (RMS spread over the structure, calibrated); the trust
    signal compares the largest with trust_factor × the held-out RMS error stored by the calibration, warns
    above it, and says when a committee is uncalibrated."""
    from hedgenet.calculators import CommitteeCalculator

    info = json.loads((committee["run_dir"] / "committee.json").read_text())["calibration"]
    assert info["trust_factor"] == 2.0 and info["forces_rms_error"] > 0 and info["H_rms_error"] > 0
    calc = CommitteeCalculator(committee["run_dir"], device="cpu")
    atoms = _atoms(committee["root"])
    far = atoms.copy()
    far.positions += np.random.default_rng(0).normal(0, 0.25, far.positions.shape)  # far from the 0.04 Å rattles
    records = []
    for a in (atoms, far):
        b = a.copy()
        b.calc = calc
        b.get_forces()
        records.append(np.sqrt(np.mean(calc.results["forces_std"] ** 2)))
    calc.predict_hamiltonian_with_spread(atoms)
    np.testing.assert_allclose(calc.spread_record["forces"], records, rtol=1e-12)
    assert len(calc.spread_record["H"]) == 1
    trust = calc.trust()
    f = trust["forces"]
    assert f["n_evaluations"] == 2 and f["max"] == pytest.approx(max(records)) and f["mean"] == pytest.approx(np.mean(records))
    assert f["threshold"] == pytest.approx(2.0 * info["forces_rms_error"])
    assert f["exceeds"] == (max(records) > f["threshold"])
    assert records[1] > records[0]  # the far structure is the less certain one
    assert any("forces spread" in w and "hedgenet-active" in w for w in trust["warnings"]) == f["exceeds"]
    # a threshold the far structure must exceed: 1.01 × its own spread over the stored error
    (committee["run_dir"] / "committee.json").write_text(json.dumps(
        {**json.loads((committee["run_dir"] / "committee.json").read_text()),
         "calibration": {**info, "trust_factor": 0.99 * records[1] / info["forces_rms_error"]}}))
    try:
        strict = CommitteeCalculator(committee["run_dir"], device="cpu")
        strict.spread_record["forces"] = list(records)
        assert strict.trust()["forces"]["exceeds"] and "forces spread" in strict.trust()["warnings"][0]
    finally:
        (committee["run_dir"] / "committee.json").write_text(json.dumps(
            {**json.loads((committee["run_dir"] / "committee.json").read_text()), "calibration": info}))
    raw = CommitteeCalculator(committee["run_dir"], device="cpu", calibrated=False)
    raw.spread_record["forces"] = [0.1]
    t = raw.trust()
    assert t["forces"]["threshold"] is None and not t["forces"]["exceeds"] and "not calibrated" in t["warnings"][0]


def test_identical_members_have_zero_spread(committee, tmp_path):
    from hedgenet.calculators import CommitteeCalculator
    from hedgenet.models.committee import write_committee

    for k in range(2):  # two copies of one member: the same seed and data give the same weights
        (tmp_path / str(k)).mkdir()
        shutil.copyfile(committee["models"][0], tmp_path / str(k) / "model.pt")
    write_committee(tmp_path / "committee.json", [tmp_path / "0" / "model.pt", tmp_path / "1" / "model.pt"])
    calc = CommitteeCalculator(tmp_path, device="cpu")
    atoms = _atoms(committee["root"])
    atoms.calc = calc
    atoms.get_forces()
    assert np.all(calc.results["forces_std"] == 0) and calc.results["energy_std"] == 0
    assert np.all(calc.predict_hamiltonian_with_spread(atoms)[1]["H_std"] == 0)


def test_calibrate_command_reports_spearman_scale_and_plot(committee, tmp_path):
    proc = run_program("hedgenet-dataset", committee["root"],
                       ["calibrate", str(committee["run_dir"]), str(committee["root"] / "data" / "tiny.h5"),
                        "--out", str(tmp_path), "--no-store"])
    assert "Spearman" in proc.stdout
    result = json.loads((tmp_path / "calibration.json").read_text())
    for q in ("forces", "H", "S"):
        r = result[q]
        assert np.isfinite(r["spearman"]) and -1 <= r["spearman"] <= 1 and r["scale"] > 0
        assert r["rms_error"] == pytest.approx(r["scale"] * r["rms_spread"])
    assert result["forces"]["n"] == 3 * 64 and result["n_cells"] == 3
    assert (tmp_path / "reliability.png").stat().st_size > 0


def test_bad_committee_inputs_name_the_fix(committee, tmp_path):
    from hedgenet.calculators import CommitteeCalculator, make_calculator
    from hedgenet.models.committee import CommitteeFileError

    proc, _ = run_cli("hedgenet-train", committee["root"], "c0", [*COMMITTEE[:-1], "committee.size=0"], check=False)
    assert proc.returncode == 2 and "committee.size=0" in proc.stderr and "Fix: committee.size=4" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = tmp_path / "committee.json"
    bad.write_text(json.dumps({"format": 1, "members": [str(committee["models"][0]), "members/7/model.pt"]}))
    with pytest.raises(CommitteeFileError, match=r"members/7/model.pt.*Fix: rerun the same hedgenet-train"):
        CommitteeCalculator(bad, device="cpu")
    with pytest.raises(ValueError, match="do not exist"):
        make_calculator("model", model_path=bad, device="cpu")
    with pytest.raises(CommitteeFileError, match="does not exist.*committee.size=4"):
        CommitteeCalculator(tmp_path / "nothing" / "committee.json")
    # a finished member is not silently reused under another config
    proc, _ = run_cli("hedgenet-train", committee["root"], "c2", [*COMMITTEE, "model.size.channels=4"], check=False)
    assert proc.returncode == 2 and "trained with another config" in proc.stderr and "new run directory" in proc.stderr


def test_bootstrap_resamples_the_training_split_only():
    from hedgenet.training.data import GraphDataModule

    samples = [{"sample_id": k} for k in range(10)]
    plain = GraphDataModule([], lambda s: s["sample_id"], list, samples=samples, val_fraction=0.2, split_seed=0)
    plain.setup()
    boots = []
    for seed in (0, 1):
        dm = GraphDataModule([], lambda s: s["sample_id"], list, samples=samples, val_fraction=0.2, split_seed=0,
                             bootstrap_seed=seed)
        dm.setup()
        assert dm.graphs["val"] == plain.graphs["val"] and len(dm.graphs["train"]) == len(plain.graphs["train"])
        assert set(dm.graphs["train"]) <= set(plain.graphs["train"])
        boots.append(dm.graphs["train"])
    assert boots[0] != boots[1]


def test_predict_with_a_committee_writes_the_spread(committee, tmp_path):
    import ase.io

    structure = tmp_path / "cell.extxyz"
    ase.io.write(structure, _atoms(committee["root"]), format="extxyz")
    _, run = run_cli("hedgenet-predict", committee["root"], "pc",
                     [f"model_path={committee['run_dir']}", f"structure={structure}", "predict.bands=false", "device=cpu"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["committee_size"] == 2 and summary["spread_calibrated"] is True
    assert summary["forces_std_max_eV_A"] > 0 and summary["H_std_max_eV"] > 0
    out = ase.io.read(run / "predicted.extxyz")
    assert out.arrays["forces_std"].shape == (len(out),)
    assert float(out.arrays["forces_std"].max()) == pytest.approx(summary["forces_std_max_eV_A"])


def test_an_interrupted_member_resumes_from_its_checkpoint(committee):
    """A member without model.pt but with checkpoints/last.ckpt (killed after its last epoch) continues from the
    checkpoint; the finished member is kept."""
    root = committee["root"]
    shutil.copytree(committee["run_dir"], root / "runs" / "c2r")
    for name in ("model.pt", "metrics.json"):
        (root / "runs" / "c2r" / "members" / "1" / name).unlink()
    proc, run_dir = run_cli("hedgenet-train", root, "c2r", COMMITTEE)
    assert "member 0/2: finished before" in proc.stderr and "member 1/2: resuming from" in proc.stderr
    assert (run_dir / "members" / "1" / "model.pt").exists()
    assert json.loads((run_dir / "members" / "1" / "metrics.json").read_text())["epochs_trained"] == 2


def test_last_layer_estimate_ranks_new_environments_above_training_ones(committee):
    """The single-model estimate: fitted on the training cells, an atom of a cell far from them (rattled 0.3 Å,
    layers pushed 0.8 Å together) has a larger variance than the training atoms; its spreads come per atom and
    per block with the model's own errors; it survives the model file's plain data; a model without a linear
    energy readout is refused."""
    import torch

    from hedgenet.models.io import load_model
    from hedgenet.models.last_layer import LastLayerEstimate
    from hedgenet.training.data import load_samples
    from hedgenet.training.last_layer import fit_last_layer, last_layer_features, spread_and_error

    model = load_model(committee["models"][0])
    samples = load_samples([str(committee["root"] / "data" / "tiny.h5")])[0]
    build = model.graph_builder()
    graphs = [build(s) for s in samples]
    est = fit_last_layer(model, graphs)
    train_var = np.concatenate([est.atom_variance(phi, sp) for phi, sp, _ in last_layer_features(model, graphs)])
    far = {k: v for k, v in samples[0].items() if k not in ("edge_index", "cell_shift", "H", "S")}  # new blocks
    rng = np.random.default_rng(0)
    pos = np.array(far["positions"], dtype=float) + rng.normal(0, 0.3, np.shape(far["positions"]))
    pos[np.asarray(far["layer"]) == 1, 2] -= 0.8
    far["positions"] = pos
    (phi, sp, _), = last_layer_features(model, [build(far)])
    far_var = est.atom_variance(phi, sp)
    assert np.median(far_var) > 3 * np.median(train_var)
    back = LastLayerEstimate.from_state(json.loads(json.dumps(est.to_state())))  # what a model file holds
    np.testing.assert_allclose(back.atom_variance(phi, sp), far_var, rtol=1e-10)

    result = spread_and_error(est, model, graphs[:2])
    n_atoms = sum(len(s["numbers"]) for s in samples[:2])
    assert result["forces"][0].shape == result["forces"][1].shape == (n_atoms,)
    n_blocks = sum(int(g.block_index.shape[1]) for g in graphs[:2])
    assert result["H"][0].shape == result["H"][1].shape == (n_blocks,)
    pred = last_layer_features(model, graphs[:1])[0][2]
    err0 = np.linalg.norm(pred["forces"] - np.asarray(samples[0]["forces"], dtype=float), axis=-1)
    assert np.allclose(result["forces"][1][: len(err0)], err0, atol=1e-5)
    assert np.all(result["forces"][0] > 0) and np.all(np.isfinite(result["H"][0]))

    class NoReadout(torch.nn.Module):
        pass

    with pytest.raises(ValueError, match="committee"):
        fit_last_layer(NoReadout(), graphs)
    with pytest.raises(ValueError, match="regularization"):
        fit_last_layer(model, graphs, regularization=0)


def test_a_trained_model_carries_its_own_calibrated_estimate_and_trust_signal(committee):
    """hedgenet-train stores the last-layer estimate, calibrated on the validation cells, in model.pt; the
    ModelCalculator of that file returns calibrated per-atom force spreads (larger far from the training data),
    records every force call and Hamiltonian (single and batched) and summarises them as the trust signal that
    the physics commands put into summary.json; without the estimate there is no signal."""
    from hedgenet.calculators import ModelCalculator
    from hedgenet.models.io import load_model

    model = load_model(committee["models"][0])
    state = model.extra["uncertainty"]
    cal = state["calibration"]
    assert state["method"] == "last_layer" and cal["measured_on"] == "validation" and cal["n_cells"] >= 1
    assert cal["forces_scale"] > 0 and cal["forces_rms_error"] > 0 and cal["H_rms_error"] > 0
    assert cal["trust_factor"] == 2.0
    metrics = json.loads((committee["models"][0].parent / "metrics.json").read_text())
    assert metrics["uncertainty"] == "last_layer" and "val/uncertainty_forces_spearman" in metrics
    assert (committee["models"][0].parent / "reliability.png").stat().st_size > 0  # spread against error, val cells

    calc = ModelCalculator(committee["models"][0], device="cpu")
    atoms = _atoms(committee["root"])
    far = atoms.copy()
    far.positions += np.random.default_rng(0).normal(0, 0.25, far.positions.shape)
    rms = []
    for a in (atoms, far):
        b = a.copy()
        b.calc = calc
        b.get_forces()
        assert calc.results["forces_std"].shape == (len(a),)
        rms.append(np.sqrt(np.mean(calc.results["forces_std"] ** 2)))
    assert rms[1] > rms[0]
    np.testing.assert_allclose(calc.spread_record["forces"], rms, rtol=1e-12)
    blocks, spread = calc.predict_hamiltonian_with_spread(atoms)
    assert spread["H_std"].shape == spread["S_std"].shape == (blocks.H.shape[0],) and np.all(spread["H_std"] > 0)
    np.testing.assert_allclose(spread["H_std"], cal["H_scale"] * spread["H_std_raw"])
    calc.predict_hamiltonians([atoms, far], batch_size=2)
    h = calc.spread_record["H"]
    assert len(h) == 3 and h[2] > h[1]
    np.testing.assert_allclose(h[1], h[0], rtol=1e-5)  # batched as one structure alone
    trust = calc.trust()
    assert trust["calibrated"] and trust["forces"]["n_evaluations"] == 2 and trust["H"]["n_evaluations"] == 3
    assert trust["forces"]["threshold"] == pytest.approx(2.0 * cal["forces_rms_error"])
    assert trust["forces"]["exceeds"] == (max(rms) > trust["forces"]["threshold"])
    assert any("last-layer" in w and "forces spread" in w for w in trust["warnings"]) == trust["forces"]["exceeds"]
    plain = ModelCalculator(committee["models"][0], device="cpu", uncertainty=False)
    assert plain.trust() is None
    np.testing.assert_array_equal(plain.predict_hamiltonian(atoms).H, blocks.H)  # the estimate changes no number
    with pytest.raises(ValueError, match="no uncertainty estimate"):
        plain.predict_hamiltonian_with_spread(atoms)
