import numpy as np
import pandas as pd
import pytest

from crowdlab.analysis import field_contests, fidelity, human_reference, paper_comparison, paper_reference


def test_human_reference_rows_carry_sources_and_nagel_figures():
    ref = human_reference()
    assert ref["source"].str.contains("Nagel").all()
    pooled = ref[ref["dataset"] == "nagel1995_pooled"].set_index("p_label")
    assert pooled.loc["2/3", ["subjects", "mean", "median"]].tolist() == [67, 36.73, 33]
    assert pooled.loc["4/3", "equilibrium"] == 100
    session = ref[(ref["dataset"] == "nagel1995_session") & (ref["p_label"] == "1/2")]
    assert session.sort_values("period")["mean"].tolist() == [23.7, 10.9, 5.3, 8.1]


def test_field_contests_ship_no_unverified_figures():
    contests = field_contests()
    assert contests["source"].notna().all()
    bosch = contests[contests["contest"].str.contains("Bosch")]
    numeric = ["entries", "valid_entries", "invalid_entries", "winning_value", "approx_mean"]
    assert bosch[numeric].isna().all().all()
    assert contests.loc[contests["contest"].str.contains("Financial"), "winning_value"].item() == 13


def test_paper_reference_table():
    paper = paper_reference()
    row = paper[(paper["model"] == "Qwen2-72B") & (paper["prompt"] == "P2") & (paper["metric"] == "std")
                & (paper["table"] == "round1_by_prompt")]
    assert row["value"].item() == 8.39
    assert paper["source"].str.contains("2407.17789").all()


def test_fidelity_against_nagel(make_run):
    run_dir = make_run(guesses={("c000", 0, 1): [30, 40, 50], ("c000", 0, 2): [20, 30, 40]},
                       conditions={"c000": {"p": 2 / 3}})
    fid = fidelity(run_dir)
    round1 = fid[fid["round"] == 1].set_index("dataset")
    assert set(round1.index) == {"nagel1995_pooled", "nagel1995_session"}
    assert round1.loc["nagel1995_pooled", "mean_diff"] == pytest.approx(40 - 36.73)
    assert round1.loc["nagel1995_pooled", "median_diff"] == pytest.approx(40 - 33)
    assert round1["mean_diff_scaled"].isna().all()  # no documented spread shipped
    round2 = fid[fid["round"] == 2].iloc[0]
    assert round2["human_mean"] == 28.6 and round2["mean_diff"] == pytest.approx(30 - 28.6)


def test_fidelity_scaled_when_spread_given_and_no_match_for_other_games(make_run):
    run_dir = make_run(guesses={("c000", 0, 1): [30, 40, 50]}, conditions={"c000": {"p": 2 / 3}})
    ref = human_reference().assign(spread=10.0)
    fid = fidelity(run_dir, reference=ref)
    assert fid.loc[fid["dataset"] == "nagel1995_pooled", "mean_diff_scaled"].item() == pytest.approx(0.327)
    other = make_run("run-b", guesses={("c000", 0, 1): [30]}, conditions={"c000": {"p": 0.51}})
    assert fidelity(other).empty


def test_paper_comparison_matches_model_and_prompt(make_run):
    run_dir = make_run(guesses={("c000", 0, 1): [10, 20, 30]},
                       conditions={"c000": {"p": 2 / 3, "prompt": "P2"}}, model="Qwen/Qwen2-72B-Instruct")
    comp = paper_comparison(run_dir).set_index(["paper_table", "metric"])
    assert comp.loc[("round1_by_prompt", "mean"), "paper_value"] == 19.15
    assert comp.loc[("round1_by_prompt", "mean"), "diff"] == pytest.approx(20 - 19.15)
    assert comp.loc[("five_rounds", "mean"), "paper_value"] == 19.15
    behavioral = make_run("run-b", guesses={("c000", 0, 1): [10]}, conditions={"c000": {"p": 2 / 3, "prompt": "P2"}})
    assert paper_comparison(behavioral).empty
