"""The active-learning benchmark's pure parts (no training): calls to reach a target, and the random calls that an
active strategy's error at its whole budget is worth (interpolated on random's learning curve, or extrapolated by
its power law)."""

import pytest

KEY = "test_forces_mae_meV_A"


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("active_learning")


def rows(strategy, errors, seed_cells=12, batch=12, seeds=(0,)):
    """One row per round and seed: round 0 is the seed set, each later one adds a batch; ``errors`` per round
    (a list of per-seed values or one value for all seeds)."""
    out = []
    for i, e in enumerate(errors):
        for k, seed in enumerate(seeds):
            value = e[k] if isinstance(e, (list, tuple)) else e
            out.append({"strategy": strategy, "seed": seed, "calls": i * batch, "cells": seed_cells + i * batch,
                        KEY: value})
    return out


def power_law(cells, a=1000.0, p=-0.5):
    return a * cells**p


def test_random_against_itself_is_worth_its_own_calls(bench):
    curve = [power_law(12 + 12 * i) for i in range(5)]
    r = rows("random", curve) + rows("uncertainty", curve)
    q = bench.random_equivalent_calls(r, KEY, "uncertainty")
    assert q["calls"] == 48 and not q["extrapolated"]
    assert q["random_calls"] == pytest.approx(48.0) and q["ratio"] == pytest.approx(1.0)


def test_within_random_curve_is_loglog_interpolation(bench):
    # random: a power law in labelled cells, so log-log interpolation between its rounds is exact
    random = rows("random", [power_law(12 + 12 * i) for i in range(5)])
    active = rows("uncertainty", [power_law(12), power_law(30), power_law(54)])  # 24 calls worth 42 random calls
    q = bench.random_equivalent_calls(random + active, KEY, "uncertainty")
    assert q["calls"] == 24 and not q["extrapolated"]
    assert q["random_calls"] == pytest.approx(42.0, rel=1e-9) and q["ratio"] == pytest.approx(1.75)


def test_below_random_curve_extrapolates_its_power_law_without_the_seed_round(bench):
    # the seed round lies off the power law: the fit must leave it out (it is common to every strategy)
    random = rows("random", [500.0] + [power_law(12 + 12 * i, p=-0.4) for i in range(1, 5)])
    active = rows("uncertainty", [500.0, power_law(60, p=-0.4), power_law(120, p=-0.4)])
    q = bench.random_equivalent_calls(random + active, KEY, "uncertainty")
    assert q["extrapolated"] and q["exponent"] == pytest.approx(-0.4)
    assert q["random_calls"] == pytest.approx(108.0, rel=1e-9) and q["ratio"] == pytest.approx(4.5)


def test_seed_means_and_missing_curves(bench):
    # two seeds: the curve is their mean; a strategy without rows, or random without two rounds, gives None
    random = rows("random", [[120.0, 80.0], [90.0, 70.0], [70.0, 60.0]], seeds=(0, 1))
    active = rows("uncertainty", [[120.0, 80.0], [80.0, 80.0]], seeds=(0, 1))
    q = bench.random_equivalent_calls(random + active, KEY, "uncertainty")
    assert q["calls"] == 12 and q["random_calls"] == pytest.approx(12.0)  # mean 80 = random's mean at 12 calls
    assert bench.random_equivalent_calls(random, KEY, "uncertainty") is None
    assert bench.random_equivalent_calls(random[:2] + active, KEY, "uncertainty") is None
    flat = rows("random", [50.0, 60.0, 70.0])  # error rising with data: no power law to extrapolate below it
    q = bench.random_equivalent_calls(flat + rows("uncertainty", [50.0, 40.0]), KEY, "uncertainty")
    assert q["random_calls"] is None and q["note"]


def test_calls_to_reach_takes_the_first_round_whose_seed_mean_is_below(bench):
    r = rows("uncertainty", [[100.0, 90.0], [70.0, 66.0], [60.0, 70.0]], seeds=(0, 1))
    assert bench.calls_to_reach(r, KEY, 68.0) == 12
    assert bench.calls_to_reach(r, KEY, 64.0) is None


