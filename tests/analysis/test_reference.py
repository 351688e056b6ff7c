import numpy as np
import pandas as pd
import pytest

from crowdlab.analysis import (
    field_contests, fidelity, human_reference, paper_comparison, paper_reference, summary_markdown, write_report,
)
from crowdlab.analysis.reference import P_TOLERANCE


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
    fid = fidelity(other)
    assert fid["dataset"].isna().all() and len(fid) == 1
    assert fid["note"].item() == "no human data for p = 0.51 (have 0.5, 0.6667, 1.333)"


def test_paper_comparison_matches_model_and_prompt(make_run):
    run_dir = make_run(guesses={("c000", 0, 1): [10, 20, 30]},
                       conditions={"c000": {"p": 2 / 3, "prompt": "P2"}}, model="Qwen/Qwen2-72B-Instruct")
    comp = paper_comparison(run_dir).set_index(["paper_table", "metric"])
    assert comp.loc[("round1_by_prompt", "mean"), "paper_value"] == 19.15
    assert comp.loc[("round1_by_prompt", "mean"), "diff"] == pytest.approx(20 - 19.15)
    assert comp.loc[("five_rounds", "mean"), "paper_value"] == 19.15
    behavioral = make_run("run-b", guesses={("c000", 0, 1): [10]}, conditions={"c000": {"p": 2 / 3, "prompt": "P2"}})
    assert paper_comparison(behavioral).empty


def test_paper_variants_conditions_written_to_4_decimals_match_two_thirds(make_run):
    """paper_variants crosses p in [0.5, 0.51, 0.6667]: the 0.6667 conditions are the 2/3 game."""
    guesses = {(c, 0, r): [30, 40, 50] for c in ("c000", "c001", "c002") for r in (1, 2)}
    run_dir = make_run(guesses=guesses, conditions={"c000": {"p": 0.5}, "c001": {"p": 0.51}, "c002": {"p": 0.6667}})
    fid = fidelity(run_dir)
    matched = fid.dropna(subset=["dataset"])
    assert set(matched["condition_id"]) == {"c000", "c002"}
    two_thirds = matched[(matched["condition_id"] == "c002") & (matched["dataset"] == "nagel1995_pooled")]
    assert two_thirds["human_mean"].item() == 36.73 and two_thirds["mean_diff"].item() == pytest.approx(40 - 36.73)
    assert set(matched.loc[matched["condition_id"] == "c002", "round"]) == {1, 2}  # sessions go on for 4 periods
    assert (matched["note"] == "").all()
    note = fid.loc[fid["condition_id"] == "c001"]
    assert len(note) == 1 and pd.isna(note["round"].item())
    assert note["note"].item() == "no human data for p = 0.51 (have 0.5, 0.6667, 1.333)"


@pytest.mark.parametrize("p, matches", [(2 / 3, True), (0.6667, True), (0.66667, True),
                                        (2 / 3 + 0.99 * P_TOLERANCE, True), (2 / 3 - 0.99 * P_TOLERANCE, True),
                                        (2 / 3 + 1.01 * P_TOLERANCE, False), (0.667, False), (0.6666, False)])
def test_p_tolerance_fits_a_4_digit_decimal(make_run, p, matches):
    fid = fidelity(make_run(guesses={("c000", 0, 1): [30]}, conditions={"c000": {"p": p}}))
    assert fid["dataset"].notna().any() == matches
    if not matches:
        assert "for 2/3 write p: 2/3 or 0.6667" in fid["note"].item()


def test_the_note_says_which_rule_has_no_human_data(make_run):
    guesses = {(c, 0, 1): [30] for c in ("c000", "c001", "c002")}
    conditions = {"c000": {"p": 0.5, "offset": 5.0}, "c001": {"p": 2 / 3, "hi": 200.0},
                  "c002": {"p": 2 / 3}}
    fid = fidelity(make_run(guesses=guesses, conditions=conditions)).set_index("condition_id")
    assert fid.loc["c000", "note"] == "no human data for p = 0.5 with offset 5 (have offset 0)"
    assert fid.loc["c001", "note"] == "no human data for p = 0.6667 on [0, 200] (have [0, 100])"
    assert (fid.loc["c002", "note"] == "").all()
    late = make_run("run-b", guesses={("c000", 0, 9): [30]}, conditions={"c000": {"p": 2 / 3}})
    assert fidelity(late)["note"].item() == "no human data for p = 0.6667 in rounds 9 (have periods 1, 2, 3, 4)"


def test_paper_comparison_matches_p_written_to_4_decimals(make_run):
    run_dir = make_run(guesses={("c000", 0, 1): [10, 20, 30]},
                       conditions={"c000": {"p": 0.6667, "prompt": "P2"}}, model="Qwen/Qwen2-72B-Instruct")
    comp = paper_comparison(run_dir).set_index(["paper_table", "metric"])
    assert comp.loc[("round1_by_prompt", "mean"), "paper_value"] == 19.15


def test_report_shows_the_human_comparison_and_why_a_condition_has_none(make_run, tmp_path):
    """The demo writes p: 0.6667: its report compares with Nagel; a p without data says why."""
    guesses = {(c, 0, r): [30, 40, 50] for c in ("c000", "c001") for r in (1, 2)}
    run_dir = make_run(guesses=guesses, conditions={"c000": {"p": 0.6667}, "c001": {"p": 0.55}})
    html = write_report(run_dir, tmp_path / "report.html").read_text()
    section = html[html.index("Against human data</h2>"):html.index("Against the AgentScope paper</h2>")]
    assert "nagel1995_pooled" in section and "36.73" in section
    assert "no human data for p = 0.55 (have 0.5, 0.6667, 1.333)" in section
    digest = summary_markdown(run_dir)
    assert "nagel1995_pooled" in digest and "c001: no human data for p = 0.55" in digest
