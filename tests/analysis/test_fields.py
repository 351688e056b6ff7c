"""Field-generic analysis (analysis/fields.py, field_reference.py, field_plots.py, the report's
answer sections) on runs the engine wrote from the shipped declarative configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml
from scipy import stats

from crowdlab.analysis import load, summary_markdown, write_report
from crowdlab.analysis.field_reference import distribution_distance, field_distances, field_fidelity
from crowdlab.analysis.fields import (
    answer_fields,
    breakdown_attributes,
    field_summary,
    is_beauty_contest,
    numeric_summary,
    option_shares,
)
from crowdlab.experiments import run
from crowdlab.experiments.answers import answer_arrow_fields, answer_field
from crowdlab.parquet_io import write_table_atomic

REPO = Path(__file__).parents[2]
CONFIGS = REPO / "experiments" / "configs"
CROWDLAB = [sys.executable, "-m", "crowdlab.flows.cli"]


def config(name: str, n: int, **changes) -> dict:
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    cfg["population"]["n"] = n
    cfg["population"]["spec"] = str(REPO / cfg["population"]["spec"])
    cfg.update(changes)
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("field_runs")
    return {
        "survey": run(config("survey", 300), run_id="s", runs_root=root).run_dir,
        "public_goods": run(config("public_goods", 80, rounds=3), run_id="pg", runs_root=root).run_dir,
        "dictator": run(config("dictator", 400), run_id="d", runs_root=root).run_dir,
    }


def decisions(run_dir: Path) -> pd.DataFrame:
    table = ds.dataset(run_dir / "decisions", format="parquet").to_table()
    return table.to_pandas()


def test_fields_read_from_the_schema_and_games_told_apart(runs, small_run):
    survey = load(runs["survey"])
    names = [f.name for f in answer_fields(survey)]
    assert names == ["trust", "life_satisfaction", "climate_worry", "economy", "news_source"]
    trust = answer_fields(survey)[0]
    assert trust.options() == ["1", "2", "3", "4", "5"] and trust.option_names()[0] == "1 strongly disagree"
    assert [f.name for f in answer_fields(load(runs["public_goods"]))] == ["contribution", "reasoning"]  # text last
    assert not is_beauty_contest(survey) and is_beauty_contest(load(small_run))
    assert answer_fields(load(small_run)) == []


def test_choice_and_scale_shares_match_the_decisions(runs):
    survey = load(runs["survey"])
    frame = decisions(runs["survey"])
    shares = option_shares(survey, "economy")
    expected = frame["answer_economy"].astype(str).value_counts(normalize=True)
    for option in ("getting better", "staying about the same", "getting worse"):
        assert shares[option].iloc[0] == pytest.approx(expected.get(option, 0.0))
    long = option_shares(survey, "trust", long=True)
    counts = frame["answer_trust"].value_counts()
    assert long["count"].tolist() == [int(counts.get(p, 0)) for p in range(1, 6)]
    assert (long["ci_low"] <= long["share"]).all() and (long["share"] <= long["ci_high"]).all()
    summary = field_summary(survey, "trust")  # scales: numeric summary and shares
    assert summary["mean"].iloc[0] == pytest.approx(frame["answer_trust"].mean())
    assert summary["5 strongly agree"].iloc[0] == pytest.approx((frame["answer_trust"] == 5).mean())


def test_breakdown_by_persona_attribute_matches_a_join(runs):
    survey = load(runs["survey"])
    frame = decisions(runs["survey"]).merge(pd.read_parquet(runs["survey"] / "personas" / "personas.parquet"),
                                            on="agent_id")
    table = numeric_summary(survey, "life_satisfaction", attribute="education").set_index("education")
    expected = frame.groupby("education")["answer_life_satisfaction"].agg(["mean", "size", "median"])
    assert set(table.index) == set(expected.index)
    for level, row in expected.iterrows():
        assert table.at[level, "mean"] == pytest.approx(row["mean"])
        assert table.at[level, "n"] == row["size"] and table.at[level, "median"] == pytest.approx(row["median"])
    shares = option_shares(survey, "news_source", attribute="sex").set_index("sex")
    for sex, group in frame.groupby("sex"):
        assert shares.at[sex, "social media"] == pytest.approx((group["answer_news_source"] == "social media").mean())
    assert {"sex", "age_group", "education"} <= set(breakdown_attributes(survey))
    with pytest.raises(KeyError):
        breakdown_attributes(survey, ["no_such_column"])


def test_numeric_summary_per_round(runs):
    pg = load(runs["public_goods"])
    frame = decisions(runs["public_goods"])
    table = numeric_summary(pg, "contribution").set_index("round")
    for rnd, group in frame.groupby("round"):
        v = group["answer_contribution"].to_numpy(float)
        half = 1.959963984540054 * v.std(ddof=1) / np.sqrt(v.size)
        assert table.at[rnd, "mean"] == pytest.approx(v.mean())
        assert table.at[rnd, "ci_low"] == pytest.approx(v.mean() - half)
        assert table.at[rnd, "q25"] == pytest.approx(np.quantile(v, 0.25))
        assert table.at[rnd, "q90"] == pytest.approx(np.quantile(v, 0.9))


def test_multi_choice_and_ranking_shares(runs, tmp_path):
    """A run whose decisions also hold a multi-choice and a ranking column (written with the
    declared Arrow fields): shares of selections and of first places."""
    import shutil

    copy = tmp_path / "s"
    shutil.copytree(runs["survey"], copy)
    declared = {"pick": answer_field({"type": "multi_choice", "options": ["a", "b", "c"]}),
                "rank": answer_field({"type": "ranking", "options": ["x", "y", "z"]})}
    fields = [f for f in answer_arrow_fields(declared) if f.name != "answer_errors"]
    for path in (copy / "decisions").rglob("*.parquet"):
        table = pq.read_table(path)
        n = table.num_rows
        ids = table["agent_id"].to_numpy()
        pick = [None if i % 5 == 0 else (["a", "b"] if i % 2 else ["c"]) for i in ids]
        rank = [["y", "x", "z"] if i % 3 else ["z", "y", "x"] for i in ids]
        table = table.append_column(fields[0], pa.array(pick, fields[0].type))
        table = table.append_column(fields[1], pa.array(rank, fields[1].type))
        assert table.num_rows == n
        write_table_atomic(table, path)
    data = load(copy)
    ids = np.arange(300)
    answered = ids % 5 != 0
    shares = option_shares(data, "pick").iloc[0]
    assert shares["n_valid"] == answered.sum()
    assert shares["a"] == pytest.approx((answered & (ids % 2 == 1)).sum() / answered.sum())
    assert shares["c"] == pytest.approx((answered & (ids % 2 == 0)).sum() / answered.sum())
    first = option_shares(data, "rank").iloc[0]
    assert first["y"] == pytest.approx((ids % 3 != 0).mean()) and first["x"] == 0.0
    assert first["z"] == pytest.approx((ids % 3 == 0).mean())


def test_distance_by_hand():
    same = distribution_distance(np.array([0, 0, 1, 1.0]), np.array([0, 1.0]), np.array([0.5, 0.5]))
    assert same["wasserstein"] == 0 and same["ks"] == 0
    far = distribution_distance(np.zeros(4), np.array([1.0]), np.array([1.0]))
    assert far["wasserstein"] == 1 and far["ks"] == 1 and far["wasserstein_ci_low"] == 1
    half = distribution_distance(np.array([0, 2.0]), np.array([1.0]), np.array([1.0]))
    assert half["wasserstein"] == pytest.approx(1.0) and half["ks"] == pytest.approx(0.5)


def test_fidelity_and_distances_against_reference_rows(runs, tmp_path, monkeypatch):
    dictator = load(runs["dictator"])
    give = decisions(runs["dictator"])["answer_give"].to_numpy(float)
    fid = field_fidelity(dictator).set_index("statistic")  # the shipped Engel (2011) rows
    assert fid.at["mean", "sim"] == pytest.approx(give.mean() / 10) and fid.at["mean", "human"] == 0.2835
    assert fid.at["share_at:0", "sim"] == pytest.approx((give == 0).mean())
    assert fid.at["share_at:0.5", "sim"] == pytest.approx((give == 5).mean())
    assert fid.at["mean", "diff"] == pytest.approx(give.mean() / 10 - 0.2835)
    assert fid.at["mean", "human_in_ci"] == bool(fid.at["mean", "sim_ci_low"] <= 0.2835 <= fid.at["mean", "sim_ci_high"])
    assert field_distances(dictator).empty  # no shipped source gives a whole distribution
    # a reference folder with a whole distribution (test numbers, not a source)
    ref = tmp_path / "ref"
    ref.mkdir()
    rows = pd.DataFrame({"dataset": "test", "game": "dictator", "field": "give",
                         "statistic": ["share_at:0", "share_at:0.3", "share_at:0.5"], "round": 1,
                         "value": [0.5, 0.2, 0.3], "value_low": None, "value_high": None, "scale": "pie",
                         "unit": "share", "source": "test rows", "note": ""})
    rows.to_csv(ref / "answer_fields.csv", index=False)
    monkeypatch.setenv("CROWDLAB_REFERENCE_DIR", str(ref))
    dist = field_distances(dictator, n_boot=200)
    assert len(dist) == 1
    row = dist.iloc[0]
    expected = stats.wasserstein_distance(give / 10, [0, 0.3, 0.5], v_weights=[0.5, 0.2, 0.3])
    assert row["wasserstein"] == pytest.approx(expected)
    points = np.array([0, 0.3, 0.5, 1.0])
    gap = np.abs([(give / 10 <= x).mean() - np.interp(x, [0, 0.3, 0.5], [0.5, 0.7, 1.0]) for x in points]).max()
    assert row["ks"] == pytest.approx(gap)
    assert row["wasserstein_ci_low"] <= row["wasserstein"] <= row["wasserstein_ci_high"]
    assert field_distances(dictator, n_boot=200).equals(dist)  # seeded


@pytest.mark.slow
def test_report_of_a_public_goods_run(runs, tmp_path):
    pg = load(runs["public_goods"])
    page = write_report(pg, tmp_path / "pg.html").read_text()
    assert "Answers per condition and round" in page and "tokens contributed to the project" in page
    assert "Level-k" not in page and "Mean guess" not in page and "p=nan" not in page
    assert page.count("data:image/png;base64,") >= 4  # means, histogram, one per breakdown
    assert "ledyard1995" in page and "Answers by education" in page
    markdown = summary_markdown(pg)
    assert "## contribution per round" in markdown and "ledyard1995" in markdown
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([*CROWDLAB, "report", str(runs["public_goods"]), "--out", str(tmp_path / "cli.html")],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "contribution per round" in out.stdout and (tmp_path / "cli.html").is_file()
    assert max(len(line) for line in out.stdout.splitlines()) <= 80


@pytest.mark.slow
def test_report_of_a_survey_breaks_down_every_item(runs, tmp_path):
    page = write_report(load(runs["survey"]), tmp_path / "s.html", breakdown_attributes=["sex"]).read_text()
    for name in ("trust", "life_satisfaction", "climate_worry", "economy", "news_source"):
        assert f"<h3>{name} by sex</h3>" in page
    assert "No human reference data for this game" in page
    with pytest.raises(KeyError):
        write_report(load(runs["survey"]), tmp_path / "x.html", breakdown_attributes=["nope"])
