"""`crowdlab report RUN`: write the HTML report of a run and print its summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from crowdlab.analysis import RunFolderError, load, round_metrics, summary_table, write_report


def _cell(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.2f}"
    return str(value)


def report(
    run: Path = typer.Argument(..., help="Run folder, or experiment folder holding several runs."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default RUN/report.html)."),
) -> None:
    """Write a self-contained HTML report of RUN and print the per-round summary."""
    console = Console()
    try:
        data = load(run)
        metrics = round_metrics(data)
    except (RunFolderError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from exc
    summary = summary_table(data, metrics)
    summary["95% CI"] = [
        "" if np.isnan(lo) else f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(summary["ci_low"], summary["ci_high"])
    ]
    factors = [c for c in data.factor_columns if c in summary]
    columns = {"condition_id": "condition", "round": "round", **{f: f for f in factors}, "replicates": "reps",
               "n": "n", "n_invalid": "invalid", "mean": "mean", "95% CI": "95% CI", "median": "median",
               "target": "target", "winning_value": "winner"}
    table = Table(title=f"crowdlab run {', '.join(data.run_ids)}")
    for column, header in columns.items():
        table.add_column(header, justify="left" if summary[column].dtype == object else "right",
                         no_wrap=column in ("condition_id", "95% CI"))
    for row in summary[list(columns)].itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    console.print(table)
    path = write_report(data, out)
    console.print(f"report: {path}")
