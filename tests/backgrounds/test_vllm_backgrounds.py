"""Backgrounds on the real vLLM engine with the tiny random model, whose texts are nonsense.

The gate must flag every text after the allowed retries, keep every persona, and report the
contradiction rate. One engine for the session: the model folder and engine options are those of
tests/llm, and the backend's process-level cache hands the same engine to every backend built
with them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

from crowdlab.personas import sample  # noqa: E402
from crowdlab.personas.backgrounds import add_backgrounds, contradiction_rates  # noqa: E402
from crowdlab.personas.generate import generate  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]

TINY_ENGINE = {"gpu_memory_utilization": 0.1, "enforce_eager": True, "max_model_len": 1024, "dtype": "float32"}


@pytest.fixture(scope="session")
def tiny_vllm(tmp_path_factory: pytest.TempPathFactory):
    from crowdlab.experiments.backends import make_backend
    from crowdlab.experiments.backends.tiny_model import build_tiny_model
    from crowdlab.experiments.backends.vllm_offline import release_engines

    model = build_tiny_model(tmp_path_factory.mktemp("bg-models") / "tiny-chat")
    config = {"kind": "vllm", "model": str(model), **TINY_ENGINE}
    backend = make_backend(config)
    backend.engine  # start it once
    yield config, backend
    release_engines()


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
