"""A latency-simulating stand-in for an LLM: each call sleeps, then answers at random.

It measures the framework's own scaling (the AgentScope paper's 1M dummy agents, each sleeping
1 s). Calls are coroutines on one background asyncio loop per backend instance, bounded by a
pool of tokens, so concurrent shards (runner threads) share one concurrency limit the way they
would share one inference server. The pool is an ``asyncio.Queue`` rather than
``asyncio.Semaphore``: Python 3.11's semaphore rescans already-woken waiters on every release,
which is quadratic when a hundred thousand calls finish at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Literal

import numpy as np
from pydantic import Field

from crowdlab.experiments.backends.base import RequestBatch, ResponseBatch
from crowdlab.experiments.backends.settings import BackendSettings
from crowdlab.experiments.seeding import uniforms

_STREAM_VALUE, _STREAM_GARBAGE = 11, 12


class DummyConfig(BackendSettings):
    """Simulated latency per call, a concurrency limit, and random JSON answers."""

    kind: Literal["dummy"] = "dummy"
    latency_s: float = Field(1.0, ge=0, description="seconds each call sleeps")
    concurrency: int = Field(100_000, ge=1, description="calls in flight at once, all shards")
    render_prompts: bool = Field(True, description="let the runner build prompts (as for an LLM)")
    garbage_rate: float = Field(0.0, ge=0, le=1, description="share of answers that are not numbers")
    out_of_range_rate: float = Field(0.0, ge=0, le=1, description="share of answers above hi")

    def build(self) -> "DummyBackend":
        return DummyBackend(self)


class DummyBackend:
    """Answers ``{"guess": x}`` with x uniform on [lo, hi] from the request seed."""

    name = "dummy"

    def __init__(self, config: DummyConfig) -> None:
        self.config = config
        self.needs_prompts = config.render_prompts
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dummy-backend-loop", daemon=True)
        self._thread.start()
        self._tokens = asyncio.run_coroutine_threadsafe(self._make_tokens(), self._loop).result()

    async def _make_tokens(self) -> asyncio.Queue[None]:
        tokens: asyncio.Queue[None] = asyncio.Queue()
        for _ in range(self.config.concurrency):
            tokens.put_nowait(None)
        return tokens

    async def _call(self) -> float:
        await self._tokens.get()
        try:
            start = self._loop.time()
            await asyncio.sleep(self.config.latency_s)
            return self._loop.time() - start
        finally:
            self._tokens.put_nowait(None)

    async def _calls(self, n: int) -> list[float]:
        return await asyncio.gather(*(self._call() for _ in range(n)))

    def _answers(self, batch: RequestBatch) -> list[str]:
        ctx = batch.context
        lo, hi = float(ctx.get("lo", 0.0)), float(ctx.get("hi", 100.0))
        values = np.round(lo + (hi - lo) * uniforms(batch.seeds, _STREAM_VALUE), 2)
        u = uniforms(batch.seeds, _STREAM_GARBAGE)
        values = np.where(u < self.config.out_of_range_rate, hi + 1 + values, values)
        garbage = u > 1 - self.config.garbage_rate
        return ["I would rather not say." if g else f'{{"guess": {v:g}}}'
                for v, g in zip(values.tolist(), garbage.tolist())]

    def generate(self, batch: RequestBatch) -> ResponseBatch:
        n = len(batch)
        start = time.perf_counter()
        latencies = asyncio.run_coroutine_threadsafe(self._calls(n), self._loop).result()
        texts = self._answers(batch)
        out_tokens = np.fromiter((len(t) // 4 + 1 for t in texts), dtype=np.int64, count=n)
        in_tokens = (np.fromiter((sum(len(m["content"]) for m in chat) // 4 for chat in batch.messages),
                                 dtype=np.int64, count=n) if batch.messages is not None else np.zeros(n, np.int64))
        return ResponseBatch(
            texts=texts, input_tokens=in_tokens, output_tokens=out_tokens,
            latency_s=np.asarray(latencies, dtype=np.float64), errors=[None] * n,
            stats={"batch_wall_s": time.perf_counter() - start},
        )

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self.config.model_dump(mode="json")}
