"""A latency-simulating stand-in for an LLM: each call sleeps, then answers at random.

It measures the framework's own scaling (the AgentScope paper's 1M dummy agents, each sleeping
1 s). Calls are timers on one background asyncio loop per backend instance, bounded by a
concurrency limit shared by all shards (runner threads), the way they would share one inference
server. Not ``asyncio.Semaphore`` + one task per call: Python 3.11's semaphore rescans woken
waiters on every release (quadratic when 100k calls finish at once), and a task per call costs
about 20 us, a third of the time budget of the paper's 1M-call workload on two cores.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from typing import Any, Literal

import numpy as np
from pydantic import Field

from crowdlab.experiments.backends.base import RequestBatch, ResponseBatch
from crowdlab.experiments.backends.settings import BackendSettings
from crowdlab.experiments.seeding import uniforms

_STREAM_VALUE, _STREAM_GARBAGE, _STREAM_FAILURE = 11, 12, 13


class DummyConfig(BackendSettings):
    """Simulated latency per call, a concurrency limit, and random JSON answers."""

    kind: Literal["dummy"] = "dummy"
    latency_s: float = Field(1.0, ge=0, description="seconds each call sleeps")
    concurrency: int = Field(100_000, ge=1, description="calls in flight at once, all shards")
    render_prompts: bool = Field(True, description="let the runner build prompts (as for an LLM)")
    garbage_rate: float = Field(0.0, ge=0, le=1, description="share of answers that are not numbers")
    out_of_range_rate: float = Field(0.0, ge=0, le=1, description="share of answers above hi")
    failure_rate: float = Field(0.0, ge=0, le=1, description="share of calls that fail (a backend error)")

    def build(self) -> "DummyBackend":
        return DummyBackend(self)


class _Batch:
    """Book-keeping of one ``generate`` call while its simulated calls are in flight."""

    __slots__ = ("left", "latency", "submitted", "done")

    def __init__(self, n: int, submitted: float) -> None:
        self.left = n
        self.latency = np.zeros(n)
        self.submitted = submitted
        self.done: concurrent.futures.Future[np.ndarray] = concurrent.futures.Future()


class DummyBackend:
    """Answers ``{"guess": x}`` with x uniform on [lo, hi] from the request seed."""

    name = "dummy"

    def __init__(self, config: DummyConfig) -> None:
        self.config = config
        self.needs_prompts = config.render_prompts
        self._free = config.concurrency
        self._waiting: collections.deque[tuple[_Batch, int]] = collections.deque()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dummy-backend-loop", daemon=True)
        self._thread.start()

    # Everything below runs on the loop thread: each call is one timer on the event loop, and a
    # call waits in a FIFO while ``concurrency`` calls are in flight (what a semaphore does, at
    # a few microseconds per call instead of an asyncio task's twenty).
    def _start(self, batch: _Batch, i: int) -> None:
        self._loop.call_later(self.config.latency_s, self._finish, batch, i)

    def _finish(self, batch: _Batch, i: int) -> None:
        batch.latency[i] = self._loop.time() - batch.submitted
        batch.left -= 1
        if batch.left == 0:
            batch.done.set_result(batch.latency)
        if self._waiting:
            self._start(*self._waiting.popleft())
        else:
            self._free += 1

    def _submit(self, batch: _Batch, n: int) -> None:
        batch.submitted = self._loop.time()
        now = min(self._free, n)
        self._free -= now
        for i in range(now):
            self._start(batch, i)
        self._waiting.extend((batch, i) for i in range(now, n))
        if n == 0:
            batch.done.set_result(batch.latency)

    def _calls(self, n: int) -> np.ndarray:
        batch = _Batch(n, 0.0)
        self._loop.call_soon_threadsafe(self._submit, batch, n)
        return batch.done.result()

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
        latencies = self._calls(n)
        texts = self._answers(batch)
        out_tokens = np.fromiter((len(t) // 4 + 1 for t in texts), dtype=np.int64, count=n)
        in_tokens = (np.fromiter((sum(len(m["content"]) for m in chat) // 4 for chat in batch.messages),
                                 dtype=np.int64, count=n) if batch.messages is not None else np.zeros(n, np.int64))
        failed = uniforms(batch.seeds, _STREAM_FAILURE) < self.config.failure_rate
        errors = ["dummy: simulated backend failure" if f else None for f in failed.tolist()]
        texts = ["" if f else t for t, f in zip(texts, failed.tolist())]
        return ResponseBatch(
            texts=texts, input_tokens=in_tokens, output_tokens=out_tokens,
            latency_s=latencies, errors=errors,
            stats={"batch_wall_s": time.perf_counter() - start},
        )

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self.config.model_dump(mode="json")}
