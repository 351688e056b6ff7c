"""Figures for any scenario's answer fields (matplotlib, Agg): what ``crowdlab.analysis.fields``
computes, drawn with the same facets (conditions named by factor values, small multiples,
legends outside) as the beauty-contest figures.

- numeric fields: the distribution per round (ridges of histograms, one panel per condition)
  and the mean per round with its 95 % interval and the interquartile band;
- choice, multi-choice, ranking and scale fields: stacked option shares per round;
- by a persona attribute: one figure per attribute, one panel per field (means with 95 %
  intervals for numeric fields, stacked shares for the others), last round.

The number of figures grows with the number of fields and attributes, never with conditions.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from crowdlab.analysis.facets import Facets, condition_facets  # noqa: E402
from crowdlab.analysis.fields import AnswerField, answer_fields, field_summary, option_shares  # noqa: E402
from crowdlab.analysis.loading import PathLike, RunData, as_run  # noqa: E402
from crowdlab.analysis.plots import ReportFigure, _alt, _finish, _grid, _legend_right, ridges, run_facets  # noqa: E402

def field_facets(run: RunData | PathLike) -> Facets:
    """Facets of the run's conditions named by design factors only (a game without p and offset
    is not labelled ``p=nan``)."""
    run = as_run(run)
    cond = run.conditions
    if cond["p"].notna().all():
        return run_facets(run)
    factors = [f for f in run.factor_columns if f in cond]
    return condition_facets(cond[["condition_id", *factors]], factors)


#: At most this many bins per histogram; integer fields with a smaller range get one bin per value.
MAX_BINS = 50


def _edges(af: AnswerField, values: np.ndarray) -> np.ndarray:
    bounds = af.bounds()
    lo, hi = bounds if bounds else (float(np.nanmin(values)) if values.size else 0.0,
                                    float(np.nanmax(values)) if values.size else 1.0)
    if hi <= lo:
        hi = lo + 1.0
    if af.type != "number" and hi - lo + 1 <= MAX_BINS:
        return np.arange(lo - 0.5, hi + 1.0, 1.0)
    return np.linspace(lo, hi, MAX_BINS + 1)


def field_histograms(run: RunData | PathLike, af: AnswerField, facets: Facets | None = None) -> Figure:
    """One panel per condition; inside it one ridge per round (round 1 on top), each the
    histogram of that round's valid answers scaled to its own peak; red tick: the mean."""
    run = as_run(run)
    facets = facets or field_facets(run)
    table = run.decisions_dataset.to_table(columns=["condition_id", "round", af.column])
    frame = pd.DataFrame({"condition_id": table.column("condition_id").to_pandas().astype(str),
                          "round": table.column("round").to_numpy(),
                          "v": pc.cast(table.column(af.column), "float64").to_numpy(zero_copy_only=False)})
    frame = frame[np.isfinite(frame["v"])]
    rounds = sorted(frame["round"].unique()) or [1]
    edges = _edges(af, frame["v"].to_numpy())
    return ridges(frame, "v", rounds, facets.condition_ids, facets.labels, edges, 4, (0.45, 0.8), af.name,
                  f"{af.name}: answers per round (one ridge per round, round 1 on top; red: mean)")


