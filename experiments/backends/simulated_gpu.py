"""A stand-in for GPU inference engines, to judge fleet scaling without GPUs.

A real engine (vLLM on one GPU) serves a shard as one big batch whose time grows with its size:
``latency = fixed_latency_s + n / throughput``. This backend sleeps exactly that long per
``generate`` call and answers at random from the request seeds, like the dummy backend.

* ``throughput`` is an assumption, not a measurement. The default, 430 decisions/s, is about 10x
  what the AgentScope paper measured per A100 in its P1 run (1M decisions in 12 minutes on 32
  GPUs = 43 decisions/s per GPU, two LLM calls each); it stands for a modern engine serving
  one-token answers with prefix caching, and it makes the driver's job 10x harder than the paper's.
* ``engines``: how many engines one instance models. Each engine works through one batch after
  another; ``engines`` of them serve that many batches at once. A Ray actor holding such an
  instance is a simulated node (``gpus_per_engine: engines``), so a 256-engine fleet fits in a
  few worker processes on a small machine, while the driver sees the same number of batches in
  flight as with 256 one-GPU actors.
* ``time_scale``: every sleep is divided by it, so a long fleet run finishes sooner; figures
  in modelled seconds are wall seconds x ``time_scale``. The driver's work per decision is not
  scaled, so a scaled run is harder on the driver than the modelled fleet, never easier.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import numpy as np
from pydantic import Field

from crowdlab.experiments.backends.base import RequestBatch, ResponseBatch
from crowdlab.experiments.backends.settings import BackendSettings
from crowdlab.experiments.seeding import uniforms

_STREAM_VALUE = 21


class SimulatedGPUConfig(BackendSettings):
    """Per-engine throughput and fixed per-batch cost of the simulated engine."""

    kind: Literal["simulated_gpu"] = "simulated_gpu"
    throughput: float = Field(430.0, gt=0, description="decisions per second of one engine (an assumption)")
    fixed_latency_s: float = Field(0.05, ge=0, description="per-batch cost (scheduling, prefill start)")
    output_tokens: int = Field(1, ge=1, description="tokens per answer (P1: about 1)")
    render_prompts: bool = Field(False, description="let the runner build prompts (CPU cost of a real LLM run)")
    json_answers: bool = Field(False, description="answer JSON texts the scenario parses, as an LLM engine "
                               "does (else values, no parsing)")
    engines: int = Field(1, ge=1, description="engines this instance models, each serving one batch at a time")
    time_scale: float = Field(1.0, gt=0, description="sleeps are divided by this (modelled s = wall s x time_scale)")

    @property
    def pipelined(self) -> bool:
        """One more shard may be prepared while the engines run (each engine takes one at a time)."""
        return True

    @property
    def parallel_batches(self) -> int:
        """Batches one instance serves at once (a Ray actor runs that many shards concurrently)."""
        return self.engines

    def build(self) -> "SimulatedGPUBackend":
        return SimulatedGPUBackend(self)


class SimulatedGPUBackend:
    """Sleeps ``(fixed + n / throughput) / time_scale`` per batch on one of ``engines`` engines."""

    name = "simulated_gpu"

    def __init__(self, config: SimulatedGPUConfig) -> None:
        self.config = config
        self.needs_prompts = config.render_prompts
        self._engines = threading.Semaphore(config.engines)  # each engine: one batch at a time

    def batch_seconds(self, n: int) -> float:
        """Modelled seconds of one batch of ``n`` requests on one engine."""
        return self.config.fixed_latency_s + n / self.config.throughput

    def generate(self, batch: RequestBatch) -> ResponseBatch:
        n = len(batch)
        lo, hi = float(batch.context.get("lo", 0.0)), float(batch.context.get("hi", 100.0))
        values = np.round(lo + (hi - lo) * uniforms(batch.seeds, _STREAM_VALUE), 0)
        seconds = self.batch_seconds(n) if n else 0.0
        waited = time.perf_counter()
        with self._engines:
            wait = time.perf_counter() - waited
            time.sleep(seconds / self.config.time_scale)
        in_tokens = (np.fromiter((sum(len(m["content"]) for m in chat) // 4 for chat in batch.messages),
                                 dtype=np.int64, count=n) if batch.messages is not None else np.zeros(n, np.int64))
        if self.config.json_answers:  # what vLLM returns under the answer schema: text only, parsed later
            key = _answer_key(batch.answer_schema)
            texts = [f'{{"{key}": {v:g}}}' for v in values.tolist()]
        else:
            texts = [f"{v:g}" for v in values.tolist()]
        return ResponseBatch(
            texts=texts,
            input_tokens=in_tokens,
            output_tokens=np.full(n, self.config.output_tokens, np.int64),
            latency_s=np.full(n, seconds / max(n, 1)),
            errors=[None] * n,
            values=None if self.config.json_answers else values,
            stats={"batch_seconds": seconds, "engine_wait_s": wait},
        )

    def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self.config.model_dump(mode="json")}


def _answer_key(schema: dict[str, Any] | None) -> str:
    """The answer field to fill: the schema's last property (the number after any reasoning)."""
    props = list((schema or {}).get("properties") or {})
    return props[-1] if props else "guess"
