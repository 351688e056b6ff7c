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
    """Per condition, replicate and round: the share of agents (seeders left out) who by then could
    have read an injected message, i.e. an in-neighbour posted it in an earlier round within the
    posts' window; conditions without an intervention are left out."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    edges, directed = _network(run_dir)
    src, dst = edges["source"].to_numpy(), edges["target"].to_numpy()
    if not directed:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
    ids = pq.read_table(run_dir / "personas" / "personas.parquet", columns=["agent_id"])["agent_id"].to_numpy()
    posts = ds.dataset(run_dir / "messages", format="parquet").to_table().to_pandas() \
        if (run_dir / "messages").is_dir() else pd.DataFrame(columns=["condition_id", "replicate", "round", "sender", "text"])
    rows = []
    for cond in manifest["conditions"]:
        scenario = cond.get("scenario") or {}
        iv, msgs = scenario.get("intervention"), scenario.get("messages") or {}
        if not iv:
            continue
        window = int(msgs.get("window", 1))
        mine = posts[(posts["condition_id"] == cond["condition_id"]) & (posts["text"] == iv["message"][: msgs.get("max_chars", 280)])]
        for rep in range(int(manifest.get("replicates", 1))):
            shown = mine[mine["replicate"] == rep]
            seeders = set(shown["sender"])
            others = ~np.isin(ids, list(seeders))
            reached = np.zeros(ids.size, bool)
            for k in range(1, int(manifest["rounds"]) + 1):
                readable = shown[(shown["round"] < k) & (shown["round"] >= k - window)]["sender"].to_numpy()
                hit = np.unique(dst[np.isin(src, readable)])
                reached |= np.isin(ids, hit)
                rows.append({"condition_id": cond["condition_id"], "replicate": rep, "round": k,
                             "reached_share": float(reached[others].mean()) if others.any() else float("nan")})
    return pd.DataFrame(rows, columns=["condition_id", "replicate", "round", "reached_share"])


def draw_neighbourhood(run_dir: str | Path, agent_id: int, out: str | Path, condition_id: str = "c000",
                       round_: int | None = None, max_neighbours: int = 30, seed: int = 0) -> Path:
    """A PNG of one agent and a seeded sample of at most ``max_neighbours`` of its neighbours on a
    circle, coloured by stance in ``round_`` (the last round when not given)."""
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
