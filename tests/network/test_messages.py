"""Messages: posts stored once in messages/, read next round through the CSR index with at most
k per reader (an agent with 50,000 in-neighbours included), a 3-shard run equal to a 1-shard
run row for row, and a kill -9 mid-round resuming to identical rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from crowdlab.experiments import run
from crowdlab.experiments.config import validate_config
from crowdlab.experiments.errors import ConfigError
from crowdlab.experiments.network.messages import extract
from crowdlab.experiments.run_context import load_context
from crowdlab.experiments.shard_step import shard_inputs
from crowdlab.parquet_io import write_table_atomic


@pytest.fixture
def people(tmp_path: Path) -> Path:
    return write_table_atomic(pa.table({"agent_id": np.arange(10, 610, dtype=np.int64)}), tmp_path / "people.parquet")


def config(people: Path, select: str = "recent", **extra: Any) -> dict[str, Any]:
    return {"experiment": "posts", "population": {"personas": str(people)},
            "network": {"kind": "barabasi_albert", "m": 4},
            "scenario": {"kind": "opinion", "messages": {"k": 3, "select": select, "window": 2, "max_chars": 40}},
            "backend": {"kind": "opinion_dynamics", "model": "bounded_confidence", "noise_sd": 0.2},
            "rounds": 3, "shard_size": 600, "seed": 9, **extra}


def _table(run_dir: Path, name: str, drop: list[str]) -> pa.Table:
    t = ds.dataset(run_dir / name, format="parquet").to_table().drop_columns(drop)
    keys = [("round", "ascending"), ("agent_id" if "agent_id" in t.column_names else "sender", "ascending")]
    return t.sort_by(keys)


def test_extract_caps_and_unescapes() -> None:
    texts = pa.array(['{"message": "say \\"no\\" now", "stance": 2}', '{"stance": 3}', None, '{"message": "' + "x" * 50 + '"}'])
    assert extract(texts, 10).to_pylist() == ['say "no" n', None, None, "x" * 10]


def test_extract_finds_the_post_in_any_key_order() -> None:
    """The first-key fast path and the search elsewhere merge back in row order (chunked input,
    multi-byte characters capped by characters, a post not first, no post, nothing to cut)."""
    texts = pa.chunked_array([['{"message": "first", "stance": 1}', '{"stance": 2, "message" : "second"}'],
                              [' { "message":"éééé"}', '{"stance": 4}', None,
                               '{"reasoning": "x", "message": "fifth \\"q\\""}']])
    assert extract(texts, 280).to_pylist() == ["first", "second", "éééé", None, None, 'fifth "q"']
    assert extract(texts, 3).to_pylist() == ["fir", "sec", "ééé", None, None, "fif"]


def test_k_must_be_positive(people: Path) -> None:
    cfg = config(people)
    cfg["scenario"]["messages"]["k"] = 0
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert err.value.field == "scenario.messages.k"


@pytest.mark.parametrize("select", ["recent", "sample"])
def test_three_shards_equal_one_shard_with_messages(people: Path, tmp_path: Path, select: str) -> None:
    one = run(config(people, select), run_id="one", runs_root=tmp_path / "runs")
    three = run(config(people, select, shard_size=200, max_concurrent_shards=3), run_id="three",
                runs_root=tmp_path / "runs")
    drop = ["run_id", "shard", "latency_s"]
    assert _table(one.run_dir, "decisions", drop).equals(_table(three.run_dir, "decisions", drop))
    ma, mb = _table(one.run_dir, "messages", ["run_id"]), _table(three.run_dir, "messages", ["run_id"])
    assert ma.equals(mb) and ma.num_rows == 3 * 600  # every agent posts once a round, stored once
    assert max(len(t) for t in ma["text"].to_pylist()) <= 40
    # what the readers see is the same whatever the shard layout
    seen = []
    for r in (one, three):
        ctx = load_context(r.run_dir)
        boxes = [shard_inputs(ctx, "c000", 0, 3, s).history.peers.messages for s in range(ctx.n_shards)]
        seen.append([line for b in boxes for i in range(len(b.more)) for line in b.lines(i)])
    assert seen[0] == seen[1] and any("more posts not shown" in line for line in seen[0])
    # texts are gathered lazily, but a pickled inbox (a remote worker's) carries them
    import pickle

    fresh = shard_inputs(load_context(three.run_dir), "c000", 0, 3, 1).history.peers.messages
    assert callable(fresh.source)
    sent = pickle.loads(pickle.dumps(fresh))
    assert isinstance(sent.source, pa.Array)
    assert [line for i in range(len(sent.more)) for line in sent.lines(i)] == \
        [line for i in range(len(fresh.more)) for line in fresh.lines(i)] != []


def test_an_agent_with_50000_in_neighbours_reads_at_most_k(tmp_path: Path) -> None:
    n, k = 50_001, 4
    ids = np.arange(n, dtype=np.int64)
    people = write_table_atomic(pa.table({"agent_id": ids}), tmp_path / "people.parquet")
    # a directed star: every agent is heard by agent 0; agent 1 is heard by agent 2
    edges = write_table_atomic(pa.table({"source": np.concatenate([ids[1:], [1]]),
                                         "target": np.concatenate([np.zeros(n - 1, np.int64), [2]])}),
                               tmp_path / "star.parquet")
    cfg = {"experiment": "star", "population": {"personas": str(people)},
           "network": {"kind": "edge_list", "path": str(edges), "directed": True},
           "scenario": {"kind": "opinion", "messages": {"k": k, "select": "sample"}},
           "backend": {"kind": "opinion_dynamics"}, "rounds": 2, "shard_size": 20_000, "seed": 1}
    result = run(cfg, run_id="s", runs_root=tmp_path / "runs")
    ctx = load_context(result.run_dir)
    assert shard_inputs(ctx, "c000", 0, 1, 0).history.peers.messages.indptr[-1] == 0  # round 1: nothing yet
    inputs = shard_inputs(ctx, "c000", 0, 2, 0)  # what the agents read in round 2
    box = inputs.history.peers.messages
    assert int(box.indptr[1]) == k and int(box.more[0]) == n - 1 - k
    prompt = ctx.scenario("c000").render(ids[:3], np.zeros(3, np.int32), inputs.personas.slice(0, 3),
                                         _first(inputs.history, 3), np.array([n]))[0][1]["content"]
    assert prompt.count("\n- agent ") == k
    assert f"({k} of {n - 1})" in prompt and f"({n - 1 - k} more posts not shown)" in prompt
    assert len(prompt) < 2_000


def _first(history, n):  # type: ignore[no-untyped-def]
    from crowdlab.experiments.shard_step import _subset

    mask = np.zeros(history.own_values.shape[0], bool)
    mask[:n] = True
    return _subset(history, mask)


KILL = """
import os, signal, sys
from crowdlab.experiments import run, shard_step
from crowdlab.experiments.network import messages
import json
cfg, runs, where = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
if where == "shard":  # after the second shard file of round 2: a round half written
    write = shard_step.write_shard
    def write_shard(ctx, output, started=None):
        out = write(ctx, output, started)
        if output.round == 2 and output.shard == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    shard_step.write_shard = write_shard
