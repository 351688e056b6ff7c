"""A stand-in for one GPU inference engine, to judge fleet scaling without GPUs.

A real engine (vLLM on one GPU) serves a shard as one big batch whose time grows with its size:
``latency = fixed_latency_s + n / throughput``. This backend sleeps exactly that long per
``generate`` call (one call at a time per instance, as one engine works through one batch after
another) and answers at random from the request seeds, like the dummy backend. The default
throughput, 430 decisions/s, is what the AgentScope paper's P1 run implies per A100 (1M agents
in 12 minutes on 32 GPUs, about 1 output token each; see docs/reference).
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
    throughput: float = Field(430.0, gt=0, description="decisions per second of one engine")
    fixed_latency_s: float = Field(0.05, ge=0, description="per-batch cost (scheduling, prefill start)")
    output_tokens: int = Field(1, ge=1, description="tokens per answer (P1: about 1)")
    render_prompts: bool = Field(False, description="let the runner build prompts (CPU cost of a real LLM run)")

    def build(self) -> "SimulatedGPUBackend":
        return SimulatedGPUBackend(self)


class SimulatedGPUBackend:
    """Sleeps ``fixed + n / throughput`` per batch, batches one after another; random answers."""

    name = "simulated_gpu"

    def __init__(self, config: SimulatedGPUConfig) -> None:
        self.config = config
        self.needs_prompts = config.render_prompts
        self._engine = threading.Lock()  # one batch at a time, like one GPU

    def batch_seconds(self, n: int) -> float:
        return self.config.fixed_latency_s + n / self.config.throughput

    def generate(self, batch: RequestBatch) -> ResponseBatch:
        n = len(batch)
        lo, hi = float(batch.context.get("lo", 0.0)), float(batch.context.get("hi", 100.0))
        values = np.round(lo + (hi - lo) * uniforms(batch.seeds, _STREAM_VALUE), 0)
        with self._engine:
            seconds = self.batch_seconds(n) if n else 0.0
            time.sleep(seconds)
        in_tokens = (np.fromiter((sum(len(m["content"]) for m in chat) // 4 for chat in batch.messages),
                                 dtype=np.int64, count=n) if batch.messages is not None else np.zeros(n, np.int64))
        return ResponseBatch(
            texts=[f"{v:g}" for v in values.tolist()],
            input_tokens=in_tokens,
            output_tokens=np.full(n, self.config.output_tokens, np.int64),
            latency_s=np.full(n, seconds / max(n, 1)),
            errors=[None] * n,
            values=values,
            stats={"batch_seconds": seconds},
        )

    def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self.config.model_dump(mode="json")}
