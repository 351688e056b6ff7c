"""OpenAI-compatible backend against small local HTTP servers that misbehave on purpose.

These servers are plain ``http.server`` threads: they stand in for a flaky endpoint (503s, then
answers), a broken one (non-JSON), and two replicas (load balancing); no engine is involved.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from crowdlab.experiments.backends.base import RequestBatch
from crowdlab.experiments.backends.model_ref import BackendError
from crowdlab.experiments.backends.openai_compat import OpenAIBackendConfig

FAST_RETRIES = {"max_retries": 2, "backoff_initial_s": 0.01, "backoff_max_s": 0.05}


class _DeepBacklogServer(ThreadingHTTPServer):
    """The default accept backlog (5) refuses connections when the backend opens dozens at once
    on a busy machine, and a refused request is retried on the next URL."""

    request_queue_size = 256


class FakeServer:
    """Answers chat completions; ``fail_first`` requests get HTTP 503, ``garbage`` answers non-JSON."""

    def __init__(self, *, fail_first: int = 0, garbage: bool = False) -> None:
        self.fail_first = fail_first
        self.garbage = garbage
        self.bodies: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    server.headers.append(dict(self.headers))
                    failing = len(server.bodies) <= server.fail_first
                if failing:
                    self._send(503, b'{"error": "overloaded"}')
                elif server.garbage:
                    self._send(200, b"<html>not json</html>")
                else:
                    answer = {"guess": body["seed"] % 101}
                    reply = {
                        "choices": [{"message": {"role": "assistant", "content": json.dumps(answer)}}],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 5},
                    }
                    self._send(200, json.dumps(reply).encode())

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = _DeepBacklogServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[FakeServer]]:
    made: list[FakeServer] = []
    yield made
    for server in made:
        server.close()


def make_batch(n: int, schema: dict | None = None) -> RequestBatch:
    messages = [[{"role": "system", "content": "rules"}, {"role": "user", "content": f"agent {i}"}] for i in range(n)]
    return RequestBatch(
        agent_ids=np.arange(n, dtype=np.int64),
        seeds=np.arange(1000, 1000 + n, dtype=np.int64),
        messages=messages,
        answer_schema=schema or {"type": "object", "properties": {"guess": {"type": "number"}}},
    )


def test_answers_come_back_in_request_order_with_usage(servers: list[FakeServer]) -> None:
    servers.append(FakeServer())
    backend = OpenAIBackendConfig(model="m", base_urls=[servers[0].url], max_concurrency=4).build()
    out = backend.generate(make_batch(30))
    assert [json.loads(t)["guess"] for t in out.texts] == [(1000 + i) % 101 for i in range(30)]
    assert out.errors == [None] * 30
    assert out.input_tokens.tolist() == [11] * 30 and out.output_tokens.tolist() == [5] * 30
    assert (out.latency_s > 0).all()
    body = servers[0].bodies[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["guess"] == {"type": "number"}


def test_regex_goes_in_vllm_structured_outputs(servers: list[FakeServer]) -> None:
    servers.append(FakeServer())
    backend = OpenAIBackendConfig(model="m", base_urls=servers[0].url, structured_output="vllm").build()
    batch = make_batch(2)
    batch.answer_schema, batch.answer_regex = None, r"\d+"
    backend.generate(batch)
    assert servers[0].bodies[0]["structured_outputs"] == {"regex": r"\d+"}


def test_503s_are_retried_until_they_succeed(servers: list[FakeServer]) -> None:
    servers.append(FakeServer(fail_first=5))
    retries = {**FAST_RETRIES, "max_retries": 5}
    backend = OpenAIBackendConfig(model="m", base_urls=[servers[0].url], max_concurrency=1, **retries).build()
    out = backend.generate(make_batch(4))
    assert out.errors == [None] * 4
    assert len(servers[0].bodies) == 4 + 5


def test_requests_are_spread_over_urls(servers: list[FakeServer]) -> None:
    servers.extend([FakeServer(), FakeServer()])
    backend = OpenAIBackendConfig(model="m", base_urls=[s.url for s in servers]).build()
    out = backend.generate(make_batch(40))
    assert out.errors == [None] * 40
    assert len(servers[0].bodies) == len(servers[1].bodies) == 20


def test_a_dead_replica_is_skipped_by_retries(servers: list[FakeServer]) -> None:
    servers.append(FakeServer())
    dead = "http://127.0.0.1:9/v1"  # discard port: connection refused
    backend = OpenAIBackendConfig(model="m", base_urls=[dead, servers[0].url], **FAST_RETRIES).build()
    out = backend.generate(make_batch(10))
    assert out.errors == [None] * 10


def test_unreachable_server_gives_error_rows_naming_the_url(caplog: pytest.LogCaptureFixture) -> None:
    backend = OpenAIBackendConfig(model="m", base_urls=["http://127.0.0.1:9/v1"], **FAST_RETRIES).build()
    out = backend.generate(make_batch(6))
    assert len(out) == 6
    assert all(e is not None and "127.0.0.1:9" in e and "after retries" in e for e in out.errors)
    assert out.texts == [""] * 6
    assert "6 of 6 requests" in caplog.text and "127.0.0.1:9" in caplog.text


def test_non_json_server_gives_error_rows(servers: list[FakeServer]) -> None:
    servers.append(FakeServer(garbage=True))
    backend = OpenAIBackendConfig(model="m", base_urls=[servers[0].url], **FAST_RETRIES).build()
    out = backend.generate(make_batch(3))
    assert all(e is not None and "non-JSON" in e and servers[0].url in e for e in out.errors)
    assert len(servers[0].bodies) == 3  # a garbage answer is not retried


def test_api_key_is_sent_but_never_stored_or_logged(servers: list[FakeServer], monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path, personas_path, caplog: pytest.LogCaptureFixture) -> None:
    """A whole run with a real key in the environment: the server receives it on every request,
    and no file of the run folder, no log record (DEBUG included) and no description holds it."""
    import logging

    from crowdlab.experiments import close_backends, run

    key = "sk-crowdlab-7f3a9c1e5b2d4f60a8"
    servers.append(FakeServer())
    monkeypatch.setenv("CROWDLAB_TEST_KEY", key)
    backend = {"kind": "openai", "model": "m", "base_urls": [servers[0].url], "api_key_env": "CROWDLAB_TEST_KEY",
               **FAST_RETRIES}
    config = {"experiment": "keyed", "population": {"personas": str(personas_path)},
              "scenario": {"kind": "beauty_contest"}, "backend": backend, "rounds": 2, "shard_size": 300, "seed": 5}
    log_file = tmp_path / "crowdlab.log"
    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        with caplog.at_level(logging.DEBUG):
            result = run(config, run_id="keyed", runs_root=tmp_path / "runs")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        close_backends()
    assert result.n_decisions == 2 * 600 and result.n_invalid == 0  # the key was in real use
    assert len(servers[0].headers) == 2 * 600
    assert {h["Authorization"] for h in servers[0].headers} == {f"Bearer {key}"}
    files = [p for p in result.run_dir.rglob("*") if p.is_file()]
    assert len(files) > 4  # manifest, personas, decision shards, rounds
    assert [str(p) for p in files if key.encode() in p.read_bytes()] == []
    assert caplog.records and key not in caplog.text and key not in log_file.read_text()
    assert key not in json.dumps(OpenAIBackendConfig(**backend).build().describe())


def test_missing_api_key_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CROWDLAB_NO_KEY", raising=False)
    with pytest.raises(BackendError, match="CROWDLAB_NO_KEY"):
        OpenAIBackendConfig(model="m", base_urls=["http://x/v1"], api_key_env="CROWDLAB_NO_KEY").build()


def test_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="base_urls"):
        OpenAIBackendConfig(model="m", base_urls=["gpu1:8000"])
