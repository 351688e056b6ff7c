"""The one interface every backend implements: a batch of requests in, a batch of responses out.

Batches are columnar (numpy arrays and lists, one entry per agent) so that per-agent work stays
vectorised on the million-agent paths. LLM backends read ``RequestBatch.messages``; non-LLM
baselines (behavioural) read ``personas`` and ``context`` instead and set ``needs_prompts`` to
False so the runner never renders prompts for them.

A failed call is a response row with ``error`` set, never a missing row: ``ResponseBatch`` always
has exactly one entry per request, in request order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class SamplingSettings:
    """Decoding settings shared by the requests of one batch."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256


@dataclass
class RequestBatch:
    """One shard's worth of agent decisions for one round.

    ``messages[i]`` is the chat for agent ``agent_ids[i]`` with the shared part first (system
    prompt, rules, last round's public outcome) and the agent-specific part last, so prefix
    caching in vLLM hits. ``seeds[i]`` is derived from (run seed, condition, replicate, round,
    agent) so any single decision can be reproduced alone.
    """

    agent_ids: np.ndarray  # int64, shape (n,)
    seeds: np.ndarray  # int64, shape (n,), non-negative, < 2**63
    messages: list[list[Message]] | None = None  # None when the backend does not need prompts
    answer_schema: dict[str, Any] | None = None  # JSON schema for structured output
    answer_regex: str | None = None  # alternative to the schema, for engines that prefer regex
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    personas: pa.Table | None = None  # the agents' persona rows, same order as agent_ids
    context: dict[str, Any] = field(default_factory=dict)  # scenario name, params, public history

    def __len__(self) -> int:
        return int(self.agent_ids.shape[0])


@dataclass
class ResponseBatch:
    """Columnar responses, one entry per request and in request order.

    ``values`` is filled by backends that produce the decision directly (behavioural baseline,
    dummy); LLM backends leave it ``None`` and the scenario parses ``texts``. ``truncated`` marks
    answers the engine cut off at ``max_tokens`` (finish reason ``length``); ``None`` when the
    backend cannot tell or never truncates.
    """

    texts: list[str]
    input_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64
    latency_s: np.ndarray  # float64, per request (batch latency shared out where per-request is unknown)
    errors: list[str | None]
    values: np.ndarray | None = None  # float64, NaN where no value
    stats: dict[str, float] = field(default_factory=dict)  # engine counters, e.g. prefix-cache hits
    truncated: np.ndarray | None = None  # bool, shape (n,): stopped by max_tokens

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def failed(cls, n: int, error: str) -> "ResponseBatch":
        """A batch whose every request failed with the same error (nothing is dropped)."""
        return cls(
            texts=[""] * n,
            input_tokens=np.zeros(n, dtype=np.int64),
            output_tokens=np.zeros(n, dtype=np.int64),
            latency_s=np.zeros(n, dtype=np.float64),
            errors=[error] * n,
        )


@runtime_checkable
class Backend(Protocol):
    """Anything that turns a ``RequestBatch`` into a ``ResponseBatch``.

    Backends are constructed once per worker and reused across shards, rounds, conditions and
    replicates (an LLM engine is expensive to start). ``close`` releases engines/connections.
    """

    name: str
    needs_prompts: bool

    def generate(self, batch: RequestBatch) -> ResponseBatch: ...

    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What goes into the run manifest: model id, revision, engine options (no secrets)."""
        ...
