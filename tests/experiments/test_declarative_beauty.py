"""The beauty contest declared in YAML (experiments/configs/beauty_contest_yaml.yaml) writes the
same decision rows and rounds as the built-in ``kind: beauty_contest`` for the same seed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from crowdlab.experiments import run

CONFIG = Path(__file__).parents[2] / "experiments" / "configs" / "beauty_contest_yaml.yaml"
TIMING = ["run_id", "latency_s"]  # wall-clock and the run id differ between any two runs


def declared(groups: int = 1, p: float = 0.6667, offset: float = 0.0) -> dict[str, Any]:
    scenario = yaml.safe_load(CONFIG.read_text())["scenario"]
    scenario["groups"] = groups
    scenario["parameters"] = {"p": p, "offset": offset}
    return scenario


def builtin(groups: int = 1, p: float = 0.6667, offset: float = 0.0) -> dict[str, Any]:
    variant = "P6" if groups > 1 else ("P7" if offset else "P2")
    return {"kind": "beauty_contest", "p": p, "offset": offset, "groups": groups, "variant": variant}


def tables(run_dir: Path) -> tuple[pa.Table, pa.Table]:
    decisions = ds.dataset(run_dir / "decisions", format="parquet").to_table()
    keys = [("condition_id", "ascending"), ("replicate", "ascending"), ("round", "ascending")]
    decisions = decisions.sort_by(keys + [("agent_id", "ascending")])
    rounds = pq.read_table(run_dir / "rounds.parquet").sort_by(keys + [("group", "ascending")])
    return decisions, rounds


def assert_same_game(cfg: dict[str, Any], tmp_path: Path, **kw: Any) -> tuple[pa.Table, pa.Table]:
    a = run(dict(copy.deepcopy(cfg), scenario=builtin(**kw)), run_id="builtin", runs_root=tmp_path)
    b = run(dict(copy.deepcopy(cfg), scenario=declared(**kw)), run_id="declared", runs_root=tmp_path)
    dec_a, rounds_a = tables(a.run_dir)
    dec_b, rounds_b = tables(b.run_dir)
    shared = [c for c in dec_a.column_names if c not in TIMING]
    assert dec_a.select(shared).equals(dec_b.select(shared))
    assert rounds_a.drop_columns(["run_id"]).equals(rounds_b.select(rounds_a.column_names).drop_columns(["run_id"]))
    return dec_b, rounds_b


@pytest.mark.slow
@pytest.mark.parametrize("kw", [{}, {"groups": 3}, {"p": 0.5, "offset": 5.0}])
def test_behavioural_backend_gives_identical_rows(base_config: dict, tmp_path: Path, kw: dict) -> None:
    decisions, rounds = assert_same_game(dict(base_config, rounds=3), tmp_path, **kw)
    # the declarative run adds the typed answer columns
    assert decisions.schema.field("answer_guess").type == pa.float64()
    valid = decisions.filter(decisions["valid"])
    assert pc.all(pc.equal(valid["answer_guess"], valid["value"])).as_py()
    assert rounds["target"].null_count < rounds.num_rows


@pytest.mark.slow
def test_dummy_backend_with_invalid_answers_gives_identical_rows(base_config: dict, tmp_path: Path) -> None:
    backend = {"kind": "dummy", "latency_s": 0, "render_prompts": False, "garbage_rate": 0.1,
               "out_of_range_rate": 0.1}
    decisions, _ = assert_same_game(dict(base_config, backend=backend, rounds=2), tmp_path, groups=2)
    errors = set(decisions["error"].to_pylist())
    assert {"unparseable", "out_of_range", None} <= errors
    bad = decisions.filter(pc.equal(decisions["error"], "out_of_range"))
    assert bad["answer_guess"].null_count == bad.num_rows  # invalid fields hold null
    assert bad["answer_errors"].to_pylist()[0] == [("guess", "out_of_range")]
