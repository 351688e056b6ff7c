import re

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from crowdlab.analysis import summary_markdown, summary_table, write_report
from crowdlab.flows.cli_report import report


@pytest.fixture
def replicated_run(make_run):
    """Two conditions x two replicates x three rounds of 60 agents, with personas."""
    rng = np.random.default_rng(0)
    personas = pd.DataFrame({"agent_id": np.arange(60, dtype=np.int64),
                             "education": rng.choice(["bachelor", "phd"], 60)})
    guesses = {(c, rep, r): list(np.clip(rng.normal(50 * p ** r, 8, 60).round(), 0, 100))
               for c, p in (("c000", 2 / 3), ("c001", 0.5)) for rep in range(2) for r in (1, 2, 3)}
    guesses[("c000", 0, 1)][0] = None
    conditions = {"c000": {"p": 2 / 3, "prompt": "P1"}, "c001": {"p": 0.5, "prompt": "P1"}}
    return make_run(guesses=guesses, conditions=conditions, personas=personas)


def test_report_html_embeds_plots_and_tables(replicated_run, tmp_path):
    path = write_report(replicated_run, tmp_path / "out" / "report.html")
    page = path.read_text()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)) >= 5
    assert page.count("<table") >= 8
    assert "Mean guess by education" in page and "Breakdown by education" in page
    assert "Nagel (1995)" in page and "mannwhitney_p" in page


def test_report_defaults_into_the_run_folder(small_run):
    assert write_report(small_run) == small_run / "report.html"
    assert (small_run / "report.html").is_file()


def test_report_unknown_breakdown_attribute(small_run, tmp_path):
    with pytest.raises(KeyError, match="hair"):
        write_report(small_run, tmp_path / "r.html", breakdown_attributes=["hair"])


def test_summary_table_pools_replicates(replicated_run):
    table = summary_table(replicated_run)
    row = table[(table["condition_id"] == "c000") & (table["round"] == 1)].iloc[0]
    assert (row["replicates"], row["n"], row["n_invalid"]) == (2, 120, 1)
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]


def test_summary_markdown(replicated_run):
    text = summary_markdown(replicated_run)
    assert text.startswith("# crowdlab run run-a")
    assert "| condition_id | round |" in text
    assert "nagel1995_pooled" in text and "Sources: " in text


def test_cli_report_prints_table_and_writes_html(replicated_run, tmp_path):
    app = typer.Typer()
    app.command()(report)
    out = tmp_path / "cli.html"
    result = CliRunner().invoke(app, [str(replicated_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "c001" in result.output and "report:" in result.output
    assert "data:image/png;base64," in out.read_text()


def test_cli_report_bad_folder_exits_with_message(tmp_path):
    app = typer.Typer()
    app.command()(report)
    (tmp_path / "nothing").mkdir()
    result = CliRunner().invoke(app, [str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "neither a run folder" in result.output
