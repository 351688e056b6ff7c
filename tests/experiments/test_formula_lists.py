"""The formula baseline answers multi_choice fields (a selection probability per option) and
ranking fields (a score per option): every answer valid against its field, the same whatever the
sharding, and bad declarations named by field path at load time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as ds
import pytest
import yaml

from crowdlab.experiments import run
from crowdlab.experiments.backends.baseline import rank_options, select_options
from crowdlab.experiments.config import load_config
from crowdlab.experiments.errors import ConfigError
from tests.experiments.conftest import with_field

TRANSPORT = ["bus", "bike", "car", "on foot"]
POLICIES = ["tax", "subsidy", "ban", "nothing"]


def config(personas: Path, shard_size: int = 250) -> dict[str, Any]:
    return {
        "experiment": "lists", "population": {"personas": str(personas)}, "rounds": 2,
        "shard_size": shard_size, "seed": 11, "backend": {"kind": "formula"},
        "scenario": {
            "kind": "declarative", "name": "lists",
            "parameters": {"car_share": 0.3},
            "questions": [{"text": "Round {{ round }}.", "fields": {
                "transport": {"type": "multi_choice", "options": TRANSPORT, "min_selections": 1,
                              "max_selections": 2},
                "any_transport": {"type": "multi_choice", "options": TRANSPORT},
                "policy": {"type": "ranking", "options": POLICIES},
                "top_policy": {"type": "ranking", "options": POLICIES, "top_k": 2},
                "effort": {"type": "integer", "low": 0, "high": 10}}}],
            "outcome": [{"rule": "aggregate", "name": "modes", "field": "transport", "stat": "share"}],
            "baseline": {"fields": {
                # bus always drawn, bike never, car by a parameter, on foot more in round 2
                "transport": {"bus": "1", "bike": 0, "car": "car_share", "on foot": "0.2 * round"},  # a number: a constant
                "any_transport": {"bus": "0.5", "bike": "0.5", "car": "0.5", "on foot": "0.5"},
                # a random-utility ranking: subsidy usually first, nothing usually last
                "policy": {"tax": "1 + normal()", "subsidy": "3 + normal()", "ban": "normal()",
                           "nothing": "-3 + normal()"},
                "top_policy": {"tax": "uniform()", "subsidy": "uniform()", "ban": "uniform()",
                               "nothing": "uniform()"},
                "effort": "floor(11 * uniform())"}},
        },
    }


def decisions(run_dir: Path) -> list[dict[str, Any]]:
    table = ds.dataset(run_dir / "decisions", format="parquet").to_table()
    return table.sort_by([("round", "ascending"), ("agent_id", "ascending")]).to_pylist()


def test_every_list_answer_is_valid_and_follows_its_formulas(personas_path: Path, tmp_path: Path) -> None:
    rows = decisions(run(config(personas_path), run_id="r", runs_root=tmp_path).run_dir)
    assert len(rows) == 2 * 600
    assert all(r["valid"] and r["error"] is None for r in rows), [r["error"] for r in rows if not r["valid"]][:3]
    for r in rows:
        transport, policy, top = r["answer_transport"], r["answer_policy"], r["answer_top_policy"]
        assert 1 <= len(transport) <= 2 and set(transport) <= set(TRANSPORT)
        assert transport == [o for o in TRANSPORT if o in transport]  # declaration order
        assert "bus" in transport and "bike" not in transport  # probability 1 and 0
        assert set(r["answer_any_transport"]) <= set(TRANSPORT)
        assert sorted(policy) == sorted(POLICIES)  # a permutation
        assert len(top) == 2 and len(set(top)) == 2 and set(top) <= set(POLICIES)
    for rnd in (1, 2):
        part = [r for r in rows if r["round"] == rnd]
        car = np.mean(["car" in r["answer_transport"] for r in part])
        foot = np.mean(["on foot" in r["answer_transport"] for r in part])
        # bus is always in, so a third option pushes past max_selections = 2: car and on foot
        # compete for the second place; each is in at most at its own probability
        assert 0.15 < car < 0.4 and 0.05 * rnd < foot < 0.3 * rnd
        sizes = [len(r["answer_any_transport"]) for r in part]
        assert 0 in sizes and 4 in sizes and 1.7 < np.mean(sizes) < 2.3  # independent draws at 0.5
        assert np.mean([r["answer_policy"][0] == "subsidy" for r in part]) > 0.8
        assert np.mean([r["answer_policy"][-1] == "nothing" for r in part]) > 0.8
        firsts = {p: np.mean([r["answer_top_policy"][0] == p for r in part]) for p in POLICIES}
        assert all(0.15 < s < 0.35 for s in firsts.values()), firsts  # a seeded shuffle
    # different draws per round and per agent, not one answer for all
    assert len({tuple(r["answer_policy"]) for r in rows}) > 5
    assert [r["answer_top_policy"] for r in rows[:600]] != [r["answer_top_policy"] for r in rows[600:]]


def test_list_answers_do_not_depend_on_the_sharding(personas_path: Path, tmp_path: Path) -> None:
    a = decisions(run(config(personas_path, 250), run_id="a", runs_root=tmp_path).run_dir)
    b = decisions(run(config(personas_path, 70), run_id="b", runs_root=tmp_path).run_dir)
    columns = ("agent_id", "round", "seed", "text", "answer_transport", "answer_policy", "answer_top_policy")
    assert [tuple(r[c] if not isinstance(r[c], list) else tuple(r[c]) for c in columns) for r in a] == \
           [tuple(r[c] if not isinstance(r[c], list) else tuple(r[c]) for c in columns) for r in b]


def test_selection_counts_stay_within_bounds_whatever_the_probabilities() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(-0.5, 1.5, size=(5000, 6))
    p[::7, 2] = np.nan  # no value: never selected by its draw (the answer itself is null then)
    u = rng.uniform(size=p.shape)
    for low, high in ((0, 6), (2, 3), (1, 1), (6, 6)):
        chosen = select_options(p, u, low, high)
        counts = chosen.sum(axis=1)
        assert counts.min() >= low and counts.max() <= high
        inside = ((u < np.clip(np.nan_to_num(p), 0, 1)).sum(axis=1) >= low) & \
                 ((u < np.clip(np.nan_to_num(p), 0, 1)).sum(axis=1) <= high)
        # when the draws already meet the bounds they are the answer, untouched
        assert np.array_equal(chosen[inside], (u < np.clip(np.nan_to_num(p), 0, 1))[inside])
    order = rank_options(np.array([[0.1, 0.5, 0.5, -1.0]]), 4)
    assert order.tolist() == [[1, 2, 0, 3]]  # highest first, ties in declaration order


B = "scenario.baseline.fields"
BAD = [
    (f"{B}.transport", "uniform()", f"{B}.transport", "one selection probability formula per option"),
    (f"{B}.policy", "1", f"{B}.policy", "one score formula per option"),
    (f"{B}.effort", {"x": "1"}, f"{B}.effort", "takes one formula, not a mapping"),
    (f"{B}.effort", [1], f"{B}.effort", "a formula (text or a number), got list"),
    (f"{B}.policy.tax", None, f"{B}.policy.tax", "a formula (text or a number), got NoneType"),
    (f"{B}.transport", {"bus": "1", "bike": "0", "car": "0", "on foot": "0", "train": "1"}, f"{B}.transport",
     "unknown option 'train'"),
    (f"{B}.policy", {"tax": "1", "subsidy": "2"}, f"{B}.policy", "no score formula for option(s) 'ban', 'nothing'"),
    (f"{B}.transport.car", "car_shar", f"{B}.transport.car", "unknown name 'car_shar'"),
    (f"{B}.policy.ban", "normal(", f"{B}.policy.ban", "syntax error"),
    (f"{B}.transport.on foot", "__import__('os')", f"{B}.transport", "option 'on foot': unknown function"),
]


@pytest.mark.parametrize(("where", "value", "field", "message"), BAD)
def test_bad_list_baseline_is_named_at_load_time(personas_path: Path, tmp_path: Path, where: str, value: Any,
                                                 field: str, message: str) -> None:
    cfg = config(personas_path)
    if where.endswith(".on foot"):  # a label with a space: set inside the mapping
        cfg["scenario"]["baseline"]["fields"]["transport"]["on foot"] = value
    else:
        cfg = with_field(cfg, where, value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == field, str(info.value)
    assert message in str(info.value)
    assert "line " in str(info.value)
