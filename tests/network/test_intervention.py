"""Interventions as a design factor: a chosen set of agents (most listeners, or a seeded random
share) posts an injected message at a chosen round and, with a stance, holds it; control and
treatment are conditions of one experiment; diffusion outcomes per round."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from crowdlab.experiments import run
from crowdlab.experiments.config import validate_config
from crowdlab.experiments.errors import ConfigError
from crowdlab.parquet_io import write_table_atomic

MESSAGE = "Vote yes: a higher minimum wage helps everyone."


@pytest.fixture
def people(tmp_path: Path) -> Path:
    return write_table_atomic(pa.table({"agent_id": np.arange(800, dtype=np.int64)}), tmp_path / "people.parquet")


def config(people: Path, seeders: str = "top_degree", **extra: Any) -> dict[str, Any]:
    treatment = {"round": 2, "seeders": seeders, "share": 0.05, "message": MESSAGE, "stance": 7}
    return {"experiment": "iv", "population": {"personas": str(people)},
            "network": {"kind": "barabasi_albert", "m": 3},
            "scenario": {"kind": "opinion", "initial": {"mean": 3, "sd": 1},
                         "messages": {"k": 2, "select": "sample"}},
            "backend": {"kind": "opinion_dynamics", "model": "degroot", "self_weight": 0.6},
            "design": {"factors": {"scenario.intervention": [None, treatment]}},
            "rounds": 5, "shard_size": 800, "seed": 2, **extra}


def test_treatment_and_control_in_one_experiment(people: Path, tmp_path: Path) -> None:
    result = run(config(people), run_id="r", runs_root=tmp_path / "runs")
    posts = ds.dataset(result.run_dir / "messages", format="parquet").to_table()
    injected = posts.filter(pc.equal(posts["text"], MESSAGE))
    assert set(injected["condition_id"].to_pylist()) == {"c001"}  # control never sees it
    assert set(injected["round"].to_pylist()) == {2} and injected.num_rows == 40  # 5 % of 800
    edges = ds.dataset(result.run_dir / "network.parquet").to_table()
    ends = np.concatenate([edges["source"].to_numpy(), edges["target"].to_numpy()])
    listeners = np.bincount(ends, minlength=800)
    assert set(injected["sender"].to_pylist()) == set(np.argsort(-listeners, kind="stable")[:40].tolist())
    rounds = result.rounds().filter(pc.equal(result.rounds()["group"], -1)).to_pandas().set_index(["condition_id", "round"])
    control, treated = rounds.loc["c000"], rounds.loc["c001"]
    assert control.outcome_exposed_share.isna().all()
    assert treated.outcome_exposed_share.tolist()[:2] == [0.0, 0.0] and treated.outcome_exposed_share[3] > 0.2
    assert treated.outcome_exposed_share[4] == 0.0  # readable for one round (window 1)
    assert treated.outcome_toward_share[5] > 0.1 and treated["mean"][5] > control["mean"][5] + 0.3
    seeded = ds.dataset(result.run_dir / "decisions", format="parquet").to_table(
        filter=(pc.field("condition_id") == "c001") & (pc.field("round") == 3)
        & pc.field("agent_id").isin(injected["sender"]))
    assert set(seeded["value"].to_pylist()) == {7.0}  # committed agents hold the injected stance
    assert "scenario.intervention" in result.rounds().column_names  # the factor column


def test_random_seeders_do_not_depend_on_shards(people: Path, tmp_path: Path) -> None:
    one = run(config(people, "random"), run_id="one", runs_root=tmp_path / "runs")
    three = run(config(people, "random", shard_size=300, max_concurrent_shards=3), run_id="three",
                runs_root=tmp_path / "runs")
    for name in ("decisions", "messages"):
        a, b = (ds.dataset(r.run_dir / name, format="parquet").to_table().drop_columns(
            [c for c in ("run_id", "shard", "latency_s") if c in ds.dataset(r.run_dir / name).schema.names])
            for r in (one, three))
        keys = [("condition_id", "ascending"), ("round", "ascending"),
                ("agent_id" if name == "decisions" else "sender", "ascending")]
        assert a.sort_by(keys).equals(b.sort_by(keys))


@pytest.mark.parametrize(("change", "field"), [
    ({"share": 0}, "scenario.intervention.share"),
    ({"stance": 9}, "scenario.intervention.stance"),
    ({"round": 0}, "scenario.intervention.round"),
])
def test_bad_intervention_is_named(people: Path, change: dict, field: str) -> None:
    cfg = config(people)
    cfg["design"] = {}
    cfg["scenario"]["intervention"] = {"round": 2, **change}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert err.value.field == field, str(err.value)


def test_exposure_counts_only_readers_shown_the_post(tmp_path: Path) -> None:
    """Agent 19 (most listeners) posts the injected message. Agents 0-4 hear only 19; agents 5-18
    also hear 0-4, and with k = 2 (newest, then lowest ids) they are shown 0 and 1, never 19: so
    5 of the 19 others are exposed, not all 19 who have 19 among their in-neighbours."""
    ids = np.arange(20, dtype=np.int64)
    people = write_table_atomic(pa.table({"agent_id": ids}), tmp_path / "people.parquet")
    src = np.concatenate([np.full(19, 19), np.repeat(np.arange(5), 14)])
    dst = np.concatenate([np.arange(19), np.tile(np.arange(5, 19), 5)])
    edges = write_table_atomic(pa.table({"source": src.astype(np.int64), "target": dst.astype(np.int64)}),
                               tmp_path / "edges.parquet")
    treatment = {"round": 1, "seeders": "top_degree", "share": 0.05, "message": MESSAGE}
    cfg = {"experiment": "cap", "population": {"personas": str(people)},
           "network": {"kind": "edge_list", "path": str(edges), "directed": True},
           "scenario": {"kind": "opinion", "messages": {"k": 2, "select": "recent"}, "intervention": treatment},
           "backend": {"kind": "opinion_dynamics"}, "rounds": 3, "shard_size": 20, "seed": 1}
    result = run(cfg, run_id="r", runs_root=tmp_path / "runs")
    rounds = result.rounds().to_pandas().query("group == -1").sort_values("round")
    assert rounds["outcome_exposed_share"].tolist() == [0.0, pytest.approx(5 / 19), 0.0]
    posts = ds.dataset(result.run_dir / "messages", format="parquet").to_table().to_pandas()
    assert posts.loc[posts["text"] == MESSAGE, "sender"].tolist() == [19]
