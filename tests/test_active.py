"""hedgenet-active on tiny real data: a seed set of 3 xTB-labelled 4×4 cells, a pool of 8 candidates (rattles and
rigid layer shifts), committees of 2 tiny members. One run is killed while it labels its second round's picks
and rerun: every round is recorded once, the picks are the committee's most uncertain candidates (their spreads
recomputed from the stored labels' structures), the pool file holds exactly the picks, each once, and the rounds
table, plot and final committee are there. Plus the picking rules and the refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from cli_runner import BIN, TINY_TRAIN, program_env, run_cli

MATERIAL = [o for o in TINY_TRAIN if o.startswith(("+material.", "material."))]
TRAIN = [f"+train.{o}" for o in TINY_TRAIN if not o.startswith(("+material.", "material.", "train.max_epochs"))]
ARGS = [
    "pool.supercell=[4,4]", "reference.block_cutoff=3.5", "pool.thermal.n_per_temperature=0",
    "pool.rattle.n_per_amplitude=3", "pool.rattle.amplitudes_A=[0.02,0.06]",
    "pool.rigid.shifts_A=[[0.0,0.0,0.1],[0.05,0.0,0.0]]", "pool.consolidate_every_s=0",
    "active.batch_size=3", "active.max_labels=6", "active.max_rounds=3", "progress=false",
    "active.committee_size=2", "train.train.max_epochs=3", *MATERIAL, *TRAIN,
]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, tiny_root):
    root = tiny_root(tmp_path_factory.mktemp("active_root"))
    run = root / "runs" / "al"
    cmd = [str(BIN / "hedgenet-active"), f"seed_data=[{root}/data/tiny.h5]", *ARGS, f"hydra.run.dir={run}"]
    proc = subprocess.Popen(cmd, cwd=root, env=program_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (run / "rounds" / "1" / "picked.json").exists():  # round 1 has picked: it is labelling
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = json.loads((run / "rounds" / "1" / "picked.json").read_text())
    rows_before = (run / "rounds.jsonl").read_text().splitlines()
    again = subprocess.run(cmd, cwd=root, env=program_env(root), capture_output=True, text=True, timeout=900,
                           check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    return root, run, before, rows_before, again


def test_killed_run_resumes_without_losing_or_duplicating(killed_and_resumed):
    from hedgenet.data.store import DatasetStore

    root, run, before, rows_before, _ = killed_and_resumed
    assert len(rows_before) == 1  # killed in round 1, after round 0 was recorded
    rows = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2] and rows[0] == json.loads(rows_before[0])
    assert rows[1]["picked"] == before["picked"]  # the rerun labelled what round 1 had picked, no new draw
    assert rows[-1]["stop"] == "max_labels" and "picked" not in rows[-1]
    picks = rows[0]["picked"] + rows[1]["picked"]
    assert len(picks) == len(set(picks)) == 6
    store = DatasetStore(root / "data" / "ab_bilayer_graphene_active_pool.h5")
    assert store.ids() == sorted(picks) and not store.staged_ids() and not store.failed_ids()
    assert [r["n_labelled"] for r in rows] == [3, 6, 9]
    # round r trains on the seed set plus what rounds < r labelled
    assert "active_pool.h5" not in (run / "rounds" / "0" / "train" / "command.txt").read_text()
    assert "active_pool.h5" in (run / "rounds" / "1" / "train" / "command.txt").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model_path"] == str(run / "committee.json")  # the last round's members, calibrated
    last, final = (json.loads(p.read_text()) for p in (run / "rounds" / "2" / "train" / "committee.json",
                                                       run / "committee.json"))
    assert final["calibration"] == last["calibration"] and final["calibration"]["forces_scale"] > 0
    assert [(run / m).resolve() for m in final["members"]] == [
        (run / "rounds" / "2" / "train" / m).resolve() for m in last["members"]]
    assert summary["n_picked"] == 6 and summary["pool_size"] == 8 and summary["stop"] == "max_labels"
    for name in ("rounds.csv", "rounds.md", "rounds.png"):
        assert (run / name).stat().st_size > 0
    assert (run / "rounds.md").read_text().count("\n") == 2 + 3


def test_picks_are_the_committees_most_uncertain(killed_and_resumed):
    from hedgenet.training.active import candidate_spreads, uncertainty_score

    root, run, _, _, _ = killed_and_resumed
    record = json.loads((run / "rounds" / "0" / "picked.json").read_text())
    assert record["strategy"] == "uncertainty" and record["score"] == "both" and len(record["candidates"]) == 8
    assert np.allclose(record["scores"], uncertainty_score({k: np.array(record[k]) for k in
                                                            ("force_spread_eV_A", "H_spread_eV")}, "both"))
    assert_picks_are_the_most_uncertain(root, record, lambda structures: candidate_spreads(
        run / "rounds" / "0" / "train" / "committee.json", structures))


def assert_picks_are_the_most_uncertain(root, record: dict, spreads_of) -> None:
    """A round's record (picked.json): its picks are the 3 highest `both` scores, and ``spreads_of`` (the
    committee's or the model's spreads) recomputed on the structures the reference then labelled gives the
    recorded spreads."""
    from ase import Atoms

    from hedgenet.data.store import DatasetStore
    from hedgenet.training.active import uncertainty_score

    scores = uncertainty_score({k: np.array(record[k]) for k in ("force_spread_eV_A", "H_spread_eV")}, "both")
    assert record["picked"] == sorted(np.array(record["candidates"])[np.argsort(-scores)[:3]].tolist())
    store = DatasetStore(root / "data" / "ab_bilayer_graphene_active_pool.h5")
    structures = []
    for sid in record["picked"]:
        s = store.read_sample(sid)
        structures.append(Atoms(numbers=s["numbers"], positions=s["positions"], cell=s["cell"], pbc=True))
    again = spreads_of(structures)
    index = [record["candidates"].index(sid) for sid in record["picked"]]
    for key in ("force_spread_eV_A", "H_spread_eV"):
        assert np.all(again[key] > 0)
        assert np.allclose(again[key], np.array(record[key])[index], rtol=1e-6), key


def test_labels_of_an_earlier_labelling_are_copied_exactly(killed_and_resumed, tmp_path):
    from ase import Atoms

    from hedgenet.cli.active import copy_labels
    from hedgenet.data.store import DatasetStore

    root, _, _, _, _ = killed_and_resumed
    source = DatasetStore(root / "data" / "ab_bilayer_graphene_active_pool.h5")
    target = DatasetStore(tmp_path / "copy.h5")
    ref = source.read_reference()
    base = Atoms(numbers=ref["numbers"], positions=ref["positions"], cell=ref["cell"], pbc=ref["pbc"])
    base.arrays["layer"] = ref["layer"]
    header = source.header()
    target.create({k: header[k] for k in ("fingerprint", "solver_settings", "orbital_layout", "material")}, base)
    have = source.ids()
    assert copy_labels(source, target, [have[0], have[1], 99]) == [have[0], have[1]]  # 99: for the reference
    assert target.ids() == [have[0], have[1]]
    for sid in (have[0], have[1]):
        a, b = source.read_sample(sid), target.read_sample(sid)
        for key in ("positions", "forces", "H", "S", "energy", "virial"):
            np.testing.assert_array_equal(a[key], b[key])
        assert b["copied_from"] == str(source.path) and b["kind"] == a["kind"]
    assert copy_labels(source, target, [have[0]]) == [have[0]] and target.ids() == [have[0], have[1]]  # never twice


def test_one_model_ranks_by_its_own_estimate(tmp_path, tiny_root):
    """active.committee_size=1: each round trains one model, the picks are the candidates its calibrated last-layer
    estimate is least sure of, and the run's result is that model (with its estimate)."""
    from hedgenet.models.io import load_model
    from hedgenet.models.last_layer import LastLayerEstimate
    from hedgenet.training.active import model_spreads

    root = tiny_root(tmp_path)
    run = root / "runs" / "single"
    args = [a for a in ARGS if not a.startswith(("active.committee_size", "active.max_labels", "active.max_rounds"))]
    proc, _ = run_cli("hedgenet-active", root, "single", [f"seed_data=[{root}/data/tiny.h5]", *args,
                      "active.committee_size=1", "active.max_labels=3", "active.max_rounds=1",
                      f"hydra.run.dir={run}"])
    rows = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1] and rows[-1]["stop"] == "max_labels"
    assert "committee.size" not in (run / "rounds" / "0" / "train" / "command.txt").read_text()
    assert rows[0]["spearman_forces"] is not None and rows[1]["n_labelled"] == 6
    record = json.loads((run / "rounds" / "0" / "picked.json").read_text())
    assert_picks_are_the_most_uncertain(root, record, lambda structures: model_spreads(
        run / "rounds" / "0" / "train" / "model.pt", structures))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model_path"] == str(run / "model.pt") and summary["committee_size"] == 1
    final = load_model(run / "model.pt")
    assert LastLayerEstimate.from_model(final).calibration is not None


