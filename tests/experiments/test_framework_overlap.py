"""Overlapping the framework's work with the engine (bench/framework_cost.py).

* the zero-latency engine of the bench answers JSON the scenario must parse, as vLLM does;
* ``LLM.chat`` runs one call at a time per engine even when shards come from several threads,
  and the time a shard queued for the engine is not counted as engine time;
* a local run on a pipelined engine renders one shard while the engine runs another;
* a Ray pool of pipelined engines gets one more actor thread than it serves batches at once.

No wall-clock durations are asserted: only which events happened during which others.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.experiments import prepare_run, run
from crowdlab.experiments.backends import RequestBatch, make_backend
from crowdlab.experiments.backends.simulated_gpu import SimulatedGPUBackend
from crowdlab.experiments.backends.vllm_offline import VLLMBackend, VLLMBackendConfig
from crowdlab.experiments.dispatch.ray_executor import _pools
from crowdlab.experiments.run_context import load_context
from crowdlab.experiments.scenarios.beauty_contest import BeautyContest
from crowdlab.parquet_io import write_table_atomic


def test_json_answers_are_parsed_by_the_scenario() -> None:
    engine = make_backend({"kind": "simulated_gpu", "throughput": 1e9, "fixed_latency_s": 0.0,
                           "render_prompts": True, "json_answers": True})
    schema = {"type": "object", "properties": {"reasoning": {"type": "string"}, "guess": {"type": "number"}}}
    batch = RequestBatch(agent_ids=np.arange(50), seeds=np.arange(50), answer_schema=schema,
                         context={"lo": 0.0, "hi": 100.0}, messages=[[{"role": "user", "content": "x"}]] * 50)
    out = engine.generate(batch)
    assert out.values is None  # the runner parses, as for an LLM
    assert all(t.startswith('{"guess": ') for t in out.texts)
    plain = make_backend({"kind": "simulated_gpu", "throughput": 1e9, "fixed_latency_s": 0.0}).generate(batch)
    assert np.array_equal(BeautyContest.parse(None, out.texts), plain.values)  # type: ignore[arg-type]


class SlowChat:
    """An engine whose ``chat`` takes a while and records how many calls were inside at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self._count = threading.Lock()

    def chat(self, messages: list[Any], params: list[Any], **_: Any) -> list[Any]:
        with self._count:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.1)
        with self._count:
            self.inside -= 1
        return [SimpleNamespace(prompt_token_ids=[1, 2], num_cached_tokens=0,
                                outputs=[SimpleNamespace(text='{"guess": 1}', token_ids=[1], finish_reason="stop")])
                for _ in messages]


def test_vllm_chat_calls_on_one_engine_are_serialised() -> None:
    backend = VLLMBackend.__new__(VLLMBackend)  # the real generate(), on an engine that needs no model
    backend.config = VLLMBackendConfig(model="none", structured_output="none")
    backend._chat_template = None
    backend._engine = engine = SlowChat()
    batch = RequestBatch(agent_ids=np.arange(3), seeds=np.arange(3), messages=[[{"role": "user", "content": "x"}]] * 3)
    outs: list[Any] = []
    threads = [threading.Thread(target=lambda: outs.append(backend.generate(batch))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine.most == 1
    waits = sorted(o.stats["engine_wait_s"] for o in outs)
    assert waits[-1] > waits[0]  # the last one queued behind the others: reported, not engine time


def test_local_run_renders_the_next_shard_while_the_engine_runs(tmp_path: Path) -> None:
    personas = write_table_atomic(pa.table({"agent_id": np.arange(400, dtype=np.int64)}), tmp_path / "p.parquet")
    config = {"experiment": "overlap", "population": {"personas": str(personas)},
              "scenario": {"kind": "beauty_contest", "variant": "P1"}, "rounds": 1, "shard_size": 100, "seed": 1,
              "backend": {"kind": "simulated_gpu", "throughput": 1000, "fixed_latency_s": 0.05,
                          "render_prompts": True, "json_answers": True}}
    renders: list[float] = []
    busy: list[tuple[float, float]] = []
    render, generate = BeautyContest.render, SimulatedGPUBackend.generate

    def rendering(self, *args: Any) -> Any:  # type: ignore[no-untyped-def]
        renders.append(time.perf_counter())
        return render(self, *args)

    def generating(self, batch: RequestBatch) -> Any:  # type: ignore[no-untyped-def]
        out = generate(self, batch)
        end = time.perf_counter()
        busy.append((end - out.stats["batch_seconds"], end))  # while it slept (the engine ran)
        return out

    BeautyContest.render, SimulatedGPUBackend.generate = rendering, generating  # type: ignore[method-assign]
    try:
        result = run(config, run_id="r", runs_root=tmp_path / "runs")
    finally:
        BeautyContest.render, SimulatedGPUBackend.generate = render, generate  # type: ignore[method-assign]
    decisions = result.decisions(columns=["valid"])
    assert decisions.num_rows == 400 and pc.all(decisions["valid"]).as_py()  # JSON answers parsed
    assert any(a < t < b for t in renders for a, b in busy)  # a shard rendered during an engine call
    # engine time excludes queueing: the per-engine busy time cannot exceed the run's span
    (stats,) = result.throughput.values()
    assert stats["engine_busy_s"] <= result.wall_s


def test_ray_actor_of_a_pipelined_engine_takes_one_more_shard(tmp_path: Path) -> None:
    personas = write_table_atomic(pa.table({"agent_id": np.arange(10, dtype=np.int64)}), tmp_path / "p.parquet")
    base = {"experiment": "pools", "population": {"personas": str(personas)},
            "scenario": {"kind": "beauty_contest"}, "rounds": 1, "shard_size": 5, "seed": 1}  # pools: no cluster
    sim = prepare_run(dict(base, backend={"kind": "simulated_gpu", "engines": 3}), run_id="s",
                      runs_root=tmp_path / "runs")
    dummy = prepare_run(dict(base, backend={"kind": "dummy", "latency_s": 0}), run_id="d", runs_root=tmp_path / "runs")
    (pool,), _ = _pools(load_context(sim.run_dir))
    assert (pool.parallel, pool.pipelined) == (3, True)
    (pool,), _ = _pools(load_context(dummy.run_dir))
    assert pool.pipelined is False
