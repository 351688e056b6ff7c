"""The real vLLM engine (tiny random model, CPU) inside a Ray engine actor: a short run."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from crowdlab.experiments import run
from crowdlab.experiments.backends.tiny_model import build_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(400)]


def test_tiny_vllm_model_plays_two_rounds_in_an_engine_actor(ray_cluster, base_config: dict, tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny-chat")
    backend = {"kind": "vllm", "model": str(model), "gpu_memory_utilization": 0.1, "enforce_eager": True,
               "max_model_len": 1024, "dtype": "float32"}
    cfg = dict(base_config, backend=backend, rounds=2, shard_size=4,
               sampling={"temperature": 1.0, "max_tokens": 48},
               dispatch={"kind": "ray", "engines_per_model": 1, "num_cpus_per_engine": 0})
    small = tmp_path / "eight.parquet"  # few agents: 2 shards of 4, 2 rounds
    pq.write_table(pq.read_table(cfg["population"]["personas"]).slice(0, 8), small)
    cfg["population"] = {"personas": str(small)}

    result = run(cfg, run_id="vllm", runs_root=tmp_path / "runs")
    decisions = result.decisions()
    assert decisions.num_rows == 16 and result.n_invalid == 0
    assert all(t.startswith("{") for t in decisions["text"].to_pylist())
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    record = manifest["dispatch"]
    assert record["pools"][0]["engines"] == 1 and record["items_computed"] == 4
    stats = result.throughput[str(model)]
    assert stats["decisions"] == 16 and stats["engines"] == 1 and stats["failures"] == 0
    assert stats["input_tokens"] > 0 and stats["output_tokens"] > 0
    assert 0.0 <= stats["prefix_cache_hit_rate"] <= 1.0  # the engine reports its cache hits
