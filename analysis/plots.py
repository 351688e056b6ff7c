"""Figures for reports and notebooks (matplotlib, Agg backend: no display needed).

Every function returns a ``matplotlib.figure.Figure`` and never shows it; histograms are binned
with numpy per condition and round, so plotting a million agents costs one pass over the values.

Figures stay readable from 1 to about 50 conditions: every panel is titled with factor values
(``variant=P2, p=0.6667``, see ``crowdlab.analysis.facets``), several conditions become small
multiples instead of one tangle of lines, colours never repeat inside a panel, and legends sit
outside the axes. The number of figures does not grow with the number of conditions.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from crowdlab.analysis.facets import Facets, condition_facets  # noqa: E402
from crowdlab.analysis.levelk import level_k_points  # noqa: E402
from crowdlab.analysis.loading import PathLike, RunData, as_run  # noqa: E402
from crowdlab.analysis.metrics import _valid  # noqa: E402


def figure_to_base64(fig: Figure, dpi: int = 90) -> str:
    """PNG bytes of ``fig`` as base64 text (for ``<img src="data:image/png;base64,...">``); closes it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass
class ReportFigure:
    """A figure with the words a report puts around it (``alt`` lists every panel's factor values)."""

    title: str
    figure: Figure
    alt: str
    caption: str = ""


def run_facets(run: RunData | PathLike) -> Facets:
    """Labels, panels and colours of a run's conditions (factor values from the rounds table)."""
    run = as_run(run)
    return condition_facets(run.conditions, [f for f in run.factor_columns if f in run.conditions])


def _metrics_facets(metrics: pd.DataFrame) -> Facets:
    return condition_facets(metrics.drop_duplicates("condition_id"))


