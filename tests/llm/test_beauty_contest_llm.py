"""Full multi-round beauty contests through the LLM backends (tiny random model on CPU)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from crowdlab.experiments import ShardFailedError, close_backends, run
from crowdlab.parquet_io import write_table_atomic

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

N_AGENTS, ROUNDS = 60, 2


@pytest.fixture
def personas(tmp_path: Path) -> Path:
    ids = np.arange(N_AGENTS, dtype=np.int64)
    table = pa.table({"agent_id": ids, "education": ["bachelor's degree"] * N_AGENTS,
                      "description": [f"Person {i}, a curious reader." for i in ids]})
    return write_table_atomic(table, tmp_path / "personas.parquet")


def contest(personas: Path, backend: dict[str, Any]) -> dict[str, Any]:
    return {
        "experiment": "llm_contest",
        "population": {"personas": str(personas)},
        # integer guesses: a random-weight model would otherwise spend its budget on decimals
        "scenario": {"kind": "beauty_contest", "integer_only": True},
        "backend": backend,
        "sampling": {"max_tokens": 48},
        "rounds": ROUNDS,
        "shard_size": 25,
        "seed": 5,
    }


def check_complete(decisions: pa.Table) -> None:
    """Exactly one row per agent per round: nothing lost, nothing duplicated."""
    assert decisions.num_rows == N_AGENTS * ROUNDS
    keys = pc.add(pc.multiply(decisions["round"].cast(pa.int64()), 1_000_000), decisions["agent_id"])
    assert len(pc.unique(keys)) == N_AGENTS * ROUNDS


def test_contest_through_vllm_backend(vllm_backend, personas: Path, tiny_model: Path,
                                      tiny_engine_options: dict, tmp_path: Path) -> None:
    config = contest(personas, {"kind": "vllm", "model": str(tiny_model), "label": "tiny", **tiny_engine_options})
    result = run(config, runs_root=tmp_path / "runs")
    close_backends()
    decisions = result.decisions()
    check_complete(decisions)
    assert pc.all(decisions["valid"]).as_py(), decisions.filter(pc.invert(decisions["valid"]))["text"][:3]
    values = decisions["value"].to_numpy()
    assert ((values >= 0) & (values <= 100)).all()
    assert set(decisions["model"].to_pylist()) == {"tiny"}
    assert (decisions["output_tokens"].to_numpy() > 0).all()
    assert result.rounds().num_rows >= ROUNDS


def test_contest_through_served_model_survives_a_server_stop(vllm_server, personas: Path, tmp_path: Path) -> None:
    """Stop ``vllm serve`` mid-run: the run stops naming the URL, keeps every finished shard and
    writes no partial one; start the server again and resume: every agent-round exactly once,
    the failed agents asked again."""
    backend = {"kind": "openai", "model": "tiny", "base_urls": [vllm_server.base_url], "max_concurrency": 4,
               "max_retries": 1, "backoff_initial_s": 0.02, "backoff_max_s": 0.05, "timeout_s": 30}
    config = contest(personas, backend)
    runs_root = tmp_path / "runs"
    done_before = vllm_server.completed_requests()
    outcome: dict[str, Any] = {}

    def play() -> None:
        try:
            outcome["result"] = run(config, run_id="served", runs_root=runs_root)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    runner = threading.Thread(target=play)
    runner.start()
    deadline = time.monotonic() + 300
    while vllm_server.completed_requests() < done_before + N_AGENTS and time.monotonic() < deadline:
        time.sleep(0.1)
    vllm_server.stop()
    runner.join(timeout=600)
    assert isinstance(outcome.get("error"), ShardFailedError), outcome
    assert vllm_server.base_url in str(outcome["error"]) and "re-run" in str(outcome["error"])
    run_dir = runs_root / "llm_contest" / "served"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"
    written = ds.dataset(run_dir / "decisions", format="parquet").to_table()
    assert written.num_rows > 0 and written.num_rows % 25 in (0, 10)  # whole shards only (25 + 25 + 10 agents)
    assert not list(run_dir.rglob("*.tmp"))

    vllm_server.start()
    resumed = run(config, run_id="served", runs_root=runs_root)
    close_backends()
    decisions = resumed.decisions()
    check_complete(decisions)
    errors = [e for e in decisions["error"].to_pylist() if e is not None]
    assert not [e for e in errors if vllm_server.base_url in e]  # every failed agent was asked again
    assert resumed.n_decisions == N_AGENTS * ROUNDS
