"""The vllm backend on the real (CPU) engine with a tiny random model: structure, seeds, counts."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from crowdlab.experiments.backends import make_backend
from crowdlab.experiments.backends.base import RequestBatch, SamplingSettings
from crowdlab.experiments.backends.model_ref import BackendError
from crowdlab.experiments.backends.vllm_offline import cached_engines

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(600)]

SCHEMA = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 20},
        "guess": {"type": "number", "minimum": 0, "maximum": 100},
    },
    "required": ["guess"],
}
RULES = "You are playing a guessing game. Pick a number between 0 and 100. " * 6


def make_batch(n: int, seed0: int = 0, **kwargs) -> RequestBatch:
    messages = [
        [{"role": "system", "content": RULES}, {"role": "user", "content": f"You are agent {i}."}]
        for i in range(n)
    ]
    kwargs.setdefault("answer_schema", SCHEMA)
    return RequestBatch(
        agent_ids=np.arange(n, dtype=np.int64),
        seeds=np.arange(seed0, seed0 + n, dtype=np.int64),
        messages=messages,
        sampling=SamplingSettings(temperature=1.0, top_p=1.0, max_tokens=96),
        **kwargs,
    )


def guesses(texts: list[str]) -> list[float]:
    # strict=False: xgrammar lets raw control characters into JSON strings (random model noise)
    return [json.loads(text, strict=False)["guess"] for text in texts]


def test_every_answer_is_valid_json_in_range(vllm_backend) -> None:
    out = vllm_backend.generate(make_batch(300))
    assert len(out) == 300 and out.errors == [None] * 300
    values = guesses(out.texts)
    assert all(0 <= v <= 100 for v in values)
    assert (out.input_tokens > 0).all() and (out.output_tokens > 0).all()
    assert 0.0 <= out.stats["prefix_cache_hit_rate"] <= 1.0
    assert out.stats["truncated"] == 0


def test_shared_prefix_hits_the_cache(vllm_backend) -> None:
    vllm_backend.generate(make_batch(50))
    out = vllm_backend.generate(make_batch(50, seed0=500))
    assert out.stats["prefix_cache_hit_rate"] > 0.5


def test_seeds_reproduce_and_differ(vllm_backend) -> None:
    first = vllm_backend.generate(make_batch(40))
    again = vllm_backend.generate(make_batch(40))
    other = vllm_backend.generate(make_batch(40, seed0=10_000))
    assert first.texts == again.texts
    assert sum(a != b for a, b in zip(first.texts, other.texts)) > 20


def test_regex_answers_match(vllm_backend) -> None:
    pattern = r'\{"guess": (100|[1-9]?[0-9])\}'
    out = vllm_backend.generate(make_batch(50, answer_schema=None, answer_regex=pattern))
    assert all(re.fullmatch(pattern, text) for text in out.texts)


def test_rejected_schema_is_a_clear_error(vllm_backend) -> None:
    with pytest.raises(BackendError, match="tiny-chat.*rejected"):
        vllm_backend.generate(make_batch(2, answer_schema={"type": "bogus"}))


def test_backends_with_same_options_share_one_engine(vllm_backend, tiny_model, tiny_engine_options) -> None:
    before = cached_engines()
    again = make_backend({"kind": "vllm", "model": str(tiny_model), "label": "tiny", **tiny_engine_options})
    out = again.generate(make_batch(3))
    assert cached_engines() == before
    assert again.name == "tiny" and len(out) == 3
    again.close()
    assert vllm_backend.generate(make_batch(2)).errors == [None, None]
