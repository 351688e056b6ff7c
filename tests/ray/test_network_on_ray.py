"""Network scenarios on a real local Ray cluster: an opinion experiment with posts and an
intervention, dispatched as 3 shards a round to Ray engines, equals a local 1-shard run row for
row (decisions, prompts, messages and round outcomes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from crowdlab.experiments import run
from crowdlab.parquet_io import write_table_atomic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MESSAGE = "Raise it: nobody should work full time and stay poor."


def _config(people: Path, **extra: Any) -> dict[str, Any]:
    treatment = {"round": 2, "seeders": "top_degree", "share": 0.05, "message": MESSAGE, "stance": 7}
    return {"experiment": "posts_on_ray", "population": {"personas": str(people)},
            "network": {"kind": "barabasi_albert", "m": 4},
            "scenario": {"kind": "opinion", "initial": {"mean": 3, "sd": 1},
                         "messages": {"k": 3, "select": "sample", "window": 2, "max_chars": 60}},
            "backend": {"kind": "opinion_dynamics", "model": "bounded_confidence", "noise_sd": 0.2,
                        "render_prompts": True},
            "design": {"factors": {"scenario.intervention": [None, treatment]}},
            "rounds": 3, "shard_size": 600, "seed": 13, **extra}


def _table(run_dir: Path, name: str, drop: list[str]) -> pa.Table:
    t = ds.dataset(run_dir / name, format="parquet").to_table()
    t = t.drop_columns([c for c in drop if c in t.column_names])
    who = "agent_id" if "agent_id" in t.column_names else "sender"
    return t.sort_by([("condition_id", "ascending"), ("replicate", "ascending"), ("round", "ascending"),
                      (who, "ascending")])


def test_opinion_with_messages_on_ray_equals_one_local_shard(ray_cluster, tmp_path: Path) -> None:
    people = write_table_atomic(pa.table({"agent_id": np.arange(5, 605, dtype=np.int64)}), tmp_path / "people.parquet")
    ray = run(_config(people, shard_size=200, dispatch={"kind": "ray", "num_cpus_per_engine": 0, "engines_per_model": 2}),
              run_id="ray", runs_root=tmp_path / "runs")
    local = run(_config(people), run_id="local", runs_root=tmp_path / "runs")
    manifest = json.loads((ray.run_dir / "manifest.json").read_text())
    record = manifest["dispatch"]
    assert manifest["n_shards"] == 3 and record["kind"] == "ray" and record["pools"][0]["engines"] == 2
    assert record["actor_deaths"] == 0
    assert record["items_computed"] == 3 * 3 * 2  # 3 shards x 3 rounds x 2 conditions, all on Ray
    assert json.loads((local.run_dir / "manifest.json").read_text())["n_shards"] == 1
    drop = ["run_id", "shard", "latency_s"]
    decisions = _table(ray.run_dir, "decisions", drop)
    assert decisions.num_rows == 600 * 3 * 2
    assert decisions.equals(_table(local.run_dir, "decisions", drop))
    # the prompts were built on the engines from the posts shipped with each shard: same texts
    assert decisions["prompt_hash"].null_count == 0
    texts = [set(ds.dataset(r.run_dir / "prompt_messages", format="parquet").to_table()["content"].to_pylist())
             for r in (ray, local)]
    assert texts[0] == texts[1] and any(MESSAGE in t and "more posts not shown" in t for t in texts[0])
    posts = _table(ray.run_dir, "messages", ["run_id"])
    assert posts.num_rows == 600 * 3 * 2  # every agent posts once a round, stored once
    assert posts.equals(_table(local.run_dir, "messages", ["run_id"]))
    injected = posts.filter(pc.equal(posts["text"], MESSAGE))
    assert injected.num_rows == 30 and set(injected["condition_id"].to_pylist()) == {"c001"}
    assert ray.rounds().drop_columns(["run_id"]).equals(local.rounds().drop_columns(["run_id"]))
    exposed = ray.rounds().filter(pc.and_(pc.equal(ray.rounds()["condition_id"], "c001"),
                                          pc.equal(ray.rounds()["group"], -1)))["outcome_exposed_share"]
    assert exposed.to_pylist()[2] > 0  # round 3 readers were shown the injected post
