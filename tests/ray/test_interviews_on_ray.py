"""Interviews of a run dispatched on Ray are answered by the engine actors (each agent by the model
that played it), not by a second backend on the driver, and equal a local run's row for row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import yaml

from crowdlab.experiments import run
from crowdlab.experiments import run_context
from crowdlab.experiments.interviews import interview_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CONFIG = Path(__file__).parents[2] / "experiments" / "configs" / "public_goods_interview.yaml"
RAY = {"kind": "ray", "num_cpus_per_engine": 0, "engines_per_model": 2}


def _sim(tokens: int) -> dict[str, Any]:
    """A prompt-reading stand-in that answers JSON (contributions play, interviews get numbers)."""
    return {"kind": "simulated_gpu", "render_prompts": True, "json_answers": True, "fixed_latency_s": 0,
            "throughput": 1e9, "output_tokens": tokens}


def config(personas: Path) -> dict[str, Any]:
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg.update({"population": {"personas": str(personas)}, "rounds": 2, "shard_size": 200, "seed": 5,
                "backend": None,
                "models": [{"label": "small", "backend": _sim(2), "share": 1},
                           {"label": "large", "backend": _sim(3), "share": 2}]})
    cfg["scenario"]["prompts"]["user"] = "Your education: {{ persona.education }}."
    cfg["scenario"]["interview"] = {"after_round": "last", "sample": {"share": 0.5}, "questions": [
        {"name": "why", "prompt": "Round {{ round }} is over. You gave {{ last.own.contribution }} last. Why?",
         "fields": {"explanation": {"type": "text", "max_chars": 200, "required": False},
                    "confidence": {"type": "number", "low": 0, "high": 100}}}]}
    return cfg


def rows(run_dir: Path, table: str = "interviews") -> pa.Table:
    t = ds.dataset(run_dir / table, format="parquet").to_table()
    t = t.drop_columns([c for c in ("run_id",) if c in t.column_names])
    keys = [k for k in ("condition_id", "replicate", "agent_id", "prompt_hash", "message_hash")
            if k in t.column_names]
    return t.sort_by([(k, "ascending") for k in keys])


def test_interviews_run_on_the_engine_actors_and_equal_a_local_run(ray_cluster, personas_path: Path,
                                                                     tmp_path: Path) -> None:
    cfg = config(personas_path)
    run_context.close_backends()  # this process is the driver: no backend of its own from here on
    fleet = run(dict(cfg, dispatch=RAY), run_id="fleet", runs_root=tmp_path)
    assert run_context._backends == {}  # interviews (and decisions) were answered in the actors
    record = json.loads((fleet.run_dir / "manifest.json").read_text())["dispatch"]
    # 3 shards, each with sampled agents of both models: one item per (shard, model pool)
    assert record["interview_items_computed"] == 3 * 2 and record["actor_deaths"] == 0

    local = run(cfg, run_id="local", runs_root=tmp_path)
    on_ray = rows(fleet.run_dir)
    assert 200 < on_ray.num_rows < 400  # the 50 % sample of 600
    assert set(on_ray["model"].to_pylist()) == {"small", "large"}
    assert all(on_ray["valid"].to_pylist())
    assert on_ray.equals(rows(local.run_dir))
    # each agent was interviewed by the model that played it
    played = dict(zip(*ds.dataset(fleet.run_dir / "decisions", format="parquet").to_table(
        columns=["agent_id", "model"]).to_pydict().values()))
    assert all(played[a] == m for a, m in zip(on_ray["agent_id"].to_pylist(), on_ray["model"].to_pylist()))
    for table in ("interview_prompts", "interview_prompt_messages"):
        assert rows(fleet.run_dir, table).equals(rows(local.run_dir, table))
    assert json.loads((fleet.run_dir / "manifest.json").read_text())["counts"]["interviews"] == on_ray.num_rows

    # a lost interview file is redone on the engines alone when the run resumes on Ray
    lost = interview_path(fleet.run_dir, "c000", 0, 1)
    kept = interview_path(fleet.run_dir, "c000", 0, 0).stat().st_mtime_ns
    lost.unlink()
    run_context.close_backends()
    again = run(dict(cfg, dispatch=RAY), run_id="fleet", runs_root=tmp_path)
    assert run_context._backends == {}
    assert json.loads((again.run_dir / "manifest.json").read_text())["dispatch"]["interview_items_computed"] == 2
    assert interview_path(fleet.run_dir, "c000", 0, 0).stat().st_mtime_ns == kept
    assert rows(again.run_dir).equals(on_ray)


def test_an_engine_killed_before_the_interviews_loses_none(ray_cluster, personas_path: Path, tmp_path: Path) -> None:
    """The engine dies after the last decision shard: its interview items go to the other engine."""
    import ray

    state: dict[str, Any] = {"killed": None}

    def kill_one_at_the_end(done: int, total: int) -> None:  # the last tick comes before the interviews
        if state["killed"] is None and done >= total:
            names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                           if a["name"].startswith("killed/small/"))
            state["killed"] = names[0]
            ray.kill(ray.get_actor(names[0], namespace="crowdlab"), no_restart=True)

    cfg = config(personas_path)
    killed = run(dict(cfg, dispatch=dict(RAY, max_restarts=0)), run_id="killed", runs_root=tmp_path,
                 progress=kill_one_at_the_end)
    calm = run(cfg, run_id="calm", runs_root=tmp_path)
    assert state["killed"] is not None
    record = json.loads((killed.run_dir / "manifest.json").read_text())["dispatch"]
    assert record["actor_deaths"] == 1 and record["engines_lost"] == 1 and record["shards_reassigned"] >= 1
    assert rows(killed.run_dir).num_rows == rows(calm.run_dir).num_rows > 0
    assert rows(killed.run_dir).equals(rows(calm.run_dir))
