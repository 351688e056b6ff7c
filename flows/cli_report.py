"""`crowdlab report RUN`: write the HTML report of a run and print its summary table.

The printout fits an 80-column terminal (or `COLUMNS`), also when piped: conditions are listed
once with their factor values, and the per-round table carries only short columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table



def _cell(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.2f}"
    return str(value)


def narrow_table(*headers: str, left: tuple[str, ...] = ("cond",)) -> Table:
    """A table without vertical rules and one space between columns: ten numeric columns fit
    in 80 characters."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)
    for header in headers:
        table.add_column(header, justify="left" if header in left else "right", no_wrap=True)
    return table


def print_conditions(console: Console, labels: dict[str, str]) -> None:
    """``c000  variant=P1, p=0.5``: what each condition id in the tables stands for."""
    if len(labels) < 2 and all(label.startswith(cid) for cid, label in labels.items()):
        return
    for cid, label in labels.items():
        console.print(f"  {cid}  {label}", highlight=False, markup=False)


def report(
    run: Path = typer.Argument(..., help="Run folder, or experiment folder holding several runs."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default RUN/report.html)."),
) -> None:
    """Write a self-contained HTML report of RUN and print the per-round summary."""
    from crowdlab.analysis import RunFolderError, load, round_metrics, summary_table, write_report
    from crowdlab.analysis.fields import is_beauty_contest
    from crowdlab.analysis.plots import run_facets

    console = Console()
    try:
        data = load(run)
        if not is_beauty_contest(data):  # any other game: its answer fields
            _report_fields(console, data, out)
            return
        metrics = round_metrics(data)
    except (RunFolderError, ValueError) as exc:
        Console(stderr=True).print(f"error: run: {exc}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    summary = summary_table(data, metrics)
    summary["95% CI"] = [
        "" if np.isnan(lo) else f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(summary["ci_low"], summary["ci_high"])
    ]
    reps = summary["replicates"].unique()
    console.print(f"crowdlab run {', '.join(data.run_ids)}: {summary['condition_id'].nunique()} condition(s)"
                  + (f", {reps[0]} replicate(s) pooled" if len(reps) == 1 else ""), highlight=False, markup=False)
    print_conditions(console, run_facets(data).labels)
    columns = {"condition_id": "cond", "round": "round", "replicates": "reps", "n": "n", "n_invalid": "invalid",
               "mean": "mean", "95% CI": "95% CI", "median": "median", "target": "target",
               "winning_value": "winner"}
    if len(reps) == 1:
        del columns["replicates"]
    table = narrow_table(*columns.values())
    for row in summary[list(columns)].itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    console.print(table)
    path = write_report(data, out)
    console.print(f"report: {path}", highlight=False, markup=False)


def _report_fields(console: Console, data, out: Optional[Path]) -> None:
    """A game that is not the beauty contest: the first answer field per round, then the report."""
    from crowdlab.analysis import write_report

    console.print(f"crowdlab run {', '.join(data.run_ids)}: {data.conditions['condition_id'].nunique()} condition(s)",
                  highlight=False, markup=False)
    print_field_rounds(console, data)
    path = write_report(data, out)
    console.print(f"report: {path}", highlight=False, markup=False)


def print_field_rounds(console: Console, data) -> None:  # type: ignore[no-untyped-def]
    """The conditions, the primary answer field per round and the interviews of a game that is not
    the beauty contest (what ``crowdlab report`` and the end of ``crowdlab run`` print)."""
    from crowdlab.analysis.field_plots import field_facets
    from crowdlab.analysis.field_report import first_field_summary

    summary = first_field_summary(data)
    print_conditions(console, field_facets(data).labels)
    if not summary.empty:
        console.print(f"{summary['field'].iloc[0]} per round (replicates pooled):", highlight=False, markup=False)
        summary = summary.assign(**{"95% CI": [
            "" if np.isnan(lo) else f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(summary["ci_low"], summary["ci_high"])]})
        shown = [c for c in ("condition_id", "round", "n", "n_valid", "mean", "option", "share", "95% CI", "median")
                 if c in summary]
        table = narrow_table(*["cond" if c == "condition_id" else c for c in shown])
        for row in summary[shown].itertuples(index=False):
            table.add_row(*(_cell(v) for v in row))
        console.print(table)
    else:  # a scenario that answers one number (the opinion scenario's stance): the rounds table
        _print_value_rounds(console, data)
    _print_interviews(console, data)


def _print_value_rounds(console: Console, data, width: int = 80) -> None:  # type: ignore[no-untyped-def]
    """The settled rounds of a one-number scenario (all groups pooled): the answer's statistics,
    then the scenario's own outcomes (``outcome_<name>``, those with a value) as far as they fit."""
    rounds = data.rounds
    if rounds.empty:
        return
    rounds = rounds[rounds["group"] == -1].sort_values(["condition_id", "replicate", "round"])
    console.print("answers per round (all groups):", highlight=False, markup=False)
    table = narrow_table("cond", "rep", "round", "n", "invalid", "mean", "median", "std")
    for r in rounds.itertuples(index=False):
        table.add_row(r.condition_id, str(r.replicate), str(r.round), str(r.n), str(r.n_invalid),
                      _cell(r.mean), _cell(r.median), _cell(r.std))
    console.print(table)
    outcomes, used = [], len("cond round ")
    for column in (c for c in rounds.columns if c.startswith("outcome_") and rounds[c].notna().any()):
        header = "\n".join(column.removeprefix("outcome_").split("_"))
        used += max(len(part) for part in header.split("\n")) + 1
        if used > width:
            break
        outcomes.append((column, header))
    if not outcomes:
        return
    console.print("outcomes per round:", highlight=False, markup=False)
    table = narrow_table("cond", "round", *(h for _, h in outcomes))
    for r in rounds.itertuples(index=False):
        table.add_row(r.condition_id, str(r.round), *(_cell(getattr(r, c)) for c, _ in outcomes))
    console.print(table)


def _print_interviews(console: Console, data) -> None:  # type: ignore[no-untyped-def]
    """Interview counts and each field's distribution (runs with interviews/ only)."""
    from crowdlab.analysis.interviews import interview_tables

    tables = interview_tables(data)
    if tables is None:
        return
    console.print("interviews:", highlight=False, markup=False)
    for r in tables["counts"].itertuples(index=False):
        console.print(f"  {r.condition_id} after round {r.after_round}: {r.asked} asked, {r.valid} valid"
                      + (f" ({r.invalid_causes})" if r.invalid_causes else ""), highlight=False, markup=False)
    for r in tables["fields"].itertuples(index=False):
        console.print(f"  {r.condition_id} {r.field} ({r.type}, n={r.n}): {r.summary}", highlight=False,
                      markup=False, soft_wrap=True)
