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