def test_phonon_aware_picks_recomputed_from_the_labelled_cells(tmp_path, tiny_root):
    """active.score=phonons: the round's gains, recomputed from the structures the reference then labelled, the
    seed cells the model was trained on and the relaxed cell, are the recorded ones; the first pick is the largest
    gain, and the recorded target variance falls with every pick."""
    from ase import Atoms

    from hedgenet.data.store import DatasetStore
    from hedgenet.training.phonon_aware import phonon_aware_round

    root = tiny_root(tmp_path)
    run = root / "runs" / "phonons"
    args = [a for a in ARGS if not a.startswith(("active.committee_size", "active.max_labels", "active.max_rounds"))]
    run_cli("hedgenet-active", root, "phonons", [f"seed_data=[{root}/data/tiny.h5]", *args, "active.score=phonons",
            "active.committee_size=1", "active.phonon_probes=4", "active.max_labels=3", "active.max_rounds=1",
            f"hydra.run.dir={run}"])
    record = json.loads((run / "rounds" / "0" / "picked.json").read_text())
    assert record["score"] == "phonons" and len(record["picked"]) == 3 and len(record["scores"]) == 8
    variance = record["phonon_target_variance"]
    assert len(variance) == 4 and all(b < a for a, b in zip(variance, variance[1:]))
    assert record["candidates"][int(np.argmax(record["scores"]))] in record["picked"]
    store = DatasetStore(root / "data" / "ab_bilayer_graphene_active_pool.h5")
    ref = store.read_reference()
    relaxed = Atoms(numbers=ref["numbers"], positions=ref["positions"], cell=ref["cell"], pbc=ref["pbc"])
    structures = []
    for sid in record["picked"]:
        sample = store.read_sample(sid)
        structures.append(Atoms(numbers=sample["numbers"], positions=sample["positions"], cell=sample["cell"], pbc=True))
    again = phonon_aware_round(run / "rounds" / "0" / "train" / "model.pt", structures, [root / "data" / "tiny.h5"],
                               relaxed, 3, n_probes=4, seed=0)
    index = [record["candidates"].index(sid) for sid in record["picked"]]
    assert np.allclose(again["gains"], np.array(record["scores"])[index], rtol=1e-6)
    assert json.loads((run / "summary.json").read_text())["score"] == "phonons"