def _grid(n: int, ncols: int, panel_w: float, panel_h: float, **kwargs) -> tuple[Figure, list[plt.Axes]]:
    """``n`` panels in rows of ``ncols``; unused cells hidden."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(panel_w * ncols + 0.6, panel_h * nrows + 0.6),
                             **kwargs)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _legend_right(fig: Figure, handles: list, labels: list[str], title: str | None = None) -> None:
    """One legend for the whole figure, outside every axes (right of the panels)."""
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title=title,
                   title_fontsize=8, frameon=False)


def _finish(fig: Figure, title: str, fontsize: float = 10) -> None:
    """Title above every panel (room kept for it), panels laid out tightly."""
    fig.suptitle(title, fontsize=fontsize)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / height))


def _valid_values(run: RunData) -> pd.DataFrame:
    frame = _valid(run.read_decisions(["condition_id", "round", "value", "valid"]))
    return frame.assign(condition_id=frame["condition_id"].astype(str))


def histograms_by_round(run: RunData | PathLike, condition_id: str | None = None, bins: int = 50,
                        facets: Facets | None = None) -> Figure:
    """One small panel per condition, titled with its factor values; inside it the guesses of
    each round as a ridge (each ridge scaled to its own peak, so a spread-out first round stays
    visible beside a spiky last one). All replicates pooled."""
    run = as_run(run)
    frame = _valid_values(run)
    facets = facets or run_facets(run)
    conditions = [c for c in facets.condition_ids if condition_id is None or c == condition_id]
    rounds = sorted(frame["round"].unique())
    lo, hi = float(run.conditions["lo"].min()), float(run.conditions["hi"].max())
    edges = np.linspace(lo, hi, bins + 1)
    per_row = len(facets.colors) if facets.hue and len(facets.colors) <= 6 else 4
    return ridges(frame, "value", rounds, conditions, facets.labels, edges, per_row, (0.5, 0.6), "guess",
                  "Guesses per round (one ridge per round, round 1 on top; red: mean)")


def ridges(frame: pd.DataFrame, column: str, rounds: list, conditions: list[str], labels: dict[str, str],
           edges: np.ndarray, per_row: int, size: tuple[float, float], xlabel: str, title: str) -> Figure:
    """One panel per condition (titled with its label); inside it one ridge per round, round 1 on
    top, each the histogram of that round's ``column`` over ``edges`` scaled to its own peak; red
    tick: the mean. ``size``: inches per round and fixed inches of a panel when one or two
    panels take the page's width."""
    wide = len(conditions) <= 2  # one or two panels: use the page's width
    per_round, pad = size
    fig, axes = _grid(len(conditions), per_row, 5.0 if wide else 2.7, (per_round if wide else 0.3) * len(rounds) + pad,
                      sharex=True, sharey=True)
    cmap = plt.get_cmap("Blues")
    shades = [cmap(x) for x in np.linspace(0.45, 0.95, max(len(rounds), 1))]
    groups = {key: g.to_numpy() for key, g in frame.groupby(["condition_id", "round"], observed=True)[column]}
    for ax, cond in zip(axes, conditions):
        for j, rnd in enumerate(rounds):
            values = groups.get((cond, rnd), np.array([]))
            counts, _ = np.histogram(values, bins=edges)
            height = counts / counts.max() * 0.9 if counts.max() > 0 else counts.astype(float)
            base = len(rounds) - 1 - j  # round 1 on top
            ax.stairs(height + base, edges, baseline=base, fill=True, color=shades[j], alpha=0.9)
            if values.size:
                ax.plot([values.mean()] * 2, [base, base + 0.9], color="#c44e52", lw=1)
        ax.set_yticks(np.arange(len(rounds)) + 0.3, [f"r{r}" for r in reversed(rounds)], fontsize=7)
        ax.set_title(labels[cond], fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlim(edges[0], edges[-1])
    for ax in axes[-min(per_row, len(axes)):]:
        ax.set_xlabel(xlabel, fontsize=8)
    _finish(fig, title)
    return fig


def mean_and_target(metrics: pd.DataFrame, facets: Facets | None = None) -> Figure:
    """Mean guess (solid, range over replicates shaded), target (dashed) and equilibrium (dotted)
    across rounds: one panel per combination of factors, one colour per level of the colour factor."""
    facets = facets or _metrics_facets(metrics)
    by_cond = dict(list(metrics.assign(condition_id=metrics["condition_id"].astype(str))
                        .groupby("condition_id", observed=True, sort=True)))
    panels = [(t, [c for c in ids if c in by_cond]) for t, ids in facets.panels]
    panels = [p for p in panels if p[1]]
    wide = len(panels) <= 2
    fig, axes = _grid(len(panels), 4, 5.0 if wide else 3.0, 3.2 if wide else 2.4, sharex=True, sharey=True)
    for ax, (title, ids) in zip(axes, panels):
        for cid in ids:
            color = facets.color(cid)
            per = by_cond[cid].groupby("round")[["mean", "target", "equilibrium"]].agg(["mean", "min", "max"])
            rounds = per.index.to_numpy()
            ax.plot(rounds, per[("mean", "mean")], "o-", color=color, ms=3, lw=1.5)
            ax.fill_between(rounds, per[("mean", "min")], per[("mean", "max")], color=color, alpha=0.15, lw=0)
            ax.plot(rounds, per[("target", "mean")], "--", color=color, lw=1, alpha=0.8)
            ax.plot(rounds, per[("equilibrium", "mean")], ":", color="#555555", lw=1)
        ax.set_title(title if facets.hue else facets.labels[ids[0]], fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    for ax in axes:
        if ax.get_subplotspec().is_last_row() or len(axes) <= 4:
            ax.set_xlabel("round", fontsize=8)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("guess", fontsize=8)
    style = [plt.Line2D([], [], color="k", marker="o", ms=3, label="mean"),
             plt.Line2D([], [], color="k", ls="--", label="target"),
             plt.Line2D([], [], color="#555555", ls=":", label="equilibrium")]
    colours = [plt.Line2D([], [], color=c, lw=3) for c in facets.colors.values()] if facets.hue else []
    _legend_right(fig, style + colours, [h.get_label() for h in style] + (list(facets.colors) if facets.hue else []))
    _finish(fig, "Mean and target across rounds")
    return fig


def _merge_close(points: pd.DataFrame, min_gap: float) -> list[tuple[float, str]]:
    """Level-k points closer than ``min_gap`` share one label (``L1@50/L2@100``)."""
    merged: list[tuple[float, list[tuple[int, float, str]]]] = []
    for pt in points.sort_values("point").itertuples(index=False):
        key = (pt.k if pt.k >= 0 else 99, pt.anchor, pt.label)  # L1@50 before L2@100, EQ last
        if merged and pt.point - merged[-1][0] < min_gap:
            merged[-1][1].append(key)
        else:
            merged.append((pt.point, [key]))
    return [(x, "/".join(k[2] for k in sorted(keys))) for x, keys in merged]


def place_labels(ax: plt.Axes, points: Sequence[tuple[float, str]], fontsize: float = 6.5) -> list:
    """Write ``label`` above the axes at each ``x``, stacking labels in as many tiers as needed so
    that none overlaps another (measured with the renderer, so it holds for any font)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    placed: list = []
    texts = []
    for x, label in sorted(points):
        for tier in range(len(points) + 1):
            text = ax.annotate(label, xy=(x, 1.0), xycoords=("data", "axes fraction"),
                               xytext=(0, 2 + tier * (fontsize + 2)), textcoords="offset points", ha="center",
                               va="bottom", fontsize=fontsize, annotation_clip=False, gid="levelk-label")
            box = text.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in placed):
                placed.append(box)
                texts.append(text)
                break
            text.remove()
    return texts


def level_k_spikes(run: RunData | PathLike, round: int = 1, max_k: int = 3, facets: Facets | None = None) -> Figure:
    """Guesses on a unit grid with the level-k points (from 50 and 100) and the equilibrium marked,
    so the spikes Nagel found near 50 p^k show up (or not).

    One column per game (p, offset, range), one row per condition of that game; the level-k
    points are labelled once per column, in tiers so labels never overlap."""
    run = as_run(run)
    facets = facets or run_facets(run)
    frame = _valid_values(run)
    frame = frame[frame["round"] == round]
    conds = run.conditions.drop_duplicates("condition_id").assign(condition_id=lambda d: d["condition_id"].astype(str))
    conds = conds[conds["condition_id"].isin(frame["condition_id"].unique())].sort_values("condition_id")
    games = list(conds.groupby(["p", "offset", "lo", "hi"], sort=True))
    nrows = max([len(g) for _, g in games] + [1])
    fig, axes = plt.subplots(nrows, max(len(games), 1), squeeze=False,
                             figsize=(min(max(3.6 * len(games), 6.5), 12) + 0.6, 0.95 * nrows + 1.4))
    values_of = {c: g.to_numpy() for c, g in frame.groupby("condition_id", observed=True)["value"]}
    for col, ((p, offset, lo, hi), game) in enumerate(games):
        points = level_k_points(p, offset, lo, hi, max_k=max_k)
        edges = np.arange(np.floor(lo), np.ceil(hi) + 2) - 0.5
        for row in range(nrows):
            ax = axes[row][col]
            if row >= len(game):
                ax.set_visible(False)
                continue
            cid = game["condition_id"].iloc[row]
            values = values_of.get(cid, np.array([]))
            counts, _ = np.histogram(values, bins=edges)
            ax.stairs(counts / max(values.size, 1), edges, fill=True, color="#8c8c8c")
            for pt in points.itertuples(index=False):
                style = {"color": "#c44e52", "ls": "-"} if pt.label == "EQ" else \
                    {"color": "#4c72b0" if pt.anchor == 50 else "#55a868", "ls": "--"}
                ax.axvline(pt.point, lw=0.8, **style)
            ax.set_xlim(lo - 1, hi + 1)
            ax.tick_params(labelsize=7)
            ax.text(0.99, 0.95, facets.labels.get(cid, cid), transform=ax.transAxes, ha="right", va="top",
                    fontsize=7, bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1})
            if col == 0:
                ax.set_ylabel("share", fontsize=7)
        axes[len(game) - 1][col].set_xlabel("guess", fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()  # freeze the layout, then label the points above each column's top panel
    fig.set_layout_engine("none")
    for col, ((p, offset, lo, hi), game) in enumerate(games):
        top = axes[0][col]
        width = top.get_window_extent().width or 1.0
        min_gap = 0.5 * (hi - lo) * 6.0 / width  # about 3 pt apart: one label
        texts = place_labels(top, _merge_close(level_k_points(p, offset, lo, hi, max_k=max_k), min_gap))
        tiers = 1 + max((t.xyann[1] - 2) / 8.5 for t in texts) if texts else 1
        top.set_title(f"p = {p:.4g}" + (f", offset {offset:g}" if offset else "") + f", range {lo:g}-{hi:g}",
                      fontsize=8, pad=4 + tiers * 8.5 + 2)
    return fig


def breakdown_bars(table: pd.DataFrame, attribute: str, round: int | None = 1,
                   facets: Facets | None = None) -> Figure:
    """Mean guess per attribute value from ``breakdown``'s table.

    Up to four conditions: bars per value, one colour per condition (legend outside). More: a
    heatmap, one row per condition (factor values), one column per value, coloured by the mean
    minus that condition's mean (who guesses above or below the rest of their condition)."""
    data = table if round is None or "round" not in table else table[table["round"] == round]
    data = data.assign(condition_id=data["condition_id"].astype(str))
    pivot = data.pivot_table(index="condition_id", columns=attribute, values="mean", observed=True)
    labels = facets.labels if facets else {}
    suffix = f" (round {round})" if round is not None else ""
    rows = [labels.get(c, c) for c in pivot.index]
    if len(pivot) <= 4:
        fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.3 * max(len(pivot.columns), 2) * max(len(pivot), 1)))
        pivot.T.set_axis(rows, axis=1).plot.barh(ax=ax, width=0.8, legend=False)
        ax.set_xlabel("mean guess" + suffix)
        ax.set_ylabel(attribute)
        ax.set_title(f"Mean guess by {attribute}", fontsize=10)
        handles, names = ax.get_legend_handles_labels()
        _legend_right(fig, handles, names)
        fig.tight_layout()
        return fig
    centred = pivot.sub(data.groupby("condition_id")["mean"].mean().reindex(pivot.index), axis=0)
    limit = float(np.nanmax(np.abs(centred.to_numpy()))) if np.isfinite(centred.to_numpy()).any() else 1.0
    fig, ax = plt.subplots(figsize=(min(1.0 + 0.6 * len(pivot.columns), 12) + 2.5, 0.8 + 0.22 * len(pivot)))
    image = ax.imshow(centred.to_numpy(), aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xticks(range(len(pivot.columns)), [str(c) for c in pivot.columns], fontsize=7, rotation=30, ha="right")
    if centred.size <= 200:
        for (i, j), v in np.ndenumerate(centred.to_numpy()):
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=ax, label="mean guess minus the condition's mean", shrink=0.8)
    ax.set_title(f"Mean guess by {attribute}{suffix}, relative to each condition", fontsize=10)
    fig.tight_layout()
    return fig


