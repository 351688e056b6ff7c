"""Analysis of a network run: trajectories by degree decile and persona attribute, diffusion of
an injected message, and the neighbourhood drawing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

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
