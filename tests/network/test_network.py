"""Networks as data: generators (vectorised, seeded, shard-layout free), the edge-list loader,
network.parquet and its manifest summary, the CSR in-neighbour index, and bad input named by
field with exit 2 and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from crowdlab.experiments import run
from crowdlab.experiments.errors import ConfigError
from crowdlab.experiments.network import build_network, in_index, read_graph
from crowdlab.experiments.network import generate as gen
from crowdlab.experiments.network.build import Graph
from crowdlab.experiments.network.summary import homophily
from crowdlab.experiments.prepare import prepare_run
from crowdlab.parquet_io import write_table_atomic

CROWDLAB = [sys.executable, "-m", "crowdlab.flows.cli"]


def personas(n: int) -> pa.Table:
    ids = np.arange(100, 100 + n, dtype=np.int64)  # ids are not positions
    return pa.table({"agent_id": ids, "party": np.array(["left", "centre", "right"])[ids % 3],
                     "age_group": np.array(["18-29", "30-49", "50+"])[(ids // 3) % 3]})


@pytest.fixture
def people(tmp_path: Path) -> Path:
    return write_table_atomic(personas(600), tmp_path / "people.parquet")


def config(people: Path, network: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"experiment": "net", "population": {"personas": str(people)},
            "scenario": {"kind": "beauty_contest"}, "backend": {"kind": "behavioral"},
            "rounds": 1, "shard_size": 250, "seed": 3, "network": network, **extra}


def test_barabasi_albert_is_preferential_attachment() -> None:
    n, m = 20_000, 4
    src, dst = gen.barabasi_albert(n, m, np.random.default_rng(0))
    assert src.size == (n - m) * m
    assert (dst < src).all()  # each node links to earlier nodes only: no self-loops
    block = np.sort(dst[m:].reshape(-1, m), axis=1)
    assert (block[:, 1:] != block[:, :-1]).all()  # m distinct targets per node
    deg = np.bincount(np.concatenate([src, dst]), minlength=n)
    assert deg.min() >= m and deg.sum() == 2 * src.size
    # scale-free tail: P(k >= x) falls about 4x per doubling of x (exponent 3); a uniform
    # attachment graph falls far faster (exponential tail)
    ratio = (deg >= 16).mean() / (deg >= 32).mean()
    assert 2.5 < ratio < 6.5, ratio
    assert deg.max() > 150


def test_watts_strogatz_ring_and_rewiring() -> None:
    n, k = 1000, 6
    src, dst = gen.watts_strogatz(n, k, 0.0, np.random.default_rng(0))
    s, d = gen.canonical(src, dst, False, n)
    assert s.size == n * k // 2
    assert (np.bincount(np.concatenate([s, d]), minlength=n) == k).all()
    src, dst = gen.watts_strogatz(n, k, 0.3, np.random.default_rng(0))
    s, d = gen.canonical(src, dst, False, n)
    assert s.size == n * k // 2  # a rewired edge never repeats another or loops
    ring = ((d - s) % n <= k // 2) | ((s - d) % n <= k // 2)
    assert 0.2 < 1 - ring.mean() < 0.4


def test_homophily_block_and_complete_groups() -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, 20_000)
    s, d = gen.homophily(codes, 10, 0.8, False, rng)
    same = (codes[s] == codes[d]).mean()
    assert abs(same - (0.8 + 0.2 * 0.25)) < 0.02
    s, d = gen.stochastic_block(codes, 6, 2, False, rng)
    assert abs((codes[s] == codes[d]).mean() - 0.75) < 0.02
    s, d = gen.complete_groups(np.arange(10) // 4)  # groups of 4, 4, 2
    assert sorted(zip(s.tolist(), d.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3), (4, 5), (4, 6),
                                                   (4, 7), (5, 6), (5, 7), (6, 7), (8, 9)]


def test_in_index_reads_edges_both_ways_or_one() -> None:
    g = Graph(4, np.array([0, 0, 2]), np.array([1, 2, 3]), np.array([1.0, 2.0, 3.0]), directed=True)
    idx = in_index(g)
    assert idx.indptr.tolist() == [0, 0, 1, 2, 3] and idx.senders.tolist() == [0, 0, 2]
    und = in_index(Graph(4, g.source, g.target, g.weight, directed=False))
    assert und.in_degree().tolist() == [2, 1, 2, 1]
    assert und.senders[und.indptr[2]:und.indptr[3]].tolist() == [0, 3]
    assert und.weights[und.indptr[2]:und.indptr[3]].tolist() == [2.0, 3.0]


def test_homophily_summary() -> None:
    g = Graph(4, np.array([0, 1]), np.array([1, 2]), np.ones(2), False)
    h = homophily(g, np.array(["a", "a", "b", "b"]))
    # edge ends: a, a, a, b -> random mixing by degree joins equals with 0.75^2 + 0.25^2
    assert h["same_share"] == 0.5 and h["expected_share"] == 0.625 and h["coleman"] == pytest.approx(-1 / 3, abs=1e-5)


@pytest.mark.parametrize("network", [
    {"kind": "barabasi_albert", "m": 3},
    {"kind": "watts_strogatz", "k": 4, "p": 0.2},
    {"kind": "homophily", "columns": ["party"], "degree": 6, "homophily": 0.9, "directed": True},
    {"kind": "stochastic_block", "column": "party", "degree_in": 4, "degree_out": 1},
    {"kind": "complete_groups", "group_size": 5},
])
def test_network_is_stored_seeded_and_shard_layout_free(people: Path, tmp_path: Path, network: dict) -> None:
    a = prepare_run(config(people, network), run_id="a", runs_root=tmp_path / "runs")
    b = prepare_run(config(people, network, shard_size=70), run_id="b", runs_root=tmp_path / "runs")
    c = prepare_run(config(people, network, seed=4), run_id="c", runs_root=tmp_path / "runs")
    ta, tb, tc = (pq.read_table(Path(h.run_dir) / "network.parquet") for h in (a, b, c))
    assert ta.equals(tb)
    if network["kind"] != "complete_groups":
        assert not ta.equals(tc)  # the run seed drives the graph
    ids = set(personas(600)["agent_id"].to_pylist())
    assert set(ta["source"].to_pylist()) | set(ta["target"].to_pylist()) <= ids
    assert (ta.schema.metadata or {})[b"directed"] == str(network.get("directed", False)).lower().encode()
    summary = json.loads((Path(a.run_dir) / "manifest.json").read_text())["network"]
    assert summary["edges"] == ta.num_rows and summary["nodes"] == 600
    key = "in_degree" if network.get("directed") else "degree"
    assert summary[key]["p0"] <= summary[key]["p50"] <= summary[key]["p100"]
    if network["kind"] in ("homophily", "stochastic_block"):
        assert summary["homophily"]["party"]["coleman"] > 0.5


def test_edge_list_loads_weights_and_ids(people: Path, tmp_path: Path) -> None:
    edges = write_table_atomic(pa.table({"source": [100, 101, 105, 101], "target": [101, 102, 100, 100],
                                         "weight": [0.5, 2.0, 1.0, 7.0]}), tmp_path / "edges.parquet")
    h = prepare_run(config(people, {"kind": "edge_list", "path": str(edges)}), run_id="e", runs_root=tmp_path / "r")
    t = pq.read_table(Path(h.run_dir) / "network.parquet")
    # undirected: (min, max), repeats dropped keeping the first weight (101-100 repeats 100-101)
    assert t.to_pydict() == {"source": [100, 100, 101], "target": [101, 105, 102], "weight": [0.5, 1.0, 2.0]}
    g = read_graph(h.run_dir, personas(600)["agent_id"].to_numpy())
    assert g.source.tolist() == [0, 0, 1] and g.target.tolist() == [1, 5, 2]


def _write_yaml(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


BAD = [
    ({"kind": "edge_list", "path": "EDGES", "_edges": {"source": [100, 9999], "target": [101, 102]}},
     "network.path", "agent ids the population does not have"),
    ({"kind": "edge_list", "path": "EDGES", "_edges": {"source": [100, 101], "target": [101, 101]}},
     "network.path", "self-loop"),
    ({"kind": "edge_list", "path": "EDGES", "_edges": {"source": [100], "target": [101], "weight": [-1.0]}},
     "network.path", "negative"),
    ({"kind": "barabasi_albert", "m": 600}, "network.m", "smaller than the number of agents"),
    ({"kind": "watts_strogatz", "p": 1.5}, "network.p", "[0, 1]"),
    ({"kind": "watts_strogatz", "p": -0.1}, "network.p", "[0, 1]"),
    ({"kind": "homophily", "columns": ["religion"]}, "network.columns", "'religion' does not exist"),
    ({"kind": "watts_strogatz", "k": 0}, "network.k", "> 0"),
    ({"kind": "barabasi_albert", "m": -1}, "network.m", "> 0"),
    ({"kind": "homophily", "columns": ["party"], "homophily_on": ["income"]}, "network.homophily_on", "'income'"),
]


def _bad(tmp_path: Path, network: dict) -> dict:
    network = dict(network)
    edges = network.pop("_edges", None)
    if edges is not None:
        network["path"] = str(write_table_atomic(pa.table(edges), tmp_path / "edges.parquet"))
    return network


@pytest.mark.parametrize(("network", "field", "problem"), BAD)
def test_bad_network_is_named_and_nothing_is_written(people: Path, tmp_path: Path, network: dict, field: str,
                                                     problem: str) -> None:
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError) as err:
        run(config(people, _bad(tmp_path, network)), run_id="x", runs_root=runs)
    assert err.value.field == field and problem in err.value.message, str(err.value)
    assert not runs.exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", [0, 3, 6])
def test_cli_bad_network_one_line_exit_2(people: Path, tmp_path: Path, case: int) -> None:
    network, field, _ = BAD[case]
    path = _write_yaml(tmp_path, config(people, _bad(tmp_path, network)))
    runs = tmp_path / "runs"
    out = subprocess.run(CROWDLAB + ["run", str(path), "--no-prefect", "--runs-root", str(runs)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: "), out.stderr
    assert not runs.exists()


def test_build_network_needs_no_python_loop_at_scale() -> None:
    """100k agents, BA m=5: the vectorised path (a per-node loop would take minutes here)."""
    g = build_network(_ba(5), personas(100_000), seed=1)
    assert g.source.size == (100_000 - 5) * 5


def _ba(m: int):  # type: ignore[no-untyped-def]
    from crowdlab.experiments.network.config import BarabasiAlbert

    return BarabasiAlbert(m=m)
