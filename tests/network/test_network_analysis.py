"""Analysis of a network run: trajectories by degree decile and persona attribute, diffusion of
an injected message, and the neighbourhood drawing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crowdlab.analysis.network_analysis import degrees, diffusion, draw_neighbourhood, stance_trajectories
from crowdlab.experiments import run
from crowdlab.parquet_io import write_table_atomic


def test_trajectories_diffusion_and_drawing(tmp_path: Path) -> None:
    ids = np.arange(500, dtype=np.int64)
    people = write_table_atomic(pa.table({"agent_id": ids, "party": np.array(["a", "b"])[ids % 2]}),
                                tmp_path / "people.parquet")
    treatment = {"round": 1, "seeders": "random", "share": 0.02, "message": "Look at this.", "stance": 7}
    cfg = {"experiment": "an", "population": {"personas": str(people)},
           "network": {"kind": "watts_strogatz", "k": 4, "p": 0.05},
           "scenario": {"kind": "opinion", "messages": {"k": 2, "window": 1},
                        "initial": {"shift": {"party": {"a": -1, "b": 1}}}},
           "backend": {"kind": "opinion_dynamics", "model": "degroot"},
           "design": {"factors": {"scenario.intervention": [None, treatment]}},
           "rounds": 4, "shard_size": 500, "seed": 1}
    result = run(cfg, run_id="r", runs_root=tmp_path / "runs")
    deg = degrees(result.run_dir)
    assert deg.sum() == 500 * 4 and deg.index.tolist() == ids.tolist()  # rewiring keeps the edge count
    by_party = stance_trajectories(result.run_dir, "party")
    r1 = by_party[(by_party["round"] == 1) & (by_party["condition_id"] == "c000")].set_index("party")
    assert r1.loc["b", "mean_stance"] - r1.loc["a", "mean_stance"] > 1.5
    by_decile = stance_trajectories(result.run_dir, "degree_decile")
    assert set(by_decile["degree_decile"]) == set(range(1, 11))
    curve = diffusion(result.run_dir)
    assert set(curve["condition_id"]) == {"c001"}
    shares = curve["reached_share"].tolist()
    assert shares[0] == 0.0 and shares[1] > 0 and shares == sorted(shares)  # cumulative
    import pyarrow.dataset as ds

    posts = ds.dataset(result.run_dir / "messages", format="parquet").to_table().to_pandas()
    seeders = posts[(posts["text"] == "Look at this.")]["sender"].unique()
    assert len(seeders) == 10
    assert shares[1] <= deg[seeders].sum() / 490  # one hop: at most the seeders' neighbours
    png = draw_neighbourhood(result.run_dir, 7, tmp_path / "hood.png", condition_id="c001")
    assert png.stat().st_size > 1000


def test_report_has_a_network_section(tmp_path: Path) -> None:
    """crowdlab report on an opinion run with an intervention: the network section holds the
    outcome table, trajectories by condition / persona attribute / degree decile, the diffusion
    curve, the degree distribution and a neighbourhood drawing."""
    import re

    from crowdlab.analysis.report import write_report

    ids = np.arange(300, dtype=np.int64)
    people = write_table_atomic(pa.table({"agent_id": ids, "party": np.array(["a", "b", "c"])[ids % 3]}),
                                tmp_path / "people.parquet")
    treatment = {"round": 1, "seeders": "top_degree", "share": 0.02, "message": "Read this.", "stance": 7}
    cfg = {"experiment": "rep", "population": {"personas": str(people)},
           "network": {"kind": "barabasi_albert", "m": 2},
           "scenario": {"kind": "opinion", "messages": {"k": 2},
                        "initial": {"shift": {"party": {"a": -1, "c": 1}}}},
           "backend": {"kind": "opinion_dynamics", "model": "bounded_confidence"},
           "design": {"factors": {"scenario.intervention": [None, treatment]}},
           "rounds": 3, "shard_size": 300, "seed": 2}
    result = run(cfg, run_id="r", runs_root=tmp_path / "runs")
    page = write_report(result.run_dir).read_text()
    assert '<a href="#network">Network</a>' in page
    # a one-number scenario declares no answer fields: no empty answer, figure or human-data sections
    for empty in ('id="answers"', 'id="figures"', 'id="human"', 'href="#answers"', 'href="#human"'):
        assert empty not in page, empty
    section = page[page.index('<h2 id="network">'):]
    captions = re.findall(r"<figcaption>([^:<]*)", section)
    assert captions == ["Mean stance per round by condition", "Mean stance by party", "Mean stance by degree decile",
                        "Diffusion of the injected message", "Degree distribution",
                        f"Neighbourhood of agent {captions[-1].split()[3]} (c001, last round)"]
    assert section.count('src="data:image/png;base64,') == 6
    outcomes = section[section.index("Outcomes per round"):section.index("<figure>")]
    for column in ("mean_stance", "variance", "bimodality", "assortativity", "changed_share", "exposed_share"):
        assert f"<th>{column}</th>" in outcomes
    assert outcomes.count("<tr") == 1 + 2 * 3  # header + conditions x rounds
    assert "<th>degree</th>" in section and "<th>agents</th>" in section


def _prompts_by_agent(run_dir: Path, condition_id: str, round_: int) -> dict[int, str]:
    """Each agent's user prompt of a round, rebuilt from the prompt audit trail."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    d = ds.dataset(run_dir / "decisions", format="parquet").to_table(
        filter=(pc.field("condition_id") == condition_id) & (pc.field("round") == round_),
        columns=["agent_id", "prompt_hash"]).to_pylist()
    chats = {r["prompt_hash"]: r["message_hashes"]
             for r in ds.dataset(run_dir / "prompts", format="parquet").to_table().to_pylist()}
    texts = {r["message_hash"]: (r["role"], r["content"])
             for r in ds.dataset(run_dir / "prompt_messages", format="parquet").to_table().to_pylist()}
    return {r["agent_id"]: next(texts[h][1] for h in chats[r["prompt_hash"]] if texts[h][0] == "user") for r in d}


