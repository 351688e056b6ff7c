"""Reports of a run: a summary table, a markdown digest (for a Prefect artifact) and a
self-contained HTML page (plots embedded as base64 PNG, so the file can be mailed or archived).

The page reads the same at 1, 12 or 48 conditions: a key/value run summary (the full manifest
folded away), conditions named by their factor values, a fixed set of figures laid out as small
multiples, and long tables folded into ``<details>`` with their size in the summary line.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import jinja2
import numpy as np
import pandas as pd

from crowdlab.analysis.breakdown import breakdown
from crowdlab.analysis.levelk import level_k_shares
from crowdlab.analysis.loading import PathLike, RunData, as_run
from crowdlab.analysis.metrics import convergence, round_metrics
from crowdlab.analysis.model_fidelity import model_fidelity
from crowdlab.analysis.facets import short_names
from crowdlab.analysis.field_plots import field_figure_set
from crowdlab.analysis.field_report import field_breakdowns, field_sections, human_tables
from crowdlab.analysis.fields import answer_fields, breakdown_attributes, is_beauty_contest
from crowdlab.analysis.plots import figure_set, figure_to_base64
from crowdlab.analysis.reference import field_contests, fidelity, paper_comparison
from crowdlab.analysis.run_summary import conditions_table, run_summary
from crowdlab.analysis.stats import compare_conditions, replicate_ci, single_factor_pairs
from crowdlab.parquet_io import write_text_atomic

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: Persona attributes the report breaks guesses down by when the run has them.
DEFAULT_BREAKDOWNS: tuple[str, ...] = ("education", "occupation", "model")
#: Tables longer than this are folded into <details> (their size in the summary line).
OPEN_ROWS = 25
#: Up to this many conditions the report tests every pair; beyond, pairs differing in one factor.
ALL_PAIRS_UP_TO = 6
#: Significance level the multiple-comparison note counts against.
ALPHA = 0.05


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
    """A short markdown digest of a run: per-round table and the comparison with Nagel (1995)
    (for other games: each answer field per round and the answer-field human data)."""
    run = as_run(run)
    if not is_beauty_contest(run):
        return _fields_markdown(run)
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


def _fields_markdown(run: RunData) -> str:
    """summary_markdown for a game that is not the beauty contest."""
    from crowdlab.analysis.fields import field_summary

    parts = [f"# crowdlab run {', '.join(run.run_ids)}"]
    for af in answer_fields(run, include_text=False):
        table = field_summary(run, af.name).drop(columns=["field"])
        parts += ["", f"## {af.name} per round (replicates pooled)", "", _markdown_table(table)]
    fid, _ = human_tables(run)
    if not fid.empty:
        cols = ["condition_id", "round", "field", "dataset", "statistic", "sim", "sim_ci_low", "sim_ci_high",
                "human", "human_low", "human_high"]
        parts += ["", "## Against human data", "", _markdown_table(fid[cols]), "",
                  "Sources: " + "; ".join(sorted(fid["source"].unique()))]
    return "\n".join(parts) + "\n"


def _html_table(frame: pd.DataFrame, digits: int = 3) -> str:
    if frame.empty:
        return "<p><em>none</em></p>"
    frame = frame.copy()
    for i in range(frame.shape[1]):  # 1997, not 1997.000
        col = frame.iloc[:, i]
        if col.dtype.kind == "f" and col.notna().any() and bool((col.dropna() % 1 == 0).all()):
            frame.isetitem(i, col.astype("Int64"))
    return frame.to_html(index=False, classes="table", border=0, na_rep="",
                         float_format=lambda v: f"{v:.{digits}g}" if abs(v) < 1e-3 else f"{v:.{digits}f}")


def _block(frame: pd.DataFrame, what: str, open_rows: int = OPEN_ROWS, digits: int = 3) -> str:
    """A scrollable table, folded into <details> when longer than ``open_rows``."""
    table = f'<div class="scroll">{_html_table(frame, digits)}</div>'
    if len(frame) <= open_rows:
        return table
    return f"<details><summary>{what}: {len(frame):,} rows (show)</summary>{table}</details>"


def _with_factors(frame: pd.DataFrame, conditions: pd.DataFrame, on: str = "condition_id") -> pd.DataFrame:
    """Insert the conditions' factor columns right after ``on``."""
    factors = [c for c in conditions.columns if c != "condition_id"]
    merged = frame.assign(**{on: frame[on].astype(str)}).merge(
        conditions.rename(columns={"condition_id": on}), on=on, how="left")
    order = list(frame.columns)
    at = order.index(on) + 1
    return merged[order[:at] + [f for f in factors if f not in order] + order[at:]]