def test_pick_rules():
    from hedgenet.training.active import pick, uncertainty_score

    ids, scores = [10, 11, 12, 13, 14], [0.1, 0.5, 0.5, 0.2, 0.9]
    assert pick(ids, scores, 3, "uncertainty", 0) == [11, 12, 14]  # highest first, ties by id
    assert pick(ids, scores, 9, "uncertainty", 0) == ids
    random = pick(ids, None, 3, "random", 7)
    assert random == pick(ids, None, 3, "random", 7) and len(set(random)) == 3 and set(random) <= set(ids)
    assert len({tuple(pick(ids, None, 2, "random", s)) for s in range(20)}) > 3  # the seed draws
    spreads = {"force_spread_eV_A": np.array([0.1, 0.3]), "H_spread_eV": np.array([0.02, 0.0])}
    assert np.allclose(uncertainty_score(spreads, "both"), [0.5 + 2.0, 1.5 + 0.0])
    relative = {"force_spread_eV_A": np.array([0.02, 0.2]), "force_rms_eV_A": np.array([0.01, 1.0])}
    assert np.allclose(uncertainty_score(relative, "relative"), [2.0, 0.2])  # a small force's spread weighs more
    with pytest.raises(ValueError, match="active.score=forces for task=forces"):
        uncertainty_score({"force_spread_eV_A": np.array([1.0])}, "H")


def test_stratified_picks_share_the_batch_among_kinds():
    from hedgenet.training.active import kind_quotas, pick

    # 6 rattles, 3 thermal, 1 rigid: a batch of 4 gets 2.4 / 1.2 / 0.4 -> 2 / 1 / 1 (largest remainder)
    kinds = ["rattle"] * 6 + ["thermal"] * 3 + ["rigid"]
    assert kind_quotas(kinds, 4) == {"rattle": 2, "thermal": 1, "rigid": 1}
    assert sum(kind_quotas(kinds, 10).values()) == 10 and kind_quotas(kinds, 99) == {"rattle": 6, "thermal": 3,
                                                                                      "rigid": 1}
    ids = list(range(20, 30))
    # the rattles are the most uncertain of all: plain uncertainty takes only rattles
    scores = [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 0.1, 0.3, 0.2, 0.05]
    assert pick(ids, scores, 4, "uncertainty", 0) == [20, 21, 22, 23]
    # stratified: each kind's most uncertain, in the kinds' proportions
    assert pick(ids, scores, 4, "stratified", 0, kinds=kinds) == [20, 21, 27, 29]
    with pytest.raises(ValueError, match="needs the kind"):
        pick(ids, scores, 4, "stratified", 0)


