"""Figures for reports and notebooks (matplotlib, Agg backend: no display needed).

Every function returns a ``matplotlib.figure.Figure`` and never shows it; histograms are binned
with numpy per condition and round, so plotting a million agents costs one pass over the values.
"""

from __future__ import annotations

import base64
import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from crowdlab.analysis.levelk import level_k_points  # noqa: E402
from crowdlab.analysis.loading import PathLike, RunData, as_run  # noqa: E402
from crowdlab.analysis.metrics import _valid  # noqa: E402


def figure_to_base64(fig: Figure, dpi: int = 90) -> str:
    """PNG bytes of ``fig`` as base64 text (for ``<img src="data:image/png;base64,...">``); closes it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _valid_values(run: RunData) -> pd.DataFrame:
    frame = _valid(run.read_decisions(["condition_id", "round", "value", "valid"]))
    return frame.assign(condition_id=frame["condition_id"].astype(str))


def histograms_by_round(run: RunData | PathLike, condition_id: str | None = None, bins: int = 50) -> Figure:
    """One panel per round: the distribution of valid guesses (all replicates pooled)."""
    run = as_run(run)
    frame = _valid_values(run)
    conditions = sorted(frame["condition_id"].unique()) if condition_id is None else [condition_id]
    rounds = sorted(frame["round"].unique())
    lo, hi = float(run.conditions["lo"].min()), float(run.conditions["hi"].max())
    edges = np.linspace(lo, hi, bins + 1)
    fig, axes = plt.subplots(len(conditions), max(len(rounds), 1), squeeze=False, sharex=True,
                             figsize=(2.6 * max(len(rounds), 1) + 1, 2.2 * len(conditions) + 0.5))
    groups = dict(list(frame.groupby(["condition_id", "round"], observed=True)["value"]))
    for i, cond in enumerate(conditions):
        for j, rnd in enumerate(rounds):
            ax = axes[i][j]
            values = groups.get((cond, rnd), pd.Series(dtype=float)).to_numpy()
            counts, _ = np.histogram(values, bins=edges)
            ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0")
            ax.set_title(f"{cond} round {rnd}", fontsize=9)
            if values.size:
                ax.axvline(values.mean(), color="#c44e52", lw=1, label="mean")
    axes[-1][0].set_xlabel("guess")
    fig.suptitle("Guesses per round")
    fig.tight_layout()
    return fig


def mean_and_target(metrics: pd.DataFrame) -> Figure:
    """Mean guess (solid) and target (dashed) across rounds per condition, with the range over
    replicates shaded and the equilibrium dotted."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (cond, group) in enumerate(metrics.groupby("condition_id", observed=True, sort=True)):
        color = f"C{i % 10}"
        per = group.groupby("round")[["mean", "target", "equilibrium"]].agg(["mean", "min", "max"])
        rounds = per.index.to_numpy()
        ax.plot(rounds, per[("mean", "mean")], "o-", color=color, label=f"{cond} mean")
        ax.fill_between(rounds, per[("mean", "min")], per[("mean", "max")], color=color, alpha=0.15)
        ax.plot(rounds, per[("target", "mean")], "s--", color=color, alpha=0.7, label=f"{cond} target")
        ax.plot(rounds, per[("equilibrium", "mean")], ":", color=color, alpha=0.6)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("guess")
    ax.set_title("Mean and target across rounds")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def level_k_spikes(run: RunData | PathLike, round: int = 1, max_k: int = 3) -> Figure:
    """Guesses on a unit grid with the level-k points (from 50 and 100) and the equilibrium marked,
    so the spikes Nagel found near 50 p^k show up (or not)."""
    run = as_run(run)
    frame = _valid_values(run)
    frame = frame[frame["round"] == round]
    conds = run.conditions.drop_duplicates("condition_id").assign(condition_id=lambda d: d["condition_id"].astype(str))
    conds = conds[conds["condition_id"].isin(frame["condition_id"].unique())]
    fig, axes = plt.subplots(max(len(conds), 1), 1, squeeze=False, figsize=(7, 2.2 * max(len(conds), 1) + 0.5))
    for ax, cond in zip(axes[:, 0], conds.itertuples(index=False)):
        values = frame.loc[frame["condition_id"] == cond.condition_id, "value"].to_numpy()
        edges = np.arange(np.floor(cond.lo), np.ceil(cond.hi) + 2) - 0.5
        counts, _ = np.histogram(values, bins=edges)
        ax.bar(edges[:-1] + 0.5, counts / max(values.size, 1), width=1.0, color="#8c8c8c")
        for pt in level_k_points(cond.p, cond.offset, cond.lo, cond.hi, max_k=max_k).itertuples(index=False):
            style = {"color": "#c44e52", "ls": "-"} if pt.label == "EQ" else \
                {"color": "#4c72b0" if pt.anchor == 50 else "#55a868", "ls": "--"}
            ax.axvline(pt.point, lw=1, **style)
            ax.text(pt.point, ax.get_ylim()[1] * 0.9, pt.label, fontsize=6, rotation=90, ha="right")
        ax.set_title(f"{cond.condition_id}: p = {cond.p:.3g}, offset {cond.offset:g}, round {round}", fontsize=9)
        ax.set_ylabel("share")
    axes[-1][0].set_xlabel("guess")
    fig.tight_layout()
    return fig


