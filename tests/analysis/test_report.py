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


# ---- issue 12, item 15: a report that reads the same at 1, 12 and 48 conditions ----------------

import struct  # noqa: E402
from itertools import product  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402

from crowdlab.analysis import load, round_metrics  # noqa: E402
from crowdlab.analysis.plots import level_k_spikes, mean_and_target  # noqa: E402

P_LEVELS = {"0.5": 0.5, "0.6667": 2 / 3, "1.3333": 4 / 3}


def factorial(make_run, taus: tuple[str, ...] = ("",), n: int = 30, rounds: tuple[int, ...] = (1, 2)):
    """variant (4) x p (3) [x tau]: 12 or 48 conditions named c000... in design order."""
    rng = np.random.default_rng(1)
    conditions, guesses = {}, {}
    for i, (variant, p, tau) in enumerate(product(["P1", "P2", "P3", "P4"], P_LEVELS, taus)):
        cid = f"c{i:03d}"
        conditions[cid] = {"p": P_LEVELS[p], "scenario.variant": variant, "scenario.p": p}
        if tau:
            conditions[cid]["backend.tau"] = tau
        for r in rounds:
            guesses[(cid, 0, r)] = list(np.clip(rng.normal(50 * P_LEVELS[p] ** r, 10, n).round(), 0, 100))
    personas = pd.DataFrame({"agent_id": np.arange(n, dtype=np.int64),
                             "education": rng.choice(["bachelor", "phd", "high school"], n)})
    return make_run(guesses=guesses, conditions=conditions, personas=personas)


def _section(page: str, anchor: str) -> str:
    start = page.index(f'id="{anchor}"')
    return page[start:page.index("<h2", start)]


def _png_sizes(page: str) -> list[tuple[int, int]]:
    import base64
    sizes = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        head = base64.b64decode(data[:64])
        sizes.append(struct.unpack(">II", head[16:24]))
    return sizes


def test_run_section_is_a_key_value_summary_with_the_manifest_folded(make_run, tmp_path):
    page = write_report(factorial(make_run), tmp_path / "r.html").read_text()
    run = _section(page, "run")
    assert '<dl class="run">' in run
    for item in ("experiment", "run id", "status", "seed", "rounds", "conditions"):
        assert f"<dt>{item}</dt>" in run
    assert re.search(r"<dd>12: (variant \(4\) x p \(3\)|p \(3\) x variant \(4\))</dd>", run)
    # no wide table: the conditions table has id + factors + p/offset/range at most
    for table in re.findall(r"<table.*?</table>", run, flags=re.S):
        assert table.count("<th") <= 8, "the Run section must not dump the manifest as a wide table"
    assert re.search(r"<details><summary>Full manifest of run-a</summary><pre>", run)


def test_every_figure_names_its_conditions_by_factor_values(make_run, tmp_path):
    page = write_report(factorial(make_run), tmp_path / "r.html").read_text()
    alts = re.findall(r'<img alt="([^"]*)"', page)
    assert len(alts) >= 4
    for alt in alts:
        assert re.search(r"c004 (variant=P2, p=0\.6667|p=0\.6667, variant=P2)", alt), alt[:200]


def test_figures_stay_bounded_at_48_conditions(make_run, tmp_path):
    page = write_report(factorial(make_run, taus=("0.5", "1.5", "3", "5"), n=12), tmp_path / "r.html").read_text()
    sizes = _png_sizes(page)
    # four figures (no human data at these n? p = 2/3 matches, so four) plus one per breakdown
    assert 4 <= len(sizes) <= 6
    for width, height in sizes:
        assert width <= 1500 and height <= 2400, (width, height)
    assert re.search(r"c047 \w+=[\w.]+, \w+=[\w.]+, \w+=[\w.]+", page)


def test_mean_and_target_uses_small_multiples_with_legends_outside(make_run):
    metrics = round_metrics(load(factorial(make_run, taus=("0.5", "1.5", "3", "5"), n=8)))
    fig = mean_and_target(metrics)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 12  # 12 panels of the other two factors, the last 4-level factor as colour
    assert fig.legends and not any(ax.get_legend() for ax in axes)
    legend_box = fig.legends[0].get_window_extent(fig.canvas.get_renderer())
    for ax in axes:
        assert not legend_box.overlaps(ax.get_window_extent())
        colours = [line.get_color() for line in ax.get_lines() if line.get_linestyle() == "-"]
        assert len(colours) == 4 and len(set(colours)) == 4  # never a repeated colour in a panel
        assert re.fullmatch(r"\w+=[\w.]+, \w+=[\w.]+", ax.get_title()), ax.get_title()
    plt.close(fig)


def test_level_k_labels_do_not_overlap(make_run):
    # p = 1/2: L1@50 = L2@100 = 25 and L2@50 = L3@100 = 12.5 coincide; p = 4/3 piles five points at 100
    guesses = {(c, 0, 1): [25, 12, 50, 60, 100] for c in ("c000", "c001", "c002")}
    conditions = {"c000": {"p": 0.5}, "c001": {"p": 0.5, "offset": 5.0}, "c002": {"p": 4 / 3}}
    fig = level_k_spikes(make_run(guesses=guesses, conditions=conditions))
    renderer = fig.canvas.get_renderer()
    labels = [t for ax in fig.axes for t in ax.texts if re.match(r"^(L\d@|EQ)", t.get_text())]
    assert labels and {"L1@50/L2@100", "L2@50/L3@100"} <= {t.get_text() for t in labels}
    boxes = [t.get_window_extent(renderer) for t in labels]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)
    plt.close(fig)


def test_pairwise_tests_carry_a_multiple_comparison_note_and_holm_p(make_run, tmp_path):
    page = write_report(factorial(make_run), tmp_path / "r.html").read_text()
    tests = _section(page, "tests")
    assert "Multiple comparisons." in tests and "Holm" in tests
    assert "mannwhitney_p_adj" in tests and "differs in" in tests
    # 12 conditions: only pairs differing in one factor, 30 of them, over 2 rounds
    assert "60 comparisons" in tests