def test_oracle_picks_the_largest_actual_errors(tmp_path, tiny_root):
    """active.strategy=oracle on a pool labelled beforehand (hedgenet-label with the pool's recipe): the picks are
    the candidates with the largest actual errors of the round's model, recomputed from the labels; the round
    records how well the model's own spreads ranked them, and the picks are copied, not relabelled."""
    from hedgenet.data.store import DatasetStore
    from hedgenet.training.active import candidate_errors, error_score

    root = tiny_root(tmp_path)
    label = [a.replace("pool.", "dataset.", 1) for a in ARGS if a.startswith("pool.")]
    run_cli("hedgenet-label", root, "label_pool", [*label, *MATERIAL, "dataset.name=tiny_pool",
                                                   "reference.block_cutoff=3.5", "dataset.strain.strains=[]",
                                                   "progress=false"])
    pool = root / "data" / "tiny_pool.h5"
    run = root / "runs" / "oracle"
    args = [a for a in ARGS if not a.startswith(("active.committee_size", "active.max_labels", "active.max_rounds"))]
    run_cli("hedgenet-active", root, "oracle", [f"seed_data=[{root}/data/tiny.h5]", *args,
            "active.committee_size=1", "active.max_labels=3", "active.max_rounds=1", "active.strategy=oracle",
            f"active.labels_from={pool}", f"hydra.run.dir={run}"])
    rows = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    record = json.loads((run / "rounds" / "0" / "picked.json").read_text())
    source = DatasetStore(pool)
    errors = candidate_errors(run / "rounds" / "0" / "train" / "model.pt",
                              [source.read_sample(i) for i in record["candidates"]])
    np.testing.assert_allclose(error_score(errors, "both"), record["scores"], rtol=1e-6)
    np.testing.assert_allclose(errors["force_error_eV_A"], record["force_error_eV_A"], rtol=1e-6)
    order = np.argsort(-np.asarray(record["scores"]))
    assert record["picked"] == sorted(record["candidates"][k] for k in order[:3])
    assert -1.0 <= rows[0]["pool_spearman_forces"] <= 1.0 and -1.0 <= rows[0]["pool_spearman_H"] <= 1.0
    assert rows[0]["label_counts"]["copied"] == 3 and rows[-1]["stop"] == "max_labels"


@pytest.mark.parametrize(("overrides", "expected"), [
    (["seed_data=[]"], ["seed_data is empty", "Fix:"]),
    (["active.committee_size=0"], ["must be ≥ 1", "Fix: active.committee_size=3"]),
    (["active.committee_size=1", "+train.train.uncertainty.method=null"],
     ["the model's own estimate", "train.uncertainty.method=null", "Fix:"]),
    (["active.strategy=greedy"], ["'greedy' unknown", "uncertainty"]),
    (["active.score=phonons"], ["not a committee of 2", "Fix: active.committee_size=1"]),
    (["active.score=phonons", "active.committee_size=1", "active.strategy=stratified"],
     ["greedily", "Fix: active.strategy=uncertainty"]),
    (["active.labels_from=${paths.data_dir}/tiny.h5"], ["not a dataset of this pool", "Fix:"]),
    (["active.strategy=oracle"], ["labelled beforehand", "Fix: active.labels_from="]),
    (["active.strategy=oracle", "active.score=relative", "active.labels_from=${paths.data_dir}/tiny.h5"],
     ["not 'relative'", "Fix: active.score=both"]),
])
def test_bad_inputs_are_refused(tmp_path, tiny_root, overrides, expected):
    root = tiny_root(tmp_path)
    proc, _ = run_cli("hedgenet-active", root, "bad", [f"seed_data=[{root}/data/tiny.h5]", *ARGS, *overrides],
                      check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    for text in expected:
        assert text in proc.stderr, proc.stderr[-2000:]
    assert not list((root / "data").glob("*active_pool*.h5"))  # refused before the pool file is made
