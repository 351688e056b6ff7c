"""Opinion dynamics through the normal runner: DeGroot and bounded confidence vectorised over the
CSR index, per-round outcomes, a 3-shard run equal to a 1-shard run row for row, and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from crowdlab.experiments import run
from crowdlab.experiments.config import load_config
from crowdlab.experiments.network.dynamics import update
from crowdlab.experiments.network.opinion import assortativity, bimodality
from crowdlab.experiments.network.peers import PeerView
from crowdlab.parquet_io import write_table_atomic

REPO = Path(__file__).parents[2]


def personas(n: int) -> pa.Table:
    ids = np.arange(n, dtype=np.int64)
    return pa.table({"agent_id": ids, "party": np.array(["left", "right"])[ids % 2]})


def config(people: Path, **extra: Any) -> dict[str, Any]:
    base = {"experiment": "opinion", "population": {"personas": str(people)},
            "network": {"kind": "barabasi_albert", "m": 3},
            "scenario": {"kind": "opinion", "initial": {"mean": 4, "sd": 1.2, "shift": {"party": {"left": -1, "right": 1}}}},
            "backend": {"kind": "opinion_dynamics", "model": "bounded_confidence", "epsilon": 1.5, "noise_sd": 0.1},
            "design": {"factors": {"backend.model": ["degroot", "bounded_confidence"]}},
            "rounds": 4, "shard_size": 900, "seed": 5}
    return {**base, **extra}


@pytest.fixture
def people(tmp_path: Path) -> Path:
    return write_table_atomic(personas(900), tmp_path / "people.parquet")


def test_update_rules_by_hand() -> None:
    # agent 0 hears 1 (stance 5) and 2 (stance 1); agent 1 hears 0; agent 2 hears nobody
    peers = PeerView(np.array([0, 2, 3, 3]), np.array([1, 2, 0]), np.array([1.0, 1.0, 2.0]), np.array([5.0, 1.0, 4.0]))
    x = np.array([4.0, 5.0, 1.0])
    assert update("degroot", x, peers, 0.5, 0).tolist() == [0.5 * 4 + 0.5 * 3, 0.5 * 5 + 0.5 * 4, 1.0]
    # bounded confidence, epsilon 1.5: agent 0 hears 5 (gap 1) but not 1 (gap 3); agent 1 hears 4 with weight 2
    assert update("bounded_confidence", x, peers, 0.5, 1.5).tolist() == [(4 + 5) / 2, (5 + 2 * 4) / 3, 1.0]
    sub = peers.subset(np.array([False, True, True]))
    assert sub.indptr.tolist() == [0, 1, 1] and sub.senders.tolist() == [0] and sub.values.tolist() == [4.0]


def test_polarisation_and_assortativity_measures() -> None:
    two_camps = np.repeat([1.0, 7.0], 500)
    assert bimodality(two_camps) > 0.9
    assert bimodality(np.random.default_rng(0).normal(size=20_000)) == pytest.approx(1 / 3, abs=0.02)
    x = np.array([1.0, 1.0, 7.0, 7.0])
    src, dst = np.array([0, 2]), np.array([1, 3])  # ties inside camps only
    assert assortativity(x, src, dst, directed=False) == pytest.approx(1.0)
    assert assortativity(x, np.array([0, 1]), np.array([2, 3]), directed=False) == pytest.approx(-1.0)
    # the undirected form equals the Pearson correlation over both directions of every tie
    rng = np.random.default_rng(2)
    y, s, d = rng.normal(size=50), rng.integers(0, 50, 200), rng.integers(0, 50, 200)
    both = np.corrcoef(np.concatenate([y[s], y[d]]), np.concatenate([y[d], y[s]]))[0, 1]
    assert assortativity(y, s, d, directed=False) == pytest.approx(both)
    assert assortativity(y, s, d, directed=True) == pytest.approx(np.corrcoef(y[s], y[d])[0, 1])


def _rows(run_dir: Path) -> pa.Table:
    t = ds.dataset(run_dir / "decisions", format="parquet").to_table()
    t = t.drop_columns(["shard", "latency_s"])
    return t.sort_by([("condition_id", "ascending"), ("round", "ascending"), ("agent_id", "ascending")])


def test_three_shards_equal_one_shard_row_for_row(people: Path, tmp_path: Path) -> None:
    one = run(config(people), run_id="one", runs_root=tmp_path / "runs")
    three = run(config(people, shard_size=300, max_concurrent_shards=3), run_id="three", runs_root=tmp_path / "runs")
    a, b = _rows(one.run_dir), _rows(three.run_dir)
    assert a.num_rows == 2 * 4 * 900
    assert a.drop_columns(["run_id"]).equals(b.drop_columns(["run_id"]))
    ra, rb = one.rounds().drop_columns(["run_id"]), three.rounds().drop_columns(["run_id"])
    assert ra.equals(rb)
    pooled = ra.filter(pc.equal(ra["group"], -1)).to_pandas()
    deg = pooled[pooled.condition_id == "c000"]
    hk = pooled[pooled.condition_id == "c001"]
    assert deg.outcome_variance.is_monotonic_decreasing  # DeGroot averaging shrinks the spread
    assert deg.outcome_variance.iloc[-1] < 0.2 * deg.outcome_variance.iloc[0]
    assert hk.outcome_variance.iloc[-1] > deg.outcome_variance.iloc[-1]  # bounded confidence keeps camps apart
    assert np.isnan(deg.outcome_changed_share.iloc[0]) and deg.outcome_changed_share.iloc[1] > 0.1
    assert deg.outcome_assortativity.iloc[2] > 0.1  # neighbours come to agree
    assert (pooled.n_invalid == 0).all()


def test_resume_after_a_lost_round_gives_identical_rows(people: Path, tmp_path: Path) -> None:
    cfg = config(people, shard_size=300)
    first = run(cfg, run_id="r", runs_root=tmp_path / "runs")
    before = _rows(first.run_dir)
    rounds_before = first.rounds()
    # what a kill -9 during round 3 leaves: one shard of round 3 written, round 3 and 4 unsettled
    for path in (first.run_dir / "decisions" / "c001" / "replicate-0").glob("round-[34]/shard-0000[12].parquet"):
        path.unlink()
    for path in (first.run_dir / "rounds" / "c001" / "replicate-0").glob("round-[34].parquet"):
        path.unlink()
    (first.run_dir / "rounds.parquet").unlink()
    again = run(cfg, run_id="r", runs_root=tmp_path / "runs")
    assert _rows(again.run_dir).equals(before)
    assert again.rounds().equals(rounds_before)


def test_shipped_config_loads() -> None:
    cfg = load_config(REPO / "experiments/configs/opinion_dynamics.yaml")
    assert cfg.network is not None and cfg.network.kind == "barabasi_albert"
    assert cfg.scenario.kind == "opinion"


def test_llm_config_caps_posts_and_the_bench_serves_it_with_the_cpu_backend(monkeypatch) -> None:
    """opinion_llm.yaml keeps posts short (80 characters in the answer schema, 48 sampled tokens);
    bench/opinion_llm.py swaps its vLLM level for backends/smollm2_cpu.yaml and sizes the run."""
    import importlib.util
    import types

    import yaml

    from crowdlab.experiments.config import validate_config
    from crowdlab.experiments.design import expand_design

    cfg = load_config(REPO / "experiments/configs/opinion_llm.yaml")
    levels = cfg.design.factors["backend"]
    assert [level["kind"] for level in levels] == ["vllm", "opinion_dynamics"]
    assert cfg.scenario.messages.max_chars == 80 and cfg.sampling.max_tokens == 48
    llm = next(c for c in expand_design(cfg) if c.config.backend.kind == "vllm")
    from crowdlab.experiments.scenarios import make_scenario

    schema = make_scenario(llm.config.scenario).answer_schema()
    assert schema["properties"]["message"]["maxLength"] == 80 and schema["required"] == ["message", "stance"]

    spec = importlib.util.spec_from_file_location("bench_opinion_llm", REPO / "bench/opinion_llm.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.chdir(REPO)
    cpu = yaml.safe_load((REPO / "experiments/configs/backends/smollm2_cpu.yaml").read_text())
    args = types.SimpleNamespace(config=str(bench.CONFIG), backend=str(bench.BACKEND), agents=30, rounds=2,
                                 shard_size=None, max_chars=None, max_tokens=32, set=["seed=5"], no_baseline=False)
    both = validate_config(bench.experiment(args))
    assert both.population.n == 30 and both.rounds == 2 and both.shard_size == 30 and both.seed == 5
    assert both.sampling.max_tokens == 32 and both.scenario.messages.max_chars == 80
    vllm, baseline = both.design.factors["backend"]
    assert vllm == dict(cpu, label="smollm2-135m") and baseline["kind"] == "opinion_dynamics"
    alone = validate_config(bench.experiment(types.SimpleNamespace(**{**vars(args), "no_baseline": True})))
    assert "backend" not in alone.design.factors and alone.backend.kind == "vllm"


def test_report_summary_names_the_network(people: Path, tmp_path: Path) -> None:
    from crowdlab.analysis.run_summary import run_summary

    cfg = config(people, rounds=1, design={}, network={"kind": "homophily", "columns": ["party"], "homophily": 0.9})
    result = run(cfg, run_id="s", runs_root=tmp_path / "runs")
    items = dict(run_summary(result.run_dir).itertuples(index=False))
    assert items["network"].startswith("homophily, undirected, 900 agents, ")
    coleman = float(items["network"].split("homophily (Coleman) party ")[1])
    assert coleman > 0.8  # 90 % of ties inside the party, half expected at random: about 0.9
