"""A declarative scenario with several typed fields through the real vLLM engine (tiny random
model on CPU, structured output from the combined answer schema): every answer parses into its
typed columns and is valid, whatever the weights say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from crowdlab.experiments import run
from crowdlab.parquet_io import write_table_atomic

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

SCENARIO = {
    "kind": "declarative", "name": "typed_survey", "group_size": 4,
    "parameters": {"endowment": 20},
    "prompts": {"system": "A short survey and a contribution game. You have {{ params.endowment }} tokens.",
                "user": "You: {{ persona.description }}"},
    "questions": [
        {"text": "Do you trust strangers?", "fields": {
            "trust": {"type": "likert", "labels": ["no", "somewhat", "yes"]},
            "vote": {"type": "choice", "options": ["left", "right"]}}},
        {"text": "How many tokens do you give? Round {{ round }}.", "fields": {
            "give": {"type": "integer", "low": 0, "high": 20},
            "share": {"type": "number", "low": 0, "high": 1},
            "why": {"type": "text", "max_chars": 12}}},
    ],
    "outcome": [{"rule": "aggregate", "name": "total", "field": "give", "stat": "sum"},
                {"rule": "aggregate", "name": "votes", "field": "vote", "stat": "share"},
                {"rule": "payoff", "name": "payoff", "formula": "endowment - give + 0.4 * total"}],
}


def test_every_typed_answer_from_the_engine_is_valid(vllm_config, vllm_backend, tmp_path: Path) -> None:
    ids = np.arange(40, dtype=np.int64)
    personas = write_table_atomic(pa.table({"agent_id": ids, "description": [f"Person {i}." for i in ids]}),
                                  tmp_path / "personas.parquet")
    cfg = {"experiment": "typed_llm", "population": {"personas": str(personas)}, "scenario": SCENARIO,
           "backend": vllm_config.model_dump(mode="json"), "sampling": {"max_tokens": 96, "temperature": 1.0},
           "rounds": 2, "shard_size": 40, "seed": 3}
    result = run(cfg, run_id="r", runs_root=tmp_path)
    decisions = ds.dataset(result.run_dir / "decisions", format="parquet").to_table()
    bad = decisions.filter(pc.invert(decisions["valid"]))
    assert bad.num_rows == 0, bad.select(["text", "error", "answer_errors"]).slice(0, 5).to_pylist()
    for name in ("trust", "vote", "give", "share", "why"):
        assert decisions[f"answer_{name}"].null_count == 0
    rounds = pq.read_table(result.run_dir / "rounds.parquet")
    assert rounds["outcome_total"].null_count == 0 and rounds["outcome_payoff"].null_count == 0