else:  # after round 2's posts, before its outcome: a settlement cut short
    write_round = messages.write_round
    def killer(ctx, cid, rep, rnd, *args):
        n = write_round(ctx, cid, rep, rnd, *args)
        if rnd == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return n
    messages.write_round = killer
    import crowdlab.experiments.network.opinion as opinion
    opinion.write_round = killer
run(cfg, run_id="k", runs_root=runs)
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["shard", "settle"])
def test_kill_9_mid_round_resumes_to_identical_rows(people: Path, tmp_path: Path, where: str) -> None:
    import json

    cfg = config(people, shard_size=150)
    whole = run(cfg, run_id="whole", runs_root=tmp_path / "a")
    killed = subprocess.run([sys.executable, "-c", KILL, json.dumps(cfg), str(tmp_path / "b"), where],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    resumed = run(cfg, run_id="k", runs_root=tmp_path / "b")
    drop = ["run_id", "latency_s"]
    assert _table(whole.run_dir, "decisions", drop).equals(_table(resumed.run_dir, "decisions", drop))
    assert _table(whole.run_dir, "messages", ["run_id"]).equals(_table(resumed.run_dir, "messages", ["run_id"]))
    assert whole.rounds().drop_columns(["run_id"]).equals(resumed.rounds().drop_columns(["run_id"]))