def breakdown_bars(table: pd.DataFrame, attribute: str, round: int | None = 1) -> Figure:
    """Mean guess per attribute value (bars) for each condition, from ``breakdown``'s table."""
    data = table if round is None or "round" not in table else table[table["round"] == round]
    pivot = data.pivot_table(index=attribute, columns="condition_id", values="mean", observed=True)
    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.35 * max(len(pivot), 2) * max(len(pivot.columns), 1)))
    pivot.plot.barh(ax=ax)
    ax.set_xlabel("mean guess" + (f" (round {round})" if round is not None else ""))
    ax.set_title(f"Mean guess by {attribute}")
    fig.tight_layout()
    return fig


def simulated_vs_human(fidelity_table: pd.DataFrame) -> Figure:
    """Simulated mean/median (filled markers) next to the human figures (open markers) per round."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if fidelity_table.empty:
        ax.text(0.5, 0.5, "no human data set for this game", ha="center", va="center")
        ax.set_axis_off()
        return fig
    for i, (cond, group) in enumerate(fidelity_table.groupby("condition_id", sort=True)):
        sim = group.drop_duplicates("round")
        ax.plot(sim["round"], sim["sim_mean"], "o-", color=f"C{i}", label=f"{cond} simulated mean")
        ax.plot(sim["round"], sim["sim_median"], "s", color=f"C{i}", label=f"{cond} simulated median")
    for j, (name, group) in enumerate(fidelity_table.groupby(["dataset", "p"], sort=True)):
        human = group.drop_duplicates("round")
        label = f"{name[0]} (p={name[1]:.3g})"
        ax.plot(human["round"], human["human_mean"], "o--", mfc="none", color="k", alpha=0.5 + 0.25 * (j % 2),
                label=f"{label} mean")
        ax.plot(human["round"], human["human_median"], "s", mfc="none", color="k", label=f"{label} median")
    ax.set_xlabel("round / period")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("guess")
    ax.set_title("Simulated vs human (Nagel 1995)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def figure_set(run: RunData | PathLike, metrics: pd.DataFrame, fidelity_table: pd.DataFrame,
               breakdowns: Sequence[tuple[str, pd.DataFrame]] = ()) -> dict[str, Figure]:
    """The report's figures, by title."""
    figs = {
        "Guesses per round": histograms_by_round(run),
        "Mean and target across rounds": mean_and_target(metrics),
        "Level-k spikes (round 1)": level_k_spikes(run, round=1),
        "Simulated vs human": simulated_vs_human(fidelity_table),
    }
    for attribute, table in breakdowns:
        figs[f"Mean guess by {attribute}"] = breakdown_bars(table, attribute)
    return figs
