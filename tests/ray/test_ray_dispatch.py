"""Shards on a real local Ray cluster: same rows as one process, engine deaths lose nothing,
bad dispatch settings fail before any work starts."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from crowdlab.experiments import ConfigError, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RAY = {"kind": "ray", "num_cpus_per_engine": 0}
MODELS = [
    {"label": "shallow", "backend": {"kind": "behavioral", "tau": 0.8}, "share": 1},
    {"label": "deep", "backend": {"kind": "behavioral", "tau": 3.0}, "share": 2},
]


def manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())


def test_mixed_model_fleet_equals_single_process_row_for_row(ray_cluster, base_config: dict, tmp_path: Path,
                                                             decision_rows) -> None:
    cfg = dict(base_config, backend=None, models=MODELS,
               design={"factors": {"scenario.variant": ["P1", "P2"]}, "replicates": 2})
    fleet = run(dict(cfg, dispatch=RAY), run_id="fleet", runs_root=tmp_path)
    local = run(dict(cfg, shard_size=600), run_id="local", runs_root=tmp_path)
    assert decision_rows(fleet.run_dir).equals(decision_rows(local.run_dir))
    assert fleet.rounds().drop_columns(["run_id"]).equals(local.rounds().drop_columns(["run_id"]))
    record = manifest(fleet.run_dir)["dispatch"]
    # 4 logical GPUs shared evenly by the two models' pools: 2 engines each, one GPU apiece
    assert [(p["models"], p["engines"]) for p in record["pools"]] == [("shallow", 2), ("deep", 2)]
    assert record["gpus"] == 4 and record["actor_deaths"] == 0 and record["shards_reassigned"] == 0
    # 12 shards x 3 rounds x 4 cells, each shard one item per model
    assert record["items_computed"] == 12 * 3 * 4 * 2
    through = fleet.throughput
    assert set(through) == {"shallow", "deep"}
    assert through["shallow"]["decisions"] + through["deep"]["decisions"] == 600 * 3 * 4 == fleet.n_decisions
    assert through["deep"]["engines"] == 2 and set(through["deep"]["per_engine"]) <= set(record["pools"][1]["names"])
    assert local.throughput["deep"]["engines"] == 1
    # dispatch does not change results, so the same run id resumes under the other dispatch
    again = run(dict(cfg, shard_size=50), run_id="fleet", runs_root=tmp_path)
    assert manifest(again.run_dir)["attempts"] == 2 and decision_rows(again.run_dir).equals(decision_rows(fleet.run_dir))


def _kill_one_engine(no_restart: bool):  # type: ignore[no-untyped-def]
    """A progress hook that kills one engine actor once, after the third finished shard."""
    import ray

    state = {"killed": None}

    def hook(done: int, total: int) -> None:
        if state["killed"] is None and done >= 3:
            names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                           if a["name"].startswith("killed/"))
            state["killed"] = names[0]
            ray.kill(ray.get_actor(names[0], namespace="crowdlab"), no_restart=no_restart)
    return hook, state


@pytest.mark.parametrize("no_restart", [False, True], ids=["restarted", "gone-for-good"])
def test_killing_an_engine_mid_round_loses_and_duplicates_nothing(
        ray_cluster, base_config: dict, tmp_path: Path, no_restart: bool, decision_rows) -> None:
    cfg = dict(base_config, rounds=2, backend={"kind": "dummy", "latency_s": 0.2, "render_prompts": False})
    hook, state = _kill_one_engine(no_restart)
    killed = run(dict(cfg, dispatch=dict(RAY, engines_per_model=3, max_restarts=0 if no_restart else 2)),
                 run_id="killed", runs_root=tmp_path, progress=hook)
    calm = run(cfg, run_id="calm", runs_root=tmp_path)
    assert state["killed"] is not None
    rows = decision_rows(killed.run_dir)
    assert rows.num_rows == 600 * 2
    assert pc.count_distinct(pc.binary_join_element_wise(
        pc.cast(rows["round"], "string"), pc.cast(rows["agent_id"], "string"), "/")).as_py() == 1200
    assert rows.equals(decision_rows(calm.run_dir))
    record = manifest(killed.run_dir)["dispatch"]
    assert record["actor_deaths"] == 1 and record["shards_reassigned"] >= 1
    assert record["engines_lost"] == (1 if no_restart else 0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_unreachable_address_fails_fast_naming_it(ray_cluster, base_config: dict, tmp_path: Path, scheme: str) -> None:
    address = f"{scheme}127.0.0.1:{_free_port()}"
    with pytest.raises(ConfigError, match="dispatch.address") as err:
        run(dict(base_config, dispatch=dict(RAY, address=address)), run_id="r", runs_root=tmp_path)
    assert address in str(err.value)
    assert not (tmp_path / "ray_test").exists()  # checked before the manifest and personas are written


def test_more_gpus_than_the_cluster_has_fails_before_work_naming_both(ray_cluster, base_config: dict,
                                                                     tmp_path: Path) -> None:
    cfg = dict(base_config, backend=None, models=MODELS, dispatch=dict(RAY, engines_per_model=3))
    with pytest.raises(ConfigError, match="dispatch.engines_per_model") as err:
        run(cfg, run_id="r", runs_root=tmp_path)
    assert "needs 6 GPUs" in str(err.value) and "has 4" in str(err.value)
    assert not (tmp_path / "ray_test" / "r").exists()  # checked before anything is written


def test_bad_dispatch_settings_name_the_field(base_config: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dispatch.gpus_per_engine"):
        run(dict(base_config, dispatch={"kind": "ray", "gpus_per_engine": -1}), run_id="r", runs_root=tmp_path)
    with pytest.raises(ConfigError, match=r"dispatch: .*'slurm'.*'local', 'ray'"):
        run(dict(base_config, dispatch={"kind": "slurm"}), run_id="r", runs_root=tmp_path)