def means_by_round(summary: pd.DataFrame, conditions: pd.DataFrame) -> pd.DataFrame:
    """One row per condition, one column per round: the mean guess and its 95 % interval."""
    def cell(row: pd.Series) -> str:
        if pd.isna(row["mean"]):
            return ""
        if pd.isna(row["ci_low"]):
            return f"{row['mean']:.1f}"
        return f"{row['mean']:.1f} [{row['ci_low']:.1f}, {row['ci_high']:.1f}]"
    cells = summary.assign(cell=summary.apply(cell, axis=1), round=summary["round"].map(lambda r: f"round {r}"))
    wide = cells.pivot(index="condition_id", columns="round", values="cell").reset_index()
    wide.columns.name = None
    rounds = sorted((c for c in wide.columns if c != "condition_id"), key=lambda c: int(c.split()[1]))
    cols = [c for c in conditions.columns if c not in ("range",)]
    return conditions[cols].merge(wide[["condition_id", *rounds]], on="condition_id", how="right")


def _comparisons(run: RunData, conditions: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The pairwise tests the report shows, and the note on multiple comparisons."""
    ids = conditions["condition_id"].tolist()
    if len(ids) < 2:
        return pd.DataFrame(), ""
    factors = list(conditions.attrs.get("factors", []))
    if len(ids) <= ALL_PAIRS_UP_TO:
        pairs, which = None, "every pair of conditions"
    else:
        pairs = single_factor_pairs(conditions, factors)
        which = "pairs of conditions that differ in exactly one factor"
    table = compare_conditions(run, pairs=pairs, correction="holm")
    n_tests = int(table["mannwhitney_p"].notna().sum())
    raw = int((table["mannwhitney_p"] < ALPHA).sum())
    adjusted = int((table["mannwhitney_p_adj"] < ALPHA).sum())
    note = (f"Tests of {which}, every round: {len(table):,} comparisons ({n_tests:,} with enough data). "
            f"With that many tests some fall under {ALPHA:g} by chance alone (about {ALPHA * n_tests:.0f} "
            f"if no condition differed), so each p-value is also shown adjusted for the whole table with "
            f"Holm's step-down correction (*_p_adj; controls the chance of any false positive). "
            f"Mann-Whitney: {raw:,} below {ALPHA:g} unadjusted, {adjusted:,} after the correction.")
    if factors:
        values = conditions.set_index("condition_id")[factors].astype(str)
        table.insert(3, "differs in", [
            ", ".join(f"{f}: {values.at[a, f]} vs {values.at[b, f]}" for f in factors
                      if values.at[a, f] != values.at[b, f])
            for a, b in zip(table["condition_a"], table["condition_b"])])
    keep = ["round", "condition_a", "condition_b", "differs in", "n_a", "n_b", "mean_a", "mean_b", "diff",
            "cohen_d", "rank_biserial", "welch_p", "welch_p_adj", "mannwhitney_p", "mannwhitney_p_adj"]
    return table[[c for c in keep if c in table]], note


def _level_k_table(run: RunData, conditions: pd.DataFrame) -> pd.DataFrame:
    """First-round share of guesses near each level-k point, one row per condition."""
    shares = level_k_shares(run, keys=("condition_id", "round"))
    if shares.empty:
        return shares
    first = shares[shares["round"] == shares["round"].min()]
    wide = first.pivot_table(index="condition_id", columns="label", values="share", observed=True)
    order = first.drop_duplicates("label").sort_values(["k", "anchor"])["label"].tolist()
    wide = wide[[c for c in order if c in wide]].reset_index()
    wide.columns.name = None
    cols = [c for c in conditions.columns if c != "range"]
    return conditions[cols].merge(wide, on="condition_id", how="right")


def _missing_reference(fid: pd.DataFrame) -> list[str]:
    """'c002, c005: no human data for p = 1.333 ...': conditions without a human comparison,
    grouped by the reason."""
    missing = fid[fid["dataset"].isna()] if "dataset" in fid else fid.iloc[0:0]
    if missing.empty or "note" not in missing:
        return []
    grouped = missing.groupby("note", sort=False)["condition_id"].agg(lambda s: ", ".join(map(str, s)))
    return [f"{ids}: {note}" for note, ids in grouped.items()]


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


def _by_model_block(run: RunData, fid: pd.DataFrame) -> str:
    """Mixed-model runs: each model beside the same human rows (empty otherwise)."""
    table = model_fidelity(run, fid)
    if table.empty:
        return ""
    return ('<h3 id="human-by-model">Each model against human data</h3>'
            '<p class="note">The same human rows, one line per model of the run (mean_diff: model - human).</p>'
            + _block(table, "model x human rows", open_rows=24))


def write_report(run: RunData | PathLike, out: PathLike | None = None, *,
                 breakdown_attributes: Sequence[str] | None = None, seed: int = 0) -> Path:
    """Write a self-contained HTML report; ``out`` defaults to ``<run folder>/report.html``."""
    run = as_run(run)
    target = Path(out) if out is not None else run.run_dirs[0] / "report.html"
    if not is_beauty_contest(run):
        return _write_fields_report(run, target, breakdown_attributes, seed)
    metrics = round_metrics(run)
    fid = fidelity(metrics)
    matched = fid[fid["dataset"].notna()] if "dataset" in fid else fid
    breakdowns = _breakdowns(run, breakdown_attributes)
    conditions = conditions_table(run)
    summary = summary_table(run, metrics, seed)
    comparisons, comparison_note = _comparisons(run, conditions)
    figures = [{"title": f.title, "alt": f.alt, "caption": f.caption, "png": figure_to_base64(f.figure)}
               for f in figure_set(run, metrics, matched, breakdowns)]
    short = {f: name for f, name in short_names([c for c in summary.columns if c in run.factor_columns]).items()
             if name not in summary.columns}  # scenario.p stays itself beside the game's p
    paper = paper_comparison(metrics, run)
    page = _render_page(
        run, conditions,
        means=_block(means_by_round(summary, conditions), "conditions", open_rows=48),
        summary=_block(summary.rename(columns=short), "condition x round rows", open_rows=12),
        metrics=_block(metrics.drop(columns=["lo", "hi"]), "replicate x round rows", open_rows=0),
        convergence=_block(convergence(metrics), "replicates"),
        level_k=_block(_level_k_table(run, conditions), "conditions", open_rows=48),
        comparisons=_block(comparisons, "tests", open_rows=12),
        comparison_note=comparison_note,
        fidelity=_block(matched.drop(columns=["note", "source"], errors="ignore"), "comparisons")
        + _by_model_block(run, fid),
        fidelity_sources=sorted(matched["source"].dropna().unique()) if "source" in matched else [],
        no_reference=_missing_reference(fid),
        paper=_block(paper.drop(columns=["source"]), "comparisons"),
        paper_sources=sorted(paper["source"].dropna().unique()),
        field=_html_table(field_contests()),
        breakdowns=[(attr, _block(table, f"{attr} x condition x round rows", open_rows=12))
                    for attr, table in breakdowns],
        figures=figures,
        beauty=True,
        network=_network_context(run, breakdown_attributes),
        **_field_context(run, conditions, breakdown_attributes=[] if answer_fields(run) else None),
    )
    write_text_atomic(page, target)
    log.info("wrote report %s", target)
    return target


def _field_context(run: RunData, conditions: pd.DataFrame, *, breakdown_attributes: Sequence[str] | None,
                   with_figures: bool = False) -> dict:
    """Template variables of the answer-field sections (empty for built-in scenarios)."""
    if not answer_fields(run):
        return {"answer_fields": [], "field_breakdowns": [], "field_human": "", "field_distances": "",
                "field_sources": []}
    attributes = breakdown_attributes_for(run, breakdown_attributes)
    fid, dist = human_tables(run)
    context = {
        "answer_fields": field_sections(run, lambda t, what: _block(t, what, open_rows=12), conditions),
        "field_breakdowns": field_breakdowns(run, attributes, lambda t, what: _block(t, what, open_rows=12)),
        "field_human": _block(fid.drop(columns=["source"]), "comparisons") if not fid.empty else "",
        "field_distances": _block(dist.drop(columns=["source"]), "distances") if not dist.empty else "",
        "field_sources": sorted(set(fid["source"].dropna()) | set(dist["source"].dropna())),
    }
    if with_figures:
        context["figures"] = [
            {"title": f.title, "alt": f.alt, "caption": f.caption, "png": figure_to_base64(f.figure)}
            for f in field_figure_set(run, attributes)]
    return context


def _network_context(run: RunData, attributes: Sequence[str] | None = None) -> dict | None:
    """The network / opinion section (template network.html.j2) of the first run folder with a
    ``network.parquet`` and decisions; None for runs without a network."""
    from crowdlab.analysis import network_analysis as na

    run_dir = next((d for d in run.run_dirs if (d / "network.parquet").is_file()), None)
    if run_dir is None or not (run_dir / "rounds.parquet").is_file():
        return None
    shifted = na.shifted_attributes(run_dir)
    attribute = next(iter([*shifted, *(attributes or [])]), None)
    figures = [{"title": f.title, "alt": f.alt, "caption": f.caption, "png": figure_to_base64(f.figure)}
               for f in na.network_figures(run_dir, attribute)]
    outcomes = na.round_outcomes(run_dir)
    degrees = na.degree_distribution(run_dir)
    note = (f"Stance trajectories by condition, by {attribute or 'no persona attribute'} and by degree decile "
            f"(ties in + out), the diffusion of injected messages, the degree distribution and one sampled "
            f"neighbourhood, from {run_dir.name}'s network.parquet, decisions and messages.")
    return {"note": note, "figures": figures, "intervention": "exposed_share" in outcomes,
            "outcomes": _block(outcomes, "condition x round rows", open_rows=24),
            "degrees": _block(degrees, "degrees", open_rows=0)}


def breakdown_attributes_for(run: RunData, wanted: Sequence[str] | None) -> list[str]:
    """The attributes the answer fields are broken down by: ``wanted``, else the run's persona
    attributes of interest (``DEFAULT_BREAKDOWNS`` when present, otherwise every categorical one
    with a few values; see ``fields.breakdown_attributes``)."""
    if wanted is not None:
        return breakdown_attributes(run, wanted)
    found = breakdown_attributes(run)
    preferred = [a for a in DEFAULT_BREAKDOWNS if a in found]
    return preferred + [a for a in found if a not in preferred][: max(0, 3 - len(preferred))]


def _write_fields_report(run: RunData, target: Path, breakdown_attributes: Sequence[str] | None,
                         seed: int) -> Path:
    """The report of a game that is not the beauty contest: run summary, conditions, each answer
    field per round, tests on the primary field, breakdowns and human data."""
    attributes = breakdown_attributes_for(run, breakdown_attributes)
    conditions = conditions_table(run)
    conditions = conditions.drop(columns=[c for c in ("p", "offset") if c in conditions
                                          and (conditions[c] == "nan").all()])
    comparisons, comparison_note = _comparisons(run, conditions) if run.read_decisions(["value"])["value"].notna().any() \
        else (pd.DataFrame(), "")
    page = _render_page(
        run, conditions,
        comparisons=_block(comparisons, "tests", open_rows=12),
        comparison_note=comparison_note,
        breakdowns=[],
        beauty=False,
        network=_network_context(run, attributes),
        **_field_context(run, conditions, breakdown_attributes=attributes, with_figures=True),
    )
    write_text_atomic(page, target)
    log.info("wrote report %s", target)
    return target


def _interview_context(run: RunData) -> dict | None:
    """The interviews section (template interviews.html.j2); None for runs without interviews."""
    from crowdlab.analysis.interviews import interview_tables

    tables = interview_tables(run)
    if tables is None:
        return None
    return {"counts": _block(tables["counts"], "conditions", open_rows=24),
            "fields": _block(tables["fields"], "condition x field rows", open_rows=24),
            "examples": _block(tables["examples"], "answers", open_rows=24) if not tables["examples"].empty else ""}


def _render_page(run: RunData, conditions: pd.DataFrame, **sections: Any) -> str:
    """The report page: the run header every game shares, then the game's own ``sections``."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape())
    return env.get_template("report.html.j2").render(
        title=f"crowdlab report: {', '.join(run.run_ids)}",
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        run_items=run_summary(run).itertuples(index=False),
        n_conditions=len(conditions),
        conditions=_block(conditions, "conditions", open_rows=12),
        manifests=[(run_id, json.dumps(m, indent=1, default=str)) for run_id, m in run.manifests.items()],
        interviews=_interview_context(run),
        **sections,
    )


__all__ = ["means_by_round", "summary_markdown", "summary_table", "write_report"]
