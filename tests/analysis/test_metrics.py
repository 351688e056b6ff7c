"""Metric values checked against hand computations on the small run of conftest.py."""

import numpy as np
import pytest

from crowdlab.analysis import convergence, equilibrium, load, round_metrics


def _row(metrics, cond, rnd):
    return metrics[(metrics["condition_id"] == cond) & (metrics["round"] == rnd)].iloc[0]


def test_round_one_p_two_thirds_by_hand(small_run):
    m = round_metrics(small_run)
    r = _row(m, "c000", 1)  # valid guesses 50, 30, 20, 20, 40; one unparseable
    assert (r["n"], r["n_valid"], r["n_invalid"]) == (6, 5, 1)
    assert r["mean"] == pytest.approx(32.0)
    assert r["median"] == 30.0
    assert r["std"] == pytest.approx(np.sqrt(680 / 4))
    assert r["mode"] == 20.0
    assert r["target"] == pytest.approx(64 / 3)
    assert (r["winning_value"], r["n_winners"]) == (20.0, 2)
    assert r["equilibrium"] == 0.0
    assert r["distance_to_equilibrium"] == pytest.approx(32.0)


def test_out_of_range_counts_as_invalid_and_ratio_of_means(small_run):
    r = _row(round_metrics(small_run), "c000", 2)  # 22, 22, 10, 0, 14 valid; 150 out of range
    assert r["n_invalid"] == 1
    assert r["mean"] == pytest.approx(13.6)
    assert r["mode"] == 22.0
    assert (r["winning_value"], r["n_winners"]) == (10.0, 1)
    assert r["mean_ratio"] == pytest.approx(13.6 / 32)


def test_offset_variant_target_and_equilibrium(small_run):
    m = round_metrics(small_run)
    r1 = _row(m, "c001", 1)  # 5 + 1/2 x mean; mean 155/6
    assert r1["target"] == pytest.approx(5 + 0.5 * 155 / 6)
    assert r1["winning_value"] == 12.5
    assert r1["median"] == 26.25
    assert r1["equilibrium"] == 10.0
    r2 = _row(m, "c001", 2)  # 20 x3, 10 x3: mean 15, target 12.5, winners the three 10s
    assert (r2["winning_value"], r2["n_winners"], r2["mode"]) == (10.0, 3, 10.0)
    assert r2["distance_to_equilibrium"] == pytest.approx(5.0)
    assert r2["distance_ratio"] == pytest.approx(5.0 / (155 / 6 - 10))
    assert r2["prompt"] == "P7"


def test_metrics_agree_with_engine_rounds_table(small_run):
    run = load(small_run)
    m = round_metrics(run).set_index(["condition_id", "round"])
    rounds = run.rounds.set_index(["condition_id", "round"])
    for col in ("n", "n_valid", "n_invalid", "mean", "median", "std", "target"):
        np.testing.assert_allclose(m[col].to_numpy(float), rounds.loc[m.index, col].to_numpy(float))


def test_by_group(make_run):
    run_dir = make_run(guesses={("c000", 0, 1): [10, 20, 30, 40]}, conditions={"c000": {"p": 0.5}})
    run = load(run_dir)
    assert round_metrics(run, by_group=True)["group"].tolist() == [0]


def test_group_with_no_valid_answer_keeps_its_counts(make_run):
    run_dir = make_run(guesses={("c000", 0, 1): [None, None], ("c000", 0, 2): [10, 30]},
                       conditions={"c000": {"p": 0.5}})
    m = round_metrics(run_dir)
    first = _row(m, "c000", 1)
    assert first["n_invalid"] == 2 and np.isnan(first["mean"]) and first["n_winners"] == 0
    assert _row(m, "c000", 2)["winning_value"] == 10.0


def test_equilibrium_cases():
    assert equilibrium(2 / 3).item() == 0.0
    assert equilibrium(0.5, 5.0).item() == 10.0
    assert equilibrium(4 / 3).item() == 100.0
    assert np.isnan(equilibrium(1.0).item())


def test_convergence_rounds_to_threshold(small_run):
    conv = convergence(round_metrics(small_run), threshold=6.0).set_index("condition_id")
    assert conv.loc["c001", "rounds_to_threshold"] == 2  # distance 15.8 then 5.0
    assert np.isnan(conv.loc["c000", "rounds_to_threshold"])  # 32 then 13.6
    assert conv.loc["c000", "mean_ratio_geo"] == pytest.approx(13.6 / 32)
