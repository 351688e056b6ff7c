"""The simulated GPU engine used by bench/fleet.py: its timing model, its engines and seeded answers.

bench/fleet.py's efficiency figures are only as good as this model, so its sleeps are measured:
a batch takes at least ``(fixed + n / throughput) / time_scale`` seconds, batches on one engine
wait for each other, and ``engines`` of them serve that many batches at once. Only lower bounds
on wall time are asserted (a busy machine makes everything slower, never faster), and each one
fails if the sleep or the engine lock is taken out.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from crowdlab.experiments.backends import RequestBatch, make_backend
from crowdlab.experiments.errors import ConfigError
from crowdlab.experiments import validate_config

SLACK = 0.98  # sleep() never returns early; a little slack for clock granularity


def batch(n: int, seed0: int = 0) -> RequestBatch:
    return RequestBatch(agent_ids=np.arange(n, dtype=np.int64), seeds=np.arange(seed0, seed0 + n, dtype=np.int64),
                        context={"lo": 0.0, "hi": 100.0})


def timed(engine, batches: list[RequestBatch]) -> float:  # type: ignore[no-untyped-def]
    """Wall seconds for ``batches`` sent at once from one thread each."""
    threads = [threading.Thread(target=engine.generate, args=(b,)) for b in batches]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def test_a_batch_takes_at_least_fixed_plus_size_over_throughput() -> None:
    engine = make_backend({"kind": "simulated_gpu", "throughput": 2000, "fixed_latency_s": 0.05})
    predicted = 0.05 + 400 / 2000  # 0.25 s
    assert engine.batch_seconds(400) == pytest.approx(predicted)
    started = time.perf_counter()
    out = engine.generate(batch(400))
    assert time.perf_counter() - started >= SLACK * predicted
    assert out.stats["batch_seconds"] == pytest.approx(predicted)
    # a batch 4x larger costs the fixed part once and the size part 4x
    started = time.perf_counter()
    engine.generate(batch(1600))
    assert time.perf_counter() - started >= SLACK * (0.05 + 1600 / 2000)


def test_one_engine_serves_one_batch_at_a_time_and_n_engines_n_at_once() -> None:
    one = make_backend({"kind": "simulated_gpu", "throughput": 1000, "fixed_latency_s": 0.0})
    # three 0.15 s batches at once on one engine queue behind each other: >= 0.45 s
    assert timed(one, [batch(150) for _ in range(3)]) >= SLACK * 3 * 0.15
    two = make_backend({"kind": "simulated_gpu", "throughput": 1000, "fixed_latency_s": 0.0, "engines": 2})
    assert two.config.parallel_batches == 2
    # four batches on two engines: two waves, >= 0.3 s
    assert timed(two, [batch(150) for _ in range(4)]) >= SLACK * 2 * 0.15


def test_time_scale_divides_the_sleep_not_the_modelled_seconds() -> None:
    engine = make_backend({"kind": "simulated_gpu", "throughput": 1000, "fixed_latency_s": 0.1, "time_scale": 4})
    started = time.perf_counter()
    out = engine.generate(batch(700))  # modelled 0.8 s, slept 0.2 s
    assert time.perf_counter() - started >= SLACK * 0.8 / 4
    assert out.stats["batch_seconds"] == pytest.approx(0.8)
    assert out.latency_s.sum() == pytest.approx(0.8)


def test_answers_follow_seeds_and_token_counts() -> None:
    engine = make_backend({"kind": "simulated_gpu", "throughput": 1e9, "fixed_latency_s": 0.0, "output_tokens": 3})
    out = engine.generate(batch(100))
    assert out.errors == [None] * 100 and (out.output_tokens == 3).all()
    assert ((out.values >= 0) & (out.values <= 100)).all() and len(set(out.values.tolist())) > 30
    again = engine.generate(batch(100))
    other = engine.generate(batch(100, seed0=1000))
    assert np.array_equal(out.values, again.values) and not np.array_equal(out.values, other.values)


@pytest.mark.parametrize("field,value", [("throughput", 0), ("engines", 0), ("time_scale", 0)])
def test_bad_settings_name_the_field(field: str, value: float) -> None:
    cfg = {"experiment": "x", "population": {"personas": "p.parquet"}, "scenario": {"kind": "beauty_contest"},
           "backend": {"kind": "simulated_gpu", field: value}}
    with pytest.raises(ConfigError, match=f"backend.{field}"):
        validate_config(cfg)
