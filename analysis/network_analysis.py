"""Networks in a run folder (``network.parquet``, ``messages/``, opinion decisions): stance
trajectories by condition, persona attribute or network position (degree decile), diffusion
of an injected message, and a drawing of one agent's sampled neighbourhood.

Reads only the run folder (docs/contracts.md); the degree is the number of agents who hear an
agent (undirected: its neighbours; directed: its out-neighbours, who read it) plus those it hears.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def _network(run_dir: Path) -> tuple[pd.DataFrame, bool]:
    table = pq.read_table(run_dir / "network.parquet")
    return table.to_pandas(), (table.schema.metadata or {}).get(b"directed") == b"true"


def degrees(run_dir: str | Path) -> pd.Series:
    """Ties per agent id (in + out), every agent of the persona table included."""
    run_dir = Path(run_dir)
    edges, _ = _network(run_dir)
    ids = pq.read_table(run_dir / "personas" / "personas.parquet", columns=["agent_id"])["agent_id"].to_numpy()
    deg = pd.concat([edges["source"], edges["target"]]).value_counts()
    return deg.reindex(ids, fill_value=0).rename("degree")


def stance_trajectories(run_dir: str | Path, by: str = "condition_id") -> pd.DataFrame:
    """Mean stance (valid answers) per condition, round and ``by``: ``condition_id``, a persona
    column, or ``degree_decile`` (1 = fewest ties)."""
    run_dir = Path(run_dir)
    d = ds.dataset(run_dir / "decisions", format="parquet").to_table(
        columns=["condition_id", "replicate", "round", "agent_id", "value", "valid"]).to_pandas()
    d = d[d["valid"]]
    keys = ["condition_id", "round"]
    if by == "degree_decile":
        deg = degrees(run_dir)
        decile = pd.qcut(deg.rank(method="first"), 10, labels=range(1, 11)).astype(int)
        d = d.assign(degree_decile=d["agent_id"].map(decile))
        keys.append(by)
    elif by != "condition_id":
        personas = pq.read_table(run_dir / "personas" / "personas.parquet", columns=["agent_id", by]).to_pandas()
        d = d.merge(personas, on="agent_id", how="left")
        keys.append(by)
    out = d.groupby(keys, observed=True)["value"].agg(n="size", mean_stance="mean", sd="std").reset_index()
    return out


def diffusion(run_dir: str | Path) -> pd.DataFrame:
    """Per condition with an intervention, replicate and settled round: ``reached_share``, the
    cumulative share of the other agents (seeders left out) who by then were shown a post carrying
    the injected message (its text contains it) among the at most k posts their prompt held: the
    same seeded selection recomputed through the CSR in-neighbour index; ``reachable_share``, the
    share with such a post among their in-neighbours' readable posts (the k cap ignored: an upper
    bound, equal to ``reached_share`` when nobody has more than k posts). Without messages the
    seeders' stance is what spreads, seen by every out-neighbour in the round after it."""
    from crowdlab.experiments.network.reach import reach
    from crowdlab.experiments.run_context import load_context

    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    treated = [c["condition_id"] for c in manifest["conditions"] if (c.get("scenario") or {}).get("intervention")]
    rows = []
    if treated:
        ctx = load_context(run_dir)
        for cid in treated:
            for rep in range(int(manifest.get("replicates", 1))):
                curve = reach(ctx, cid, rep)
                rows += [{"condition_id": cid, "replicate": rep, "round": int(k), "reached_share": float(a),
                          "reachable_share": float(b)} for k, a, b in zip(curve.rounds, curve.reached, curve.reachable)]
    return pd.DataFrame(rows, columns=["condition_id", "replicate", "round", "reached_share", "reachable_share"])


