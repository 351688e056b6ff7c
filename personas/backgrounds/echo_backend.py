"""``kind: echo``: a non-LLM backend that writes and reads backgrounds by rule, for fast tests.

Writer requests (``context["task"] == "background_write"``) get one sentence per fact in the
prompt ("Their age is 34."); reader requests get those sentences parsed back into the JSON the
reader schema asks for. ``corrupt_rate`` and ``empty_rate`` make a seeded share of texts
contradict the persona or come back empty, so the gate's retries and flags can be exercised
deterministically: a retry has a new seed and so, usually, a clean text. It implements the
``crowdlab.experiments.backends`` Backend protocol without importing that package.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from crowdlab.hashing import combine

_FACT = re.compile(r"^- (.+?): (.*)$", re.MULTILINE)
_SENTENCE = re.compile(r"Their (.+?) is (.*?)\.(?: |$)")


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["echo"] = "echo"
    label: str | None = None
    corrupt_rate: float = Field(0.0, ge=0, le=1, description="share of texts with one wrong fact")
    empty_rate: float = Field(0.0, ge=0, le=1, description="share of texts that come back empty")

    def build(self) -> "EchoBackend":
        return EchoBackend(self)


class EchoBackend:
    """Rule-based writer and reader (see module docstring)."""

    needs_prompts = True

    def __init__(self, config: EchoConfig) -> None:
        self.config = config
        self.name = config.label or "echo"

    def generate(self, batch: Any) -> Any:
        from crowdlab.experiments.backends.base import ResponseBatch

        started = time.perf_counter()
        n = len(batch)
        if batch.context.get("task") == "background_read":
            fields = list((batch.answer_schema or {}).get("properties", {}))
            texts = [self._read(chat[-1]["content"], fields) for chat in batch.messages]
        else:
            u = (combine(batch.seeds, 0xEC40) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
            corrupt = u < self.config.corrupt_rate
            empty = u > 1 - self.config.empty_rate
            texts = [
                "" if e else self._write(chat[-1]["content"], bool(c))
                for chat, c, e in zip(batch.messages, corrupt.tolist(), empty.tolist())
            ]
        tokens = np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=n)
        return ResponseBatch(
            texts=texts,
            input_tokens=np.fromiter((len(c[-1]["content"].split()) for c in batch.messages), np.int64, n),
            output_tokens=tokens,
            latency_s=np.full(n, (time.perf_counter() - started) / max(n, 1)),
            errors=[None] * n,
        )

    @staticmethod
    def _write(prompt: str, corrupt: bool) -> str:
        facts = _FACT.findall(prompt)
        if corrupt and facts:
            facts[0] = (facts[0][0], "unknown")
        return " ".join(f"Their {label} is {value}." for label, value in facts)

    @staticmethod
    def _read(text: str, fields: list[str]) -> str:
        said = {label.strip(): value.strip() for label, value in _SENTENCE.findall(text.removeprefix("Text:\n"))}
        return json.dumps({f: said.get(f.replace("_", " "), "") for f in fields}, ensure_ascii=False)

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"backend": "echo", **self.config.model_dump(mode="json")}
