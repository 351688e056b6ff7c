"""`crowdlab run` through Prefect with `dispatch: {kind: ray}`: the flow drives engine actors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pyarrow.compute as pc
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.prefect]


def test_prefect_flow_on_a_local_ray_cluster_equals_a_local_run(prefect_server: dict[str, str], tmp_path: Path,
                                                                 base_config: dict[str, Any], decision_rows) -> None:
    runs = tmp_path / "runs"
    on_ray = dict(base_config, dispatch={"kind": "ray", "address": None, "gpus_per_engine": 0,
                                         "engines_per_model": 2})
    config = tmp_path / "ray.yaml"
    config.write_text(yaml.safe_dump(on_ray))
    env = dict(prefect_server, RAY_USAGE_STATS_ENABLED="0")
    result = subprocess.run([sys.executable, "-m", "crowdlab.flows.cli", "run", str(config), "--run-id", "fleet",
                             "--runs-root", str(runs)], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rounds of" in result.stdout

    from crowdlab import experiments

    local = experiments.run(base_config, run_id="local", runs_root=runs)
    fleet_rows = decision_rows(runs / "ray_test" / "fleet")
    assert fleet_rows.equals(decision_rows(local.run_dir))
    assert pc.all(fleet_rows["valid"]).as_py()

    flow_runs = httpx.post(f"{env['PREFECT_API_URL']}/flow_runs/filter", json={"limit": 50}, timeout=30).json()
    ours = [fr for fr in flow_runs if fr["parameters"].get("run_id") == "fleet"][0]
    assert ours["state_type"] == "COMPLETED"
    artifacts = httpx.post(f"{env['PREFECT_API_URL']}/artifacts/filter",
                           json={"artifacts": {"flow_run_id": {"any_": [ours["id"]]}}}, timeout=30).json()
    assert sum(a["type"] == "table" for a in artifacts) == base_config["rounds"]
    progress = [a for a in artifacts if a["type"] == "progress"][0]
    assert float(progress["data"]) == pytest.approx(100.0)