def field_means(run: RunData | PathLike, fields: Sequence[AnswerField], facets: Facets | None = None) -> Figure:
    """One panel per numeric field: the mean per round, one line per condition (colours as in
    the other figures), shaded 95 % interval of the mean; dotted: the 25-75 % quantiles."""
    run = as_run(run)
    facets = facets or field_facets(run)
    fig, axes = _grid(len(fields), 3, 4.2 if len(fields) <= 2 else 3.2, 2.8, sharex=True)
    palette = colormaps["tab10"]
    for ax, af in zip(axes, fields):
        table = field_summary(run, af.name)
        for i, cid in enumerate(facets.condition_ids):
            sub = table[table["condition_id"] == cid].sort_values("round")
            color = facets.color(cid) if facets.hue else palette(i % 10)
            ax.plot(sub["round"], sub["mean"], "o-", ms=3, color=color, label=facets.labels[cid])
            ax.fill_between(sub["round"], sub["ci_low"], sub["ci_high"], color=color, alpha=0.25, lw=0)
            ax.plot(sub["round"], sub["q25"], ":", color=color, lw=0.8)
            ax.plot(sub["round"], sub["q75"], ":", color=color, lw=0.8)
        ax.set_title(af.name, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.set_xlabel("round", fontsize=8)
        if af.bounds():
            lo, hi = af.bounds()
            ax.set_ylim(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))
    if len(facets.condition_ids) > 1:
        handles, labels = axes[0].get_legend_handles_labels()
        _legend_right(fig, handles[:12], labels[:12])
    _finish(fig, "Mean per round (shaded: 95% interval; dotted: 25% and 75% quantiles)")
    return fig


def _stack(ax: plt.Axes, shares: np.ndarray, rows: list[str], names: list[str], colors: list) -> list:
    left = np.zeros(len(rows))
    bars = []
    for j, name in enumerate(names):
        values = np.nan_to_num(shares[:, j])
        bars.append(ax.barh(range(len(rows)), values, left=left, color=colors[j], height=0.8, label=name))
        for i, (x, w) in enumerate(zip(left, values)):
            if w >= 0.08:
                ax.text(x + w / 2, i, f"{w:.0%}", ha="center", va="center", fontsize=6)
        left += values
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.0, float(left.max()) if len(left) else 1.0))
    return bars


def _option_colors(af: AnswerField) -> list:
    n = len(af.options())
    if af.type in ("likert", "linear_scale"):
        return [colormaps["RdYlBu"](x) for x in np.linspace(0.1, 0.9, n)]
    return [colormaps["tab20"](i % 20) for i in range(n)]


def field_shares(run: RunData | PathLike, af: AnswerField, facets: Facets | None = None) -> Figure:
    """One panel per condition: a stacked bar of option shares per round (valid answers; for
    multi-choice each option's share of answers selecting it, so bars may pass 100 %)."""
    run = as_run(run)
    facets = facets or field_facets(run)
    table = option_shares(run, af.name)
    names = af.option_names()
    rounds = sorted(table["round"].unique())
    conditions = facets.condition_ids
    fig, axes = _grid(len(conditions), 2, 6.0 if len(conditions) <= 2 else 4.0, 0.3 * len(rounds) + 0.9, sharex=True)
    colors = _option_colors(af)
    bars = []
    for ax, cid in zip(axes, conditions):
        sub = table[table["condition_id"] == cid].set_index("round").reindex(rounds)
        bars = _stack(ax, sub[names].to_numpy(float), [f"r{r}" for r in rounds], names, colors)
        ax.set_title(facets.labels[cid], fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1].set_xlabel("share of valid answers", fontsize=8)
    _legend_right(fig, bars, names, title=af.name)
    what = {"multi": "share selecting each option", "ranking": "share ranking each option first"}.get(af.kind,
                                                                                                     "option shares")
    _finish(fig, f"{af.name}: {what} per round")
    return fig


