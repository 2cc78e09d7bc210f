"""The force-errors-by-kind benchmark: its kinds partition the held-out cells and its overall MAE is the one
hedgenet-train's evaluation reports on the same cells."""

import pytest


def test_kinds_partition_the_cells_and_all_is_the_evaluated_mae(load_benchmark, tiny_dataset, tmp_path):
    from cli_runner import untrained_model

    from hedgenet.models.io import load_model
    from hedgenet.training.data import load_samples
    from hedgenet.training.evaluate import evaluate

    bench = load_benchmark("force_errors_by_kind")
    model = load_model(untrained_model(tmp_path / "model.pt", block_cutoff=3.5))
    samples, _, _ = load_samples([tiny_dataset])
    samples[0] = {**samples[0], "kind": "thermal", "temperature_K": 300.0}  # a second kind among the rattles
    samples[0].pop("amplitude_A", None)
    out = bench.errors_by_kind(model, samples)
    assert list(out) == ["thermal 300 K", "rattle 0.04 Å", "all"]
    assert out["thermal 300 K"]["n_cells"] == 1 and out["rattle 0.04 Å"]["n_cells"] == 2
    metrics, _ = evaluate(model, [model.graph_builder()(s) for s in samples])
    assert out["all"]["forces_mae_meV_A"] == pytest.approx(metrics["val/forces_mae"], rel=1e-9)
    # every cell has 64 atoms: the overall MAE is the cells' mean of the kinds' MAEs weighted by their counts
    mean = sum(out[k]["forces_mae_meV_A"] * out[k]["n_cells"] for k in out if k != "all") / 3
    assert out["all"]["forces_mae_meV_A"] == pytest.approx(mean, rel=1e-12)
    assert 0 < out["all"]["forces_z_mae_meV_A"] and 0 < out["all"]["mean_abs_force_meV_A"]
