"""The simulated GPU engine used by bench/fleet.py: batch cost model and seeded answers."""

from __future__ import annotations

import numpy as np
import pytest

from crowdlab.experiments.backends import RequestBatch, make_backend
from crowdlab.experiments.errors import ConfigError
from crowdlab.experiments import validate_config


def batch(n: int, seed0: int = 0) -> RequestBatch:
    return RequestBatch(agent_ids=np.arange(n, dtype=np.int64), seeds=np.arange(seed0, seed0 + n, dtype=np.int64),
                        context={"lo": 0.0, "hi": 100.0})


def test_batch_cost_is_fixed_plus_size_over_throughput_and_answers_follow_seeds() -> None:
    engine = make_backend({"kind": "simulated_gpu", "throughput": 2000, "fixed_latency_s": 0.01, "output_tokens": 3})
    out = engine.generate(batch(100))
    assert out.stats["batch_seconds"] == pytest.approx(0.01 + 100 / 2000)
    assert out.latency_s.sum() == pytest.approx(0.06)
    assert out.errors == [None] * 100 and (out.output_tokens == 3).all()
    assert ((out.values >= 0) & (out.values <= 100)).all() and len(set(out.values.tolist())) > 30
    again = engine.generate(batch(100))
    other = engine.generate(batch(100, seed0=1000))
    assert np.array_equal(out.values, again.values) and not np.array_equal(out.values, other.values)


def test_bad_throughput_names_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = {"experiment": "x", "population": {"personas": "p.parquet"}, "scenario": {"kind": "beauty_contest"},
           "backend": {"kind": "simulated_gpu", "throughput": 0}}
    with pytest.raises(ConfigError, match="backend.throughput"):
        validate_config(cfg)