def field_breakdown(run: RunData | PathLike, attribute: str, fields: Sequence[AnswerField],
                    round: int | None = None) -> Figure:
    """One panel per field, by ``attribute`` (conditions pooled, ``round`` or the last round):
    numeric fields as means with 95 % intervals, the others as stacked option shares."""
    run = as_run(run)
    tables = {af.name: field_summary(run, af.name, by=["round"], attribute=attribute) for af in fields}
    last = round if round is not None else int(max(t["round"].max() for t in tables.values()))
    levels = sorted({str(v) for t in tables.values() for v in t.loc[t["round"] == last, attribute].dropna()})
    fig, axes = _grid(len(fields), 2, 4.6, 0.28 * max(len(levels), 3) + 1.0)
    handles: dict[str, tuple[list, list[str]]] = {}
    for ax, af in zip(axes, fields):
        sub = tables[af.name]
        sub = sub[sub["round"] == last].assign(**{attribute: lambda t: t[attribute].astype(str)})
        sub = sub.set_index(attribute).reindex(levels)
        if af.kind == "numeric" and af.type not in ("likert", "linear_scale"):
            y = np.arange(len(levels))
            ax.errorbar(sub["mean"], y, xerr=[sub["mean"] - sub["ci_low"], sub["ci_high"] - sub["mean"]], fmt="o",
                        ms=3, color="#4c72b0", capsize=2)
            ax.set_yticks(y, levels, fontsize=7)
            ax.set_ylim(len(levels) - 0.5, -0.5)
            ax.set_xlabel(f"mean {af.name}", fontsize=8)
        elif af.kind == "text":
            ax.barh(range(len(levels)), sub["n_answered"] / sub["n"], color="#4c72b0")
            ax.set_yticks(range(len(levels)), levels, fontsize=7)
            ax.set_xlabel("share answered", fontsize=8)
        else:
            names = af.option_names()
            bars = _stack(ax, sub[names].to_numpy(float), levels, names, _option_colors(af))
            handles[af.name] = (bars, names)
            if af.type in ("likert", "linear_scale"):
                for i, m in enumerate(sub["mean"]):
                    if np.isfinite(m):
                        ax.text(1.01, i, f"mean {m:.2f}", va="center", fontsize=6, transform=ax.get_yaxis_transform())
        ax.set_title(af.name, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for i, ax in enumerate(axes):
        if i % 2:  # the same levels in every panel: labelled once per row
            ax.set_yticklabels([])
    if len(handles) == 1:
        (bars, names), = handles.values()
        _legend_right(fig, bars, names, title=next(iter(handles)))
    _finish(fig, f"Answers by {attribute} (round {last}, conditions pooled)")
    return fig


def field_figure_set(run: RunData | PathLike, attributes: Sequence[str] = (),
                     facets: Facets | None = None) -> list[ReportFigure]:
    """The report's field figures: per numeric field its distribution per round, one figure of
    means per round (when there are several rounds), per option field its shares, and one figure
    per breakdown attribute."""
    run = as_run(run)
    facets = facets or field_facets(run)
    fields = answer_fields(run, include_text=False)
    figs: list[ReportFigure] = []
    numeric = [f for f in fields if f.kind == "numeric" and f.type not in ("likert", "linear_scale")]
    rounds = run.read_decisions(["round"])["round"].nunique()
    if numeric and rounds > 1:
        title = "Mean per round"
        figs.append(ReportFigure(title, field_means(run, numeric, facets), _alt(title, facets),
                                 "one panel per numeric field, one line per condition."))
    for af in fields:
        if af in numeric:
            title = f"{af.name}: answers per round"
            figs.append(ReportFigure(title, field_histograms(run, af, facets), _alt(title, facets),
                                     "one panel per condition; each ridge is one round's histogram of valid answers "
                                     "(replicates pooled), scaled to its own peak."))
        else:
            title = f"{af.name}: shares per round"
            figs.append(ReportFigure(title, field_shares(run, af, facets), _alt(title, facets),
                                     f"{af.question}; shares of valid answers, replicates pooled."))
    for attribute in attributes:
        title = f"Answers by {attribute}"
        figs.append(ReportFigure(title, field_breakdown(run, attribute, fields), _alt(title, facets),
                                 "last round, conditions and replicates pooled; numeric fields: mean with its 95% "
                                 "interval; option fields: shares of valid answers (scales: mean on the right)."))
    return figs


__all__ = ["field_breakdown", "field_figure_set", "field_histograms", "field_means", "field_shares"]