def simulated_vs_human(fidelity_table: pd.DataFrame, facets: Facets | None = None) -> Figure:
    """Simulated mean (filled) and median (squares) per round beside the human figures (black,
    open markers) of the same game; one panel per group of conditions, coloured as elsewhere."""
    table = fidelity_table.dropna(subset=["dataset"]) if "dataset" in fidelity_table else fidelity_table
    if table.empty:
        fig, ax = plt.subplots(figsize=(6.5, 1.2))
        ax.text(0.5, 0.5, "no human data set for this game", ha="center", va="center")
        ax.set_axis_off()
        return fig
    table = table.assign(condition_id=table["condition_id"].astype(str))
    ids = sorted(table["condition_id"].unique())
    facets = (facets or condition_facets(table.drop_duplicates("condition_id")[["condition_id", "p"]])).restrict(ids)
    wide = len(facets.panels) <= 2
    fig, axes = _grid(len(facets.panels), 3, 5.0 if wide else 3.2, 3.2 if wide else 2.6, sharex=True, sharey=True)
    human_handles: dict[str, object] = {}
    for ax, (title, cids) in zip(axes, facets.panels):
        sub = table[table["condition_id"].isin(cids)]
        for cid in cids:
            sim = sub[sub["condition_id"] == cid].drop_duplicates("round").sort_values("round")
            ax.plot(sim["round"], sim["sim_mean"], "o-", color=facets.color(cid), ms=3)
            ax.plot(sim["round"], sim["sim_median"], "s", color=facets.color(cid), ms=3)
        for j, ((dataset, session, p), human) in enumerate(sub.groupby(["dataset", "session", "p"], sort=True)):
            human = human.drop_duplicates("round").sort_values("round")
            name = f"{dataset} {session} (p={p:.4g})" if str(session) not in ("", "nan", "pooled") else \
                f"{dataset} (p={p:.4g})"
            line, = ax.plot(human["round"], human["human_mean"], "o--", mfc="none", color="k",
                            alpha=0.9 - 0.25 * (j % 3), ms=4, lw=1)
            ax.plot(human["round"], human["human_median"], "s", mfc="none", color="k", ms=4)
            human_handles.setdefault(name, line)
        ax.set_title(title if facets.hue else facets.labels[cids[0]], fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.set_xlabel("round / period", fontsize=8)
        ax.set_ylabel("guess", fontsize=8)
    sims = [plt.Line2D([], [], color=c, lw=3) for c in facets.colors.values()] if facets.hue else \
        [plt.Line2D([], [], color="#4c72b0", marker="o", label="simulated")]
    names = (list(facets.colors) if facets.hue else ["simulated"]) + [f"human: {n}" for n in human_handles]
    markers = [plt.Line2D([], [], color="grey", marker="o", ls="-", ms=3),
               plt.Line2D([], [], color="grey", marker="s", ls="", ms=3)]
    _legend_right(fig, sims + list(human_handles.values()) + markers, names + ["mean", "median"])
    _finish(fig, "Simulated vs human (Nagel 1995); open markers: human")
    return fig


def _alt(title: str, facets: Facets, ids: Sequence[str] | None = None) -> str:
    wanted = facets.condition_ids if ids is None else [c for c in facets.condition_ids if c in set(ids)]
    return f"{title}. Conditions: " + "; ".join(f"{c} {facets.labels[c]}" for c in wanted)


CAPTIONS = {
    "Guesses per round": "one panel per condition, titled with its factor values; each ridge is one round's "
                         "histogram of valid guesses (replicates pooled), scaled to its own peak.",
    "Mean and target across rounds": "one panel per combination of factors, one colour per level of the last "
                                     "factor; shading: range over replicates.",
    "Level-k spikes (round 1)": "one column per game, one row per condition. Dashed lines: level-k guesses "
                                "(Lk@50 blue: k steps from 50; Lk@100 green: from 100); red: equilibrium (EQ). "
                                "Points closer than a label's width share one label.",
    "Simulated vs human": "only conditions whose game has human data (Nagel 1995); black: human sessions.",
}


def figure_set(run: RunData | PathLike, metrics: pd.DataFrame, fidelity_table: pd.DataFrame,
               breakdowns: Sequence[tuple[str, pd.DataFrame]] = ()) -> list[ReportFigure]:
    """The report's figures: four, plus one per breakdown, whatever the number of conditions."""
    run = as_run(run)
    facets = run_facets(run)
    figs = [
        ReportFigure("Guesses per round", histograms_by_round(run, facets=facets), _alt("Guesses per round", facets)),
        ReportFigure("Mean and target across rounds", mean_and_target(metrics, facets),
                     _alt("Mean and target across rounds", facets)),
        ReportFigure("Level-k spikes (round 1)", level_k_spikes(run, round=1, facets=facets),
                     _alt("Level-k spikes (round 1)", facets)),
    ]
    matched = fidelity_table.dropna(subset=["dataset"]) if "dataset" in fidelity_table else fidelity_table
    if not matched.empty:
        ids = matched["condition_id"].astype(str).unique()
        figs.append(ReportFigure("Simulated vs human", simulated_vs_human(matched, facets),
                                 _alt("Simulated vs human (Nagel 1995)", facets, ids)))
    for attribute, table in breakdowns:
        title = f"Mean guess by {attribute}"
        caption = ("bars per condition." if table["condition_id"].nunique() <= 4 else
                   "each cell: the mean guess of that group minus the mean of its condition (round 1).")
        figs.append(ReportFigure(title, breakdown_bars(table, attribute, facets=facets), _alt(title, facets),
                                 caption))
    for fig in figs:
        fig.caption = fig.caption or CAPTIONS.get(fig.title, "")
    return figs
