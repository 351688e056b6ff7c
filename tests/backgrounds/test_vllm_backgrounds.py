"""Backgrounds on the real vLLM engine with the tiny random model, whose texts are nonsense.

The gate must flag every text after the allowed retries, keep every persona, and report the
contradiction rate. One engine for the whole test session (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crowdlab.personas import sample
from crowdlab.personas.backgrounds.write import add_backgrounds, contradiction_rates
from crowdlab.personas.backgrounds.generate import generate

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

@pytest.fixture(scope="session")
def tiny_vllm(vllm_config, vllm_backend):
    """(backend config as a dict, warm backend): the session's shared engine."""
    return vllm_config.model_dump(mode="json"), vllm_backend


def test_gate_flags_every_nonsense_text_and_keeps_every_persona(demo_spec, tiny_vllm) -> None:
    spec = demo_spec.model_copy(update={"background": demo_spec.background.model_copy(update={"words": 20})})
    personas = sample(spec, 60, seed=2)
    out = add_backgrounds(personas, spec, 2, tiny_vllm[1])
    assert out.num_rows == 60 and out.select(personas.column_names).equals(personas)
    assert out["background_consistent"].to_pylist() == [False] * 60
    assert out["background_tries"].to_pylist() == [spec.background.gate.max_tries] * 60
    assert all(m for m in out["background_mismatch"].to_pylist())
    assert sum(bool(t) for t in out["background"].to_pylist()) >= 55  # nonsense, but kept
    rates = contradiction_rates(out)
    assert rates["before_regeneration"] == 1.0 and rates["after_regeneration"] == 1.0
    # the same persona alone gets the same text as in the batch (seeds per agent and try)
    alone = add_backgrounds(personas.slice(17, 1), spec, 2, tiny_vllm[1])
    assert alone.to_pylist() == out.slice(17, 1).to_pylist()


def test_generate_with_vllm_records_model_and_prompt_version(demo_spec, tiny_vllm, tmp_path: Path) -> None:
    import json

    import pyarrow.parquet as pq

    spec = demo_spec.model_copy(update={"background": demo_spec.background.model_copy(update={"words": 10, "gate": demo_spec.background.gate.model_copy(update={"max_tries": 1})})})
    path = generate(spec, 30, 1, tmp_path, backend=tiny_vllm[0], shard_size=16)
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"crowdlab.personas.background"])
    assert meta["backend"]["backend"] == "vllm" and meta["backend"]["model"] == tiny_vllm[0]["model"]
    assert meta["prompt_version"] == "v1" and meta["contradiction_rate"]["after_regeneration"] == 1.0
    assert table.num_rows == 30