def draw_neighbourhood(run_dir: str | Path, agent_id: int, out: str | Path, condition_id: str = "c000",
                       round_: int | None = None, max_neighbours: int = 30, seed: int = 0) -> Path:
    """A PNG of one agent and a seeded sample of at most ``max_neighbours`` of its neighbours on a
    circle, coloured by stance in ``round_`` (the last round when not given)."""
    import matplotlib.pyplot as plt

    fig = neighbourhood_figure(run_dir, agent_id, condition_id, round_, max_neighbours, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def neighbourhood_figure(run_dir: str | Path, agent_id: int, condition_id: str = "c000", round_: int | None = None,
                         max_neighbours: int = 30, seed: int = 0):  # -> matplotlib Figure
    """The figure ``draw_neighbourhood`` saves (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    edges, directed = _network(run_dir)
    nb = pd.concat([edges.loc[edges["source"] == agent_id, "target"], edges.loc[edges["target"] == agent_id, "source"]])
    nb = np.unique(nb.to_numpy())
    total = nb.size
    if total > max_neighbours:
        nb = np.sort(np.random.default_rng(seed).choice(nb, max_neighbours, replace=False))
    d = ds.dataset(run_dir / "decisions", format="parquet").to_table(
        columns=["condition_id", "round", "agent_id", "value", "valid"]).to_pandas()
    d = d[d["condition_id"] == condition_id]
    k = int(d["round"].max()) if round_ is None else round_
    stance = d[(d["round"] == k) & d["valid"]].set_index("agent_id")["value"]
    angle = np.linspace(0, 2 * np.pi, nb.size, endpoint=False)
    xy = {int(a): (np.cos(t), np.sin(t)) for a, t in zip(nb, angle)}
    xy[int(agent_id)] = (0.0, 0.0)
    fig, ax = plt.subplots(figsize=(5, 5))
    members = set(xy)
    sub = edges[edges["source"].isin(members) & edges["target"].isin(members)]
    for s, t in zip(sub["source"], sub["target"]):
        (x0, y0), (x1, y1) = xy[int(s)], xy[int(t)]
        ax.plot([x0, x1], [y0, y1], color="0.75", lw=0.8, zorder=1)
    nodes = list(xy)
    colours = [stance.get(a, np.nan) for a in nodes]
    points = ax.scatter([xy[a][0] for a in nodes], [xy[a][1] for a in nodes], c=colours, cmap="coolwarm",
                        s=[160 if a == agent_id else 60 for a in nodes], edgecolors="k", zorder=2)
    fig.colorbar(points, ax=ax, shrink=0.7, label=f"stance, round {k}")
    ax.set_title(f"agent {agent_id}: {nb.size} of {total} neighbours ({'directed' if directed else 'undirected'})")
    ax.set_axis_off()
    return fig


# -- the report's network section --------------------------------------------------------------

def degree_distribution(run_dir: str | Path) -> pd.DataFrame:
    """How many agents have each degree (ties in + out), isolated agents included."""
    counts = degrees(run_dir).value_counts().sort_index()
    return pd.DataFrame({"degree": counts.index.to_numpy(), "agents": counts.to_numpy()})


def round_outcomes(run_dir: str | Path) -> pd.DataFrame:
    """The opinion outcomes of ``rounds.parquet`` per condition and round (whole population rows,
    replicates averaged): mean stance, variance, bimodality, assortativity, shares changed/exposed."""
    rounds = pq.read_table(Path(run_dir) / "rounds.parquet").to_pandas()
    rounds = rounds[rounds["group"] == -1]
    cols = [c for c in ("mean", "outcome_variance", "outcome_bimodality", "outcome_assortativity",
                        "outcome_changed_share", "outcome_exposed_share", "outcome_toward_share") if c in rounds]
    out = rounds.groupby(["condition_id", "round"], observed=True)[cols].mean().reset_index()
    out = out.rename(columns={**{c: c.removeprefix("outcome_") for c in cols}, "mean": "mean_stance"})
    return out.dropna(axis=1, how="all")


def shifted_attributes(run_dir: str | Path) -> list[str]:
    """Persona columns the opinion scenario draws initial stances from (``initial.shift``)."""
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    found: list[str] = []
    for cond in manifest.get("conditions", []):
        shift = ((cond.get("scenario") or {}).get("initial") or {}).get("shift") or {}
        found += [c for c in shift if c not in found]
    return found


def sample_agent(run_dir: str | Path, quantile: float = 0.9) -> int:
    """A well-connected but not extreme agent to draw: the lowest id whose degree is nearest the
    ``quantile`` of the degree distribution."""
    deg = degrees(run_dir)
    gap = (deg - deg.quantile(quantile)).abs()
    return int(deg.index[(gap == gap.min()).to_numpy()].min())


def _trajectory_axes(ax, table: pd.DataFrame, by: str, cmap: str | None = None) -> None:
    levels = sorted(table[by].unique(), key=lambda v: (str(type(v)), v))
    colours = plt_colours(len(levels), cmap)
    for colour, level in zip(colours, levels):
        part = table[table[by] == level].sort_values("round")
        ax.plot(part["round"], part["mean_stance"], marker="o", ms=3, color=colour, label=str(level))
    ax.set_xlabel("round")
    ax.set_ylabel("mean stance")


def plt_colours(n: int, cmap: str | None = None) -> list:
    import matplotlib

    if cmap is None:
        cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        return [cycle[i % len(cycle)] for i in range(n)]
    return [matplotlib.colormaps[cmap](x) for x in np.linspace(0.05, 0.95, max(n, 1))]


def network_figures(run_dir: str | Path, attribute: str | None = None, max_panels: int = 12) -> list:
    """The report's network figures (``plots.ReportFigure``): stance by condition, by a persona
    attribute and by degree decile (one panel per condition, at most ``max_panels``), the diffusion
    of injected messages, the degree distribution and one sampled neighbourhood."""
    from crowdlab.analysis.plots import ReportFigure  # sets the Agg backend

    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    figures = []
    by_condition = stance_trajectories(run_dir)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _trajectory_axes(ax, by_condition, "condition_id")
    ax.legend(title="condition", fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    figures.append(ReportFigure("Mean stance per round by condition", fig,
                                alt="mean stance per round, one line per condition", caption="valid answers, replicates pooled"))
    conditions = list(dict.fromkeys(by_condition["condition_id"]))[:max_panels]
    for by, title, cmap in ((attribute, f"Mean stance by {attribute}", None),
                            ("degree_decile", "Mean stance by degree decile", "viridis")):
        if by is None:
            continue
        table = stance_trajectories(run_dir, by)
        cols = min(len(conditions), 3)
        rows = -(-len(conditions) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False, sharey=True)
        for ax, cond in zip(axes.flat, conditions):
            _trajectory_axes(ax, table[table["condition_id"] == cond], by, cmap)
            ax.set_title(cond, fontsize=9)
        for ax in list(axes.flat)[len(conditions):]:
            ax.set_axis_off()
        axes.flat[min(len(conditions), cols) - 1].legend(title=by, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
        fig.tight_layout()
        note = "1 = the tenth of agents with fewest ties" if by == "degree_decile" else "initial stance shifted by it"
        figures.append(ReportFigure(title, fig, alt=f"mean stance per round by {by}, one panel per condition "
                                    f"({', '.join(conditions)})", caption=note))
    curve = diffusion(run_dir)
    if not curve.empty:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        mean = curve.groupby(["condition_id", "round"])[["reached_share", "reachable_share"]].mean().reset_index()
        capped = bool((mean["reachable_share"] > mean["reached_share"] + 1e-12).any())
        for colour, (cond, part) in zip(plt_colours(mean["condition_id"].nunique()), mean.groupby("condition_id")):
            ax.plot(part["round"], part["reached_share"], marker="o", ms=3, color=colour, label=cond)
            if capped:
                ax.plot(part["round"], part["reachable_share"], ls="--", lw=1, color=colour)
        ax.set_xlabel("round")
        ax.set_ylabel("share reached (cumulative)")
        ax.set_ylim(0, None)
        ax.legend(title="condition", fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        figures.append(ReportFigure("Diffusion of the injected message", fig,
                                    alt="share of agents an injected message reached per round, one line per condition",
                                    caption="cumulative share of the other agents shown a post carrying the "
                                            "injected message among the at most k posts they read, replicates averaged"
                                            + ("; dashed: those with such a post among their in-neighbours "
                                               "(the k cap ignored)" if capped else "")))
    dist = degree_distribution(run_dir)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    shown = dist[dist["degree"] > 0]
    ax.scatter(shown["degree"], shown["agents"], s=8)
    if shown["degree"].max() / max(shown["degree"].min(), 1) > 20:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("degree (ties in + out)")
    ax.set_ylabel("agents")
    isolated = int(dist.loc[dist["degree"] == 0, "agents"].sum())
    figures.append(ReportFigure("Degree distribution", fig, alt="number of agents per degree",
                                caption=f"{int(dist['agents'].sum()):,} agents, {isolated:,} isolated (not shown)"))
    agent = sample_agent(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    treated = [c["condition_id"] for c in manifest.get("conditions", []) if (c.get("scenario") or {}).get("intervention")]
    cond = treated[0] if treated else conditions[0]
    figures.append(ReportFigure(f"Neighbourhood of agent {agent} ({cond}, last round)",
                                neighbourhood_figure(run_dir, agent, cond), alt=f"agent {agent} and a sample of "
                                "its neighbours on a circle, coloured by stance",
                                caption="an agent at the 90th percentile of degree, at most 30 neighbours sampled "
                                        "(seeded); grey lines: ties among them"))
    return figures