def test_extrapolation_only_where_random_falls_steadily_and_not_too_far(bench):
    noisy = rows("random", [0.12, 0.108, 0.084, 0.094, 0.083])  # e.g. Γ-mode errors: up and down with data
    q = bench.random_equivalent_calls(noisy + rows("uncertainty", [0.12, 0.05]), KEY, "uncertainty")
    assert q["random_calls"] is None and q["ratio"] is None and "does not fall steadily" in q["note"]
    steady = rows("random", [power_law(12 + 12 * i) for i in range(5)])  # largest set 60 cells
    q = bench.random_equivalent_calls(steady + rows("uncertainty", [power_law(12), power_law(1000)]), KEY,
                                      "uncertainty")
    assert q["extrapolated"] and q["random_calls"] == pytest.approx(2 * 60 - 12) and "at least" in q["note"]
    worse = bench.random_equivalent_calls(steady + rows("uncertainty", [power_law(12), 1e3]), KEY, "uncertainty")
    assert worse["random_calls"] == 0.0 and worse["note"] is None


def vf_row(calls, v0, err=0.05, reference=(7.40, 0.10)):
    return {"calls": calls, "vF_v0_1e5_m_s": {"300.0": v0} if v0 is not None else {},
            "vF_v0_err": {"300.0": err} if v0 is not None else {}, "vF_reference": {"300.0": (*reference, 1.02)}}


def test_seed_mean_vf_uses_the_seeds_standard_error_and_the_reference_error(bench):
    rows = [vf_row(0, 6.9), vf_row(0, 7.1), vf_row(0, 7.0),  # mean 7.0, standard error 0.1/sqrt(3)
            vf_row(12, 7.35), vf_row(12, 7.45), vf_row(12, 7.40),
            vf_row(24, 7.40), vf_row(24, None)]  # a refused model: the round is not within
    m = bench.seed_mean_vf(rows)
    assert m[0]["v0"]["300.0"] == pytest.approx(7.0) and m[0]["err"]["300.0"] == pytest.approx(0.1 / 3**0.5)
    assert m[0]["z"] == pytest.approx(0.4 / (0.01 + 0.01 / 3) ** 0.5)
    assert m[12]["z"] == pytest.approx(0.0, abs=1e-9) and m[24]["z"] == float("inf")
    one = bench.seed_mean_vf([vf_row(0, 7.2, err=0.2)])  # one seed: its own Monte Carlo error
    assert one[0]["z"] == pytest.approx(0.2 / (0.04 + 0.01) ** 0.5)


def test_calls_staying_within_needs_every_later_round(bench):
    per_calls = {0: {"z": 3.0}, 12: {"z": 0.8}, 24: {"z": 1.4}, 36: {"z": 0.6}, 48: {"z": 0.9}}
    assert bench.calls_staying_within_1sigma(per_calls) == 36
    assert bench.calls_staying_within_1sigma({**per_calls, 48: {"z": 1.1}}) is None
    assert bench.calls_staying_within_1sigma({0: {"z": 0.5}, 12: {"z": 0.2}}) == 0


def test_ranking_diagnostics_count_the_oracle_picks_the_models_own_ranking_shares(bench, tmp_path):
    import json

    record = {"picked": [3, 7], "score": "both", "candidates": [1, 3, 5, 7],
              "force_error_eV_A": [0.1, 0.4, 0.2, 0.3], "H_error_eV": [0.01, 0.04, 0.02, 0.03],
              # the model's own ranking (forces and H each over its pool mean, added): 5 first, then 3, 1, 7
              "force_spread_eV_A": [0.2, 0.3, 0.5, 0.1], "H_spread_eV": [0.02, 0.03, 0.05, 0.01]}
    path = tmp_path / "picked.json"
    path.write_text(json.dumps(record))
    d = bench.ranking_diagnostics(path, {"pool_spearman_forces": 0.2, "pool_spearman_H": 0.4})
    assert d == {"pool_spearman_forces": 0.2, "pool_spearman_H": 0.4, "uncertainty_overlap": 1, "batch": 2}
    record.pop("force_error_eV_A")  # a round that ranked by spreads: nothing to compare
    path.write_text(json.dumps(record))
    assert bench.ranking_diagnostics(path, {}) == {}
    assert bench.ranking_diagnostics(tmp_path / "none.json", {}) == {}
