"""Shared fixtures: a real Prefect server for the whole test session, isolated from ~/.prefect."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from crowdlab.flows.ui import UIError, stop, wait_healthy

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded in tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_ENGINE = {"gpu_memory_utilization": 0.1, "enforce_eager": True, "max_model_len": 1024, "dtype": "float32"}
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """Environment for a subprocess that talks to the test server (or runs ephemeral)."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
    )
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@pytest.fixture
def ephemeral_prefect_env(tmp_path: Path) -> dict[str, str]:
    """Environment with no API URL: Prefect starts its temporary local server, in a fresh home."""
    env = prefect_env(tmp_path / "prefect-home")
    # Leave logging to the CLI's own defaults, so tests see what a user sees.
    env.pop("PREFECT_LOGGING_LEVEL")
    env.pop("PREFECT_SERVER_LOGGING_LEVEL")
    return env


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real `prefect server start` on 127.0.0.1 with its own PREFECT_HOME.

    Yields the environment a client subprocess needs (PREFECT_HOME, PREFECT_API_URL, ...).
    """
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(home, api_url)
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        try:
            wait_healthy(api_url, timeout_s=120, proc=proc)
        except UIError as exc:
            raise RuntimeError(f"{exc}; see {home / 'server.log'}") from None
        yield env
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="session")
def tiny_engine_options() -> dict:
    return dict(TINY_ENGINE)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight chat model built locally (nothing is downloaded)."""
    from crowdlab.experiments.backends.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-chat")


@pytest.fixture(scope="session")
def vllm_config(tiny_model: Path):
    from crowdlab.experiments.backends.vllm_offline import VLLMBackendConfig

    return VLLMBackendConfig(model=str(tiny_model), **TINY_ENGINE)


@pytest.fixture(scope="session")
def vllm_backend(vllm_config):
    """The session's one warm vLLM engine (kept in the backend's process cache, so every backend
    built later with the same model and options, the runner's included, reuses it)."""
    backend = vllm_config.build()
    backend.engine  # start it now, once
    yield backend
    from crowdlab.experiments.backends.vllm_offline import release_engines

    release_engines()


def persona_table(n: int) -> pa.Table:
    """A small hand-built persona table: ids, a three-level education, a description for P5."""
    ids = np.arange(n, dtype=np.int64)
    education = np.array(["high school", "bachelor's", "doctoral"])[ids % 3]
    return pa.table({"agent_id": ids, "education": education,
                     "description": [f"Person {i}, a curious reader." for i in range(n)]})


@pytest.fixture
def personas_path(tmp_path: Path) -> Path:
    """600 hand-built personas in Parquet (the engine and Ray tests' population)."""
    from crowdlab.parquet_io import write_table_atomic

    return write_table_atomic(persona_table(600), tmp_path / "personas.parquet")
