"""The cognitive-hierarchy baseline: CH levels, plausible means, learning, tau shifts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from crowdlab.experiments.backends import RequestBatch, make_backend
from crowdlab.experiments.backends.behavioral import ch_level_choices
from crowdlab.experiments.seeding import request_seeds

N = 20_000


def ask(config: dict, context: dict, personas: pa.Table | None = None, round_: int = 1):  # type: ignore[no-untyped-def]
    ids = np.arange(N, dtype=np.int64)
    batch = RequestBatch(agent_ids=ids, seeds=request_seeds(11, 0, 0, round_, ids), personas=personas,
                         context={"p": 2 / 3, "offset": 0.0, "lo": 0.0, "hi": 100.0, **context})
    return make_backend(config).generate(batch)


def test_ch_levels_by_hand() -> None:
    x = ch_level_choices(tau=1.5, anchor=50, p=2 / 3, offset=0, lo=0, hi=100, max_level=3)
    f0, f1 = np.exp(-1.5), 1.5 * np.exp(-1.5)
    assert x[1] == pytest.approx(100 / 3)
    assert x[2] == pytest.approx(2 / 3 * (f0 * 50 + f1 * 100 / 3) / (f0 + f1))
    assert np.all(np.diff(x) < 0)


def test_round_one_mean_in_ch_range_and_falls_over_rounds() -> None:
    r1 = ask({"kind": "behavioral"}, {})
    m1 = float(np.mean(r1.values))
    assert 28 < m1 < 38  # CH with tau 1.5 predicts low-to-mid 30s (Camerer-Ho-Chong 2004)
    assert np.all((r1.values >= 0) & (r1.values <= 100))
    r2 = ask({"kind": "behavioral"}, {"last_mean": np.full(N, m1), "last_target": np.full(N, 2 / 3 * m1)}, round_=2)
    m2 = float(np.mean(r2.values))
    assert m2 < m1 * 0.85
    assert r1.texts[0] == f"{r1.values[0]:g}" or float(r1.texts[0]) == r1.values[0]


def test_higher_tau_means_lower_guesses_and_tau_by_attribute() -> None:
    low = np.mean(ask({"kind": "behavioral", "tau": 0.5}, {}).values)
    high = np.mean(ask({"kind": "behavioral", "tau": 3.0}, {}).values)
    assert high < low - 5
    edu = np.where(np.arange(N) % 2 == 0, "doctoral", "high school")
    personas = pa.table({"agent_id": np.arange(N), "education": edu})
    out = ask({"kind": "behavioral", "tau_by": {"education": {"doctoral": 4.0, "high school": 0.3}}}, {}, personas)
    assert out.values[edu == "doctoral"].mean() < out.values[edu == "high school"].mean() - 5


def test_decisions_depend_only_on_seeds() -> None:
    a = ask({"kind": "behavioral"}, {})
    b = ask({"kind": "behavioral"}, {})
    assert np.array_equal(a.values, b.values)
    ids = np.arange(100, 200, dtype=np.int64)
    part = make_backend({"kind": "behavioral"}).generate(RequestBatch(
        agent_ids=ids, seeds=request_seeds(11, 0, 0, 1, ids),
        context={"p": 2 / 3, "offset": 0.0, "lo": 0.0, "hi": 100.0}))
    assert np.array_equal(part.values, a.values[100:200])


def test_offset_game_stays_near_its_equilibrium_side() -> None:
    out = ask({"kind": "behavioral"}, {"p": 0.5, "offset": 5.0})
    assert 15 < np.mean(out.values) < 35


def test_dummy_answers_from_seeds_and_honours_concurrency_limit() -> None:
    ids = np.arange(40, dtype=np.int64)
    seeds = request_seeds(1, 0, 0, 1, ids)
    limited = make_backend({"kind": "dummy", "latency_s": 0.01, "concurrency": 4, "render_prompts": False})
    free = make_backend({"kind": "dummy", "latency_s": 0.01, "concurrency": 40, "render_prompts": False})
    try:
        a = limited.generate(RequestBatch(agent_ids=ids, seeds=seeds, context={"lo": 0, "hi": 10}))
        b = free.generate(RequestBatch(agent_ids=ids, seeds=seeds, context={"lo": 0, "hi": 10}))
    finally:
        limited.close()
        free.close()
    assert a.texts == b.texts and len(a) == 40
    assert all(0 <= float(t.split(":")[1].rstrip("}")) <= 10 for t in a.texts)
    # ten waves of four calls: the last call waited for nine earlier waves (a lower bound)
    assert a.latency_s.max() >= 10 * 0.01 * 0.99
    assert b.latency_s.min() >= 0.01 * 0.99
