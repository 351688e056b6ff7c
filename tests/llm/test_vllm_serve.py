"""The openai backend against a real ``vllm serve`` (the tiny model, CPU) on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from crowdlab.experiments.backends.base import RequestBatch, SamplingSettings
from crowdlab.experiments.backends.openai_compat import OpenAIBackendConfig

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(600)]


def make_batch(n: int, schema: dict) -> RequestBatch:
    messages = [
        [{"role": "system", "content": "Pick a number between 0 and 100."}, {"role": "user", "content": f"agent {i}"}]
        for i in range(n)
    ]
    return RequestBatch(
        agent_ids=np.arange(n, dtype=np.int64),
        seeds=np.arange(n, dtype=np.int64),
        messages=messages,
        answer_schema=schema,
        sampling=SamplingSettings(max_tokens=96),
    )


@pytest.mark.parametrize("mode", ["response_format", "vllm"])
def test_served_answers_are_valid(vllm_server, answer_schema: dict, mode: str) -> None:
    backend = OpenAIBackendConfig(
        model="tiny", base_urls=[vllm_server.base_url], structured_output=mode, max_concurrency=16
    ).build()
    out = backend.generate(make_batch(100, answer_schema))
    assert out.errors == [None] * 100
    assert all(0 <= json.loads(t, strict=False)["guess"] <= 100 for t in out.texts)
    assert (out.input_tokens > 0).all() and (out.output_tokens > 0).all()
    assert (out.latency_s > 0).all()
    assert backend.generate(make_batch(100, answer_schema)).texts == out.texts  # seeds reproduce


def test_schema_the_server_rejects_gives_error_rows(vllm_server) -> None:
    backend = OpenAIBackendConfig(model="tiny", base_urls=[vllm_server.base_url], max_retries=0).build()
    out = backend.generate(make_batch(3, {"type": "bogus"}))
    assert all(e is not None and "HTTP 400" in e and vllm_server.base_url in e for e in out.errors)


def test_server_stopped_mid_batch_loses_no_rows(vllm_server, answer_schema: dict) -> None:
    """Stop the server while a long batch is in flight: every row is an answer or an error."""
    backend = OpenAIBackendConfig(
        model="tiny", base_urls=[vllm_server.base_url], max_concurrency=8,
        max_retries=1, backoff_initial_s=0.02, backoff_max_s=0.05, timeout_s=30,
    ).build()
    n = 1000
    done_before = vllm_server.completed_requests()
    result: dict = {}
    worker = threading.Thread(target=lambda: result.setdefault("out", backend.generate(make_batch(n, answer_schema))))
    worker.start()
    deadline = time.monotonic() + 120
    while vllm_server.completed_requests() < done_before + 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    vllm_server.stop()
    worker.join(timeout=300)
    out = result["out"]
    assert len(out) == n
    answered = [e is None for e in out.errors]
    assert 20 <= sum(answered) < n
    for text, error in zip(out.texts, out.errors):
        if error is None:
            assert 0 <= json.loads(text, strict=False)["guess"] <= 100
        else:
            assert text == "" and vllm_server.base_url in error
