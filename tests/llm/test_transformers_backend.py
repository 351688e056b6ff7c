"""The transformers backend: batched chat generation with left padding on the tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crowdlab.experiments.backends import make_backend
from crowdlab.experiments.backends.base import RequestBatch, SamplingSettings
from crowdlab.experiments.scenarios.answer_parsing import parse_numbers

pytestmark = pytest.mark.slow


def make_batch(n: int) -> RequestBatch:
    # prompts of different lengths, so left padding matters
    messages = [
        [{"role": "system", "content": "Pick a number."}, {"role": "user", "content": "agent " * (1 + i % 4)}]
        for i in range(n)
    ]
    return RequestBatch(agent_ids=np.arange(n, dtype=np.int64), seeds=np.arange(n, dtype=np.int64) * 7,
                        messages=messages, sampling=SamplingSettings(max_tokens=12))


def test_batched_generation_reproduces_and_counts_tokens(tiny_model: Path) -> None:
    backend = make_backend({"kind": "transformers", "model": str(tiny_model), "batch_size": 4})
    first = backend.generate(make_batch(10))
    again = backend.generate(make_batch(10))
    assert len(first) == 10 and first.errors == [None] * 10
    assert first.texts == again.texts
    assert first.input_tokens.tolist()[:4] != [first.input_tokens[0]] * 4  # unpadded lengths
    assert (first.output_tokens > 0).all() and (first.output_tokens <= 12).all()
    assert parse_numbers(first.texts).shape == (10,)  # free text goes to the tolerant parser
    info = backend.describe()
    assert info["backend"] == "transformers" and info["revision"].startswith("sha256:")


def test_greedy_answers_do_not_depend_on_batch_neighbours(tiny_model: Path) -> None:
    """Left padding done right: a prompt's greedy answer is the same alone or padded in a batch."""
    batch = make_batch(4)
    batch.sampling = SamplingSettings(temperature=0.0, max_tokens=8)
    together = make_backend({"kind": "transformers", "model": str(tiny_model), "batch_size": 4}).generate(batch)
    alone = make_backend({"kind": "transformers", "model": str(tiny_model), "batch_size": 1}).generate(batch)
    assert together.texts == alone.texts