@pytest.mark.parametrize("select", ["recent", "sample"])
def test_diffusion_counts_readers_shown_the_post_not_all_who_could_read_it(tmp_path: Path, select: str) -> None:
    """k = 2 posts a reader on a graph of mean degree 6: the curve counts those whose prompt held
    a line with the injected post (read back from the prompt audit trail, one agent at a time)
    and stays below the upper bound (a carrier among the in-neighbours), which an edge loop gives."""
    import pyarrow.dataset as ds

    message = "Raise it now."
    ids = np.arange(100, 180, dtype=np.int64)
    people = write_table_atomic(pa.table({"agent_id": ids}), tmp_path / "people.parquet")
    treatment = {"round": 1, "seeders": "random", "share": 0.1, "message": message, "seed": 4}
    cfg = {"experiment": "exact", "population": {"personas": str(people)},
           "network": {"kind": "barabasi_albert", "m": 3},
           "scenario": {"kind": "opinion", "messages": {"k": 2, "select": select, "window": 2},
                        "intervention": treatment},
           "backend": {"kind": "opinion_dynamics", "model": "degroot", "render_prompts": True},
           "rounds": 4, "shard_size": 30, "seed": 5}
    result = run(cfg, run_id="r", runs_root=tmp_path / "runs")
    curve = diffusion(result.run_dir)
    assert curve["round"].tolist() == [1, 2, 3, 4]
    posts = ds.dataset(result.run_dir / "messages", format="parquet").to_table().to_pandas()
    seeders = set(posts.loc[posts["text"] == message, "sender"])
    assert len(seeders) == 8 and set(posts.loc[posts["text"] == message, "round"]) == {1}
    others = [int(a) for a in ids if a not in seeders]
    edges = pq.read_table(result.run_dir / "network.parquet").to_pylist()
    hears = {a: set() for a in ids.tolist()}
    for e in edges:  # undirected: both ends hear each other
        hears[e["target"]].add(e["source"])
        hears[e["source"]].add(e["target"])
    reached: set[int] = set()
    reachable: set[int] = set()
    for k in range(1, 5):
        prompts = _prompts_by_agent(result.run_dir, "c000", k)
        for a in others:
            shown = [line for line in prompts[a].splitlines() if line.startswith("- agent ")]
            assert len(shown) <= 2
            if any(line.endswith(f"(round 1): {message}") for line in shown):
                reached.add(a)
            if 1 <= k - 1 <= 2 and hears[a] & seeders:  # round-1 posts readable in rounds 2 and 3
                reachable.add(a)
        row = curve[curve["round"] == k].iloc[0]
        assert row["reached_share"] == pytest.approx(len(reached) / len(others))
        assert row["reachable_share"] == pytest.approx(len(reachable) / len(others))
    assert 0 < curve["reached_share"].iloc[-1] < curve["reachable_share"].iloc[-1]
    # the round's exposure outcome counts the same readers, round by round
    rounds = result.rounds().to_pandas().query("group == -1").set_index("round")
    for k in (2, 3):
        prompts = _prompts_by_agent(result.run_dir, "c000", k)
        shown_now = sum(any(line.endswith(f"(round 1): {message}") for line in prompts[a].splitlines()) for a in others)
        assert rounds.loc[k, "outcome_exposed_share"] == pytest.approx(shown_now / len(others))


def test_diffusion_without_posts_follows_the_seeders_stance(tmp_path: Path) -> None:
    """No messages: the seeders' stance is what spreads, seen by every out-neighbour the round
    after the intervention, so the exact curve and the bound agree with the round's exposure."""
    ids = np.arange(200, dtype=np.int64)
    people = write_table_atomic(pa.table({"agent_id": ids}), tmp_path / "people.parquet")
    treatment = {"round": 2, "seeders": "top_degree", "share": 0.05, "message": "Hold 7.", "stance": 7}
    cfg = {"experiment": "stance", "population": {"personas": str(people)},
           "network": {"kind": "barabasi_albert", "m": 2},
           "scenario": {"kind": "opinion", "intervention": treatment},
           "backend": {"kind": "opinion_dynamics", "model": "degroot"}, "rounds": 4, "shard_size": 200, "seed": 3}
    result = run(cfg, run_id="r", runs_root=tmp_path / "runs")
    curve = diffusion(result.run_dir).set_index("round")
    exposed = result.rounds().to_pandas().query("group == -1").set_index("round")["outcome_exposed_share"]
    assert curve["reached_share"].tolist() == curve["reachable_share"].tolist()
    assert curve.loc[2, "reached_share"] == 0.0 and curve.loc[3, "reached_share"] > 0.3
    assert curve.loc[3, "reached_share"] == pytest.approx(exposed[3])
    assert curve.loc[4, "reached_share"] == curve.loc[3, "reached_share"]  # cumulative, nothing new
