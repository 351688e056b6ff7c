"""On the real vLLM engine (tiny random model): capped answers always close, truncation is
counted as its own cause, and round-2 prompts carry the reasoning the agent gave in round 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from crowdlab.experiments import close_backends, run
from crowdlab.experiments.backends.vllm_offline import VLLMBackend
from crowdlab.experiments.scenarios import BeautyContest, BeautyContestParams
from crowdlab.experiments.scenarios.answer_parsing import extract_reasoning
from crowdlab.parquet_io import write_table_atomic

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

N = 40
SCENARIO = {"kind": "beauty_contest", "variant": "P2", "max_reasoning_chars": 60, "memory": "reasoning",
            "memory_chars": 40}


@pytest.fixture
def personas(tmp_path: Path) -> Path:
    return write_table_atomic(pa.table({"agent_id": np.arange(N, dtype=np.int64)}), tmp_path / "personas.parquet")


def contest(personas: Path, backend: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    return {"experiment": "closing", "population": {"personas": str(personas)}, "scenario": SCENARIO,
            "backend": backend, "sampling": {"max_tokens": max_tokens}, "rounds": 2, "shard_size": 25, "seed": 9}


def test_capped_answers_close_and_round_two_remembers_reasoning(
        vllm_backend, personas: Path, tiny_model: Path, tiny_engine_options: dict, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    budget = BeautyContest(BeautyContestParams(**SCENARIO)).max_answer_tokens()
    seen: list[Any] = []
    original = VLLMBackend.generate
    monkeypatch.setattr(VLLMBackend, "generate", lambda self, batch: seen.append(batch) or original(self, batch))
    backend = {"kind": "vllm", "model": str(tiny_model), **tiny_engine_options}
    result = run(contest(personas, backend, budget), runs_root=tmp_path / "runs")
    close_backends()
    d = result.decisions().sort_by([("round", "ascending"), ("agent_id", "ascending")])
    assert pc.all(d["valid"]).as_py(), d.filter(pc.invert(d["valid"]))["text"][:3]  # the random model too
    rounds = result.rounds()
    assert pc.sum(rounds["n_truncated"]).as_py() == 0 and pc.sum(rounds["n_invalid"]).as_py() == 0
    reasoning = extract_reasoning(d["text"].combine_chunks(), 10_000).to_pylist()
    assert all(len(r) <= 60 and r.isascii() for r in reasoning)

    # Round 2: each agent's prompt carries the start of its own round-1 reasoning, on one line.
    round1 = {a: r for a, r, k in zip(d["agent_id"].to_pylist(), reasoning, d["round"].to_pylist()) if k == 1}
    remembered = extract_reasoning(pa.array([d["text"][i].as_py() for i in range(N)]), 40).to_pylist()
    prompts = {int(a): m[-1]["content"] for b in seen if b.messages and "Your round 1" in b.messages[0][-1]["content"]
               for a, m in zip(b.agent_ids, b.messages)}
    assert len(prompts) == N
    for agent, memory in zip(d["agent_id"].to_pylist()[:N], remembered):
        line = next(x for x in prompts[agent].splitlines() if x.startswith("Your round 1"))
        if round1[agent]:
            assert f'your reasoning: "{memory}"' in line
        assert len(line) <= 80 + 40  # fixed words and numbers, then memory_chars (40) at most


def test_too_small_a_budget_is_counted_as_truncated(vllm_backend, personas: Path, tiny_model: Path,
                                                    tiny_engine_options: dict, tmp_path: Path) -> None:
    backend = {"kind": "vllm", "model": str(tiny_model), **tiny_engine_options}
    result = run(dict(contest(personas, backend, 6), rounds=1), runs_root=tmp_path / "runs")
    close_backends()
    d = result.decisions()
    cut = d.filter(pc.equal(d["error"], "truncated"))
    assert cut.num_rows == N  # 6 tokens cannot hold '{"reasoning":"' and a guess
    assert not pc.any(cut["valid"]).as_py()
    pooled = result.rounds().filter(pc.equal(result.rounds()["group"], -1)).to_pylist()[0]
    assert pooled["n_truncated"] == N == pooled["n_invalid"] and pooled["n_unparseable"] == 0
