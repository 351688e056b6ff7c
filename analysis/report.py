"""Reports of a run: a summary table, a markdown digest (for a Prefect artifact) and a
self-contained HTML page (plots embedded as base64 PNG, so the file can be mailed or archived)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import jinja2
import numpy as np
import pandas as pd

from crowdlab.analysis.breakdown import breakdown
from crowdlab.analysis.levelk import level_k_shares
from crowdlab.analysis.loading import PathLike, RunData, as_run
from crowdlab.analysis.metrics import convergence, round_metrics
from crowdlab.analysis.plots import figure_set, figure_to_base64
from crowdlab.analysis.reference import field_contests, fidelity, paper_comparison
from crowdlab.analysis.stats import compare_conditions, replicate_ci
from crowdlab.parquet_io import write_text_atomic

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: Persona attributes the report breaks guesses down by when the run has them.
DEFAULT_BREAKDOWNS: tuple[str, ...] = ("education", "occupation", "model")


def summary_table(run: RunData | PathLike, metrics: pd.DataFrame | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per condition and round, replicates pooled: counts, mean with a bootstrap 95%
    interval across replicates, median, std, target, winning value, distance to equilibrium."""
    run = as_run(run)
    metrics = round_metrics(run) if metrics is None else metrics
    factors = [c for c in run.conditions.columns if c not in ("run_id", "condition_id", "lo", "hi")]
    agg = metrics.groupby(["condition_id", "round"], observed=True, sort=True).agg(
        replicates=("mean", "size"), n=("n", "sum"), n_invalid=("n_invalid", "sum"), mean=("mean", "mean"),
        median=("median", "mean"), std=("std", "mean"), target=("target", "mean"),
        winning_value=("winning_value", "mean"), distance_to_eq=("distance_to_equilibrium", "mean"),
        **{f: (f, "first") for f in factors if f in metrics},
    ).reset_index()
    ci = replicate_ci(metrics, "mean", seed=seed)[["condition_id", "round", "ci_low", "ci_high"]]
    out = agg.merge(ci, on=["condition_id", "round"], how="left")
    order = ["condition_id", "round", *[f for f in factors if f in out], "replicates", "n", "n_invalid", "mean",
             "ci_low", "ci_high", "median", "std", "target", "winning_value", "distance_to_eq"]
    return out[order]


def _markdown_table(frame: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub-flavoured markdown table (kept here to avoid a tabulate dependency)."""
    def cell(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def summary_markdown(run: RunData | PathLike) -> str:
    """A short markdown digest of a run: per-round table and the comparison with Nagel (1995)."""
    run = as_run(run)
    metrics = round_metrics(run)
    parts = [f"# crowdlab run {', '.join(run.run_ids)}", "", "## Rounds (replicates pooled)", "",
             _markdown_table(summary_table(run, metrics))]
    fid = fidelity(metrics)
    matched, missing = fid[fid["dataset"].notna()], fid[fid["dataset"].isna()]  # missing: why, in "note"
    if not matched.empty:
        cols = ["condition_id", "round", "dataset", "session", "sim_mean", "human_mean", "mean_diff",
                "sim_median", "human_median", "median_diff"]
        parts += ["", "## Against human data", "", _markdown_table(matched[cols]), "",
                  "Sources: " + "; ".join(sorted(matched["source"].unique()))]
    if not missing.empty:
        parts += ["", "No human comparison: " + "; ".join(f"{c}: {n}" for c, n in zip(missing["condition_id"],
                                                                                  missing["note"]))]
    paper = paper_comparison(metrics, run)
    if not paper.empty:
        parts += ["", "## Against the AgentScope paper", "",
                  _markdown_table(paper.drop(columns=["source"])), "", "Source: " + paper["source"].iloc[0]]
    return "\n".join(parts) + "\n"


def _html_table(frame: pd.DataFrame, digits: int = 3) -> str:
    if frame.empty:
        return "<p><em>none</em></p>"
    return frame.to_html(index=False, classes="table", border=0, na_rep="",
                         float_format=lambda v: f"{v:.{digits}g}" if abs(v) < 1e-3 else f"{v:.{digits}f}")


def _breakdowns(run: RunData, attributes: Sequence[str] | None) -> list[tuple[str, pd.DataFrame]]:
    available = set(run.personas.columns) | set(run.decisions_dataset.schema.names)
    wanted = DEFAULT_BREAKDOWNS if attributes is None else attributes
    out = []
    for attr in wanted:
        if attr not in available:
            if attributes is not None:
                raise KeyError(f"breakdown attribute {attr!r} is not in the run")
            continue
        table = breakdown(run, attr)
        if attributes is not None or table[attr].nunique() > 1:  # one-value breakdowns say nothing
            out.append((attr, table))
    return out


def write_report(run: RunData | PathLike, out: PathLike | None = None, *,
                 breakdown_attributes: Sequence[str] | None = None, seed: int = 0) -> Path:
    """Write a self-contained HTML report; ``out`` defaults to ``<run folder>/report.html``."""
    run = as_run(run)
    target = Path(out) if out is not None else run.run_dirs[0] / "report.html"
    metrics = round_metrics(run)
    fid = fidelity(metrics)
    breakdowns = _breakdowns(run, breakdown_attributes)
    shares = level_k_shares(run)
    share_cols = ["condition_id", "replicate", "round", "label", "point", "n_near", "n_valid", "share"]
    comparisons = compare_conditions(run) if metrics["condition_id"].nunique() > 1 else pd.DataFrame()
    figures = {title: figure_to_base64(fig)
               for title, fig in figure_set(run, metrics, fid[fid["dataset"].notna()], breakdowns).items()}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape())
    page = env.get_template("report.html.j2").render(
        title=f"crowdlab report: {', '.join(run.run_ids)}",
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        manifest=_html_table(run.manifest.drop(columns=[c for c in run.manifest if c.startswith("config.")],
                                               errors="ignore")),
        summary=_html_table(summary_table(run, metrics, seed)),
        metrics=_html_table(metrics.drop(columns=["lo", "hi"])),
        convergence=_html_table(convergence(metrics)),
        level_k=_html_table(shares[shares["round"] == shares["round"].min()][share_cols] if len(shares) else shares),
        comparisons=_html_table(comparisons),
        fidelity=_html_table(fid),
        paper=_html_table(paper_comparison(metrics, run)),
        field=_html_table(field_contests()),
        breakdowns=[(attr, _html_table(table)) for attr, table in breakdowns],
        figures=figures,
    )
    write_text_atomic(page, target)
    log.info("wrote report %s", target)
    return target


__all__ = ["summary_markdown", "summary_table", "write_report"]
