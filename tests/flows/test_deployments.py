"""prefect.yaml deployments on a real server, run by a real process worker, as the UI does it."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from crowdlab.flows.ui import register, start_worker, stop

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def deployed(prefect_server: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    env = dict(prefect_server, PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="2")
    register(REPO_ROOT, env)
    logs = tmp_path_factory.mktemp("worker")
    worker = start_worker(REPO_ROOT, env, logs / "worker.log")
    try:
        yield env
    finally:
        stop(worker)


def api(env: dict[str, str], method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.request(method, f"{env['PREFECT_API_URL']}{path}", json=body, timeout=30)


def deployment(env: dict[str, str], name: str) -> dict[str, Any]:
    response = api(env, "GET", f"/deployments/name/{name}")
    response.raise_for_status()
    return response.json()


def wait_for(env: dict[str, str], flow_run_id: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        flow_run = api(env, "GET", f"/flow_runs/{flow_run_id}").json()
        if flow_run["state_type"] in TERMINAL:
            return flow_run
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout_s} s")


def shipped_deployment(name: str) -> dict[str, Any]:
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    return next(d for d in spec["deployments"] if d["name"] == name)


def test_nightly_schedule_fires_at_two_utc_with_parameters_the_flow_accepts() -> None:
    from prefect.server.schemas.schedules import CronSchedule

    from crowdlab.experiments import load_config
    from crowdlab.flows.pipeline import experiment_flow

    dep = shipped_deployment("experiment")
    (schedule,) = dep["schedules"]
    assert (schedule["cron"], schedule["timezone"], schedule["active"]) == ("0 2 * * *", "UTC", False)
    # the next two firings, as Prefect's scheduler computes them: 02:00 UTC, a day apart
    start = datetime(2026, 3, 28, 12, 0, tzinfo=timezone.utc)  # the eve of a European DST change
    dates = asyncio.run(CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"]).get_dates(n=2, start=start))
    assert [d.astimezone(timezone.utc).isoformat() for d in dates] == [
        "2026-03-29T02:00:00+00:00", "2026-03-30T02:00:00+00:00"]
    # the schedule's parameters, merged over the deployment's, are parameters of the flow and load
    params = {**dep["parameters"], **schedule["parameters"]}
    assert set(params) <= set(inspect.signature(experiment_flow.fn).parameters)
    assert params["fresh_seed"] is True and params["config_path"] == "experiments/configs/paper_variants.yaml"
    config = load_config(REPO_ROOT / params["config_path"])
    assert config.experiment == "paper_variants"


def test_fresh_seed_runs_are_new_replicates_with_new_seeds(deployed: dict[str, str], tmp_path: Path) -> None:
    """What the nightly schedule starts, twice: the schedule's parameters (on a smaller population)."""
    dep = deployment(deployed, "crowdlab-experiment/experiment")
    schedule = shipped_deployment("experiment")["schedules"][0]["parameters"]
    runs = tmp_path / "runs"
    config = REPO_ROOT / schedule["config_path"]
    started = []
    for _ in range(2):  # both at once, as two firings of the schedule may overlap on a worker
        response = api(deployed, "POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": {
            **schedule, "config_path": str(config), "runs_root": str(runs),
            "overrides": {"population.n": 60, "rounds": 1, "design.replicates": 1,
                          "design.factors": {"scenario.variant": ["P1"], "scenario.p": [0.5]}}}})
        response.raise_for_status()
        started.append(response.json()["id"])
    for flow_run_id in started:
        flow_run = wait_for(deployed, flow_run_id)
        assert flow_run["state_type"] == "COMPLETED", flow_run["state"]
    run_dirs = sorted((runs / "paper_variants").iterdir())
    assert len(run_dirs) == 2, run_dirs
    manifests = [json.loads((d / "manifest.json").read_text()) for d in run_dirs]
    assert manifests[0]["run_id"] != manifests[1]["run_id"]
    seeds = [m["config"]["seed"] for m in manifests]
    assert seeds[0] != seeds[1] and 2024 not in seeds  # not the config's own seed either
    values = [pq.read_table(d / "rounds.parquet", columns=["mean"])["mean"].to_pylist() for d in run_dirs]
    assert values[0] != values[1]  # different draws, not the same replicate twice


def test_shipped_schedule_is_registered_and_paused(deployed: dict[str, str]) -> None:
    dep = deployment(deployed, "crowdlab-experiment/experiment")
    schedules = api(deployed, "GET", f"/deployments/{dep['id']}/schedules").json()
    assert len(schedules) == 1
    assert schedules[0]["active"] is False
    assert schedules[0]["schedule"]["cron"] == "0 2 * * *"
    assert deployment(deployed, "crowdlab-report/report")["work_pool_name"] == "crowdlab"


def test_custom_run_from_the_api_completes_with_artifacts(deployed: dict[str, str], tmp_path: Path) -> None:
    config = yaml.safe_load((REPO_ROOT / "experiments/configs/baseline.yaml").read_text())
    config["population"]["spec"] = str(REPO_ROOT / config["population"]["spec"])
    config_path = tmp_path / "baseline.yaml"
    config_path.write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    dep = deployment(deployed, "crowdlab-experiment/experiment")
    # What the UI's "Custom run" form posts: parameters, including dotted-name overrides.
    response = api(deployed, "POST", f"/deployments/{dep['id']}/create_flow_run", {
        "parameters": {"config_path": str(config_path), "run_id": "ui", "runs_root": str(runs),
                       "overrides": {"rounds": 2, "population.n": 300}},
    })
    response.raise_for_status()
    flow_run = wait_for(deployed, response.json()["id"])
    assert flow_run["state_type"] == "COMPLETED", flow_run["state"]

    run_dir = runs / "baseline" / "ui"
    assert ds.dataset(run_dir / "decisions", format="parquet").count_rows() == 2 * 300
    artifacts = api(deployed, "POST", "/artifacts/filter",
                    {"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}}).json()
    assert sorted(a["type"] for a in artifacts).count("table") == 2
    assert any(a["type"] == "markdown" for a in artifacts)

    report = deployment(deployed, "crowdlab-report/report")
    response = api(deployed, "POST", f"/deployments/{report['id']}/create_flow_run",
                   {"parameters": {"run_dir": str(run_dir)}})
    response.raise_for_status()
    assert wait_for(deployed, response.json()["id"])["state_type"] == "COMPLETED"
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64" in html


def test_persona_deployment_writes_a_population(deployed: dict[str, str], tmp_path: Path) -> None:
    dep = deployment(deployed, "crowdlab-personas/personas")
    out = tmp_path / "pop"
    response = api(deployed, "POST", f"/deployments/{dep['id']}/create_flow_run", {
        "parameters": {"spec_path": "data/populations/multi_locale.yaml", "n": 500, "seed": 4, "out_dir": str(out),
                       "shard_size": 200},
    })
    response.raise_for_status()
    assert wait_for(deployed, response.json()["id"])["state_type"] == "COMPLETED"
    table = pq.read_table(out / "personas.parquet")
    assert table.num_rows == 500 and table["agent_id"].to_pylist() == list(range(500))


def test_parameters_that_fail_validation_are_refused(deployed: dict[str, str]) -> None:
    dep = deployment(deployed, "crowdlab-experiment/experiment")
    response = api(deployed, "POST", f"/deployments/{dep['id']}/create_flow_run",
                   {"parameters": {"config_path": "experiments/configs/demo.yaml", "overwrite": "sometimes"}})
    assert response.status_code in (409, 422)
    assert "overwrite" in response.text


def test_a_bad_config_fails_the_flow_run_with_a_clear_message(deployed: dict[str, str], tmp_path: Path) -> None:
    dep = deployment(deployed, "crowdlab-experiment/experiment")
    response = api(deployed, "POST", f"/deployments/{dep['id']}/create_flow_run", {
        "parameters": {"config_path": "experiments/configs/demo.yaml", "runs_root": str(tmp_path),
                       "overrides": {"scenario.p": -1}},
    })
    response.raise_for_status()
    flow_run = wait_for(deployed, response.json()["id"])
    assert flow_run["state_type"] == "FAILED", flow_run["state"]
    assert "scenario.p" in flow_run["state"]["message"], flow_run["state"]
    assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())


def test_the_run_form_describes_every_parameter(deployed: dict[str, str]) -> None:
    for name in ("crowdlab-experiment/experiment", "crowdlab-report/report", "crowdlab-personas/personas"):
        schema = deployment(deployed, name)["parameter_openapi_schema"]["properties"]
        assert all(p.get("description") for p in schema.values()), (name, schema)
    experiment = deployment(deployed, "crowdlab-experiment/experiment")["parameter_openapi_schema"]["properties"]
    assert "dotted name" in experiment["overrides"]["description"]


def test_a_missing_model_folder_fails_the_flow_run_once_with_its_message(deployed: dict[str, str],
                                                                         tmp_path: Path) -> None:
    """A user error under Prefect: the flow run fails with the one-line message, nothing is
    retried and nothing is written."""
    dep = deployment(deployed, "crowdlab-experiment/experiment")
    response = api(deployed, "POST", f"/deployments/{dep['id']}/create_flow_run", {
        "parameters": {"config_path": "experiments/configs/demo.yaml", "runs_root": str(tmp_path / "runs"),
                       "run_id": "nomodel", "overrides": {"models": None,
                                                            "backend": {"kind": "vllm", "model": "/no/such/model"}}},
    })
    response.raise_for_status()
    flow_run = wait_for(deployed, response.json()["id"])
    assert flow_run["state_type"] == "FAILED", flow_run["state"]
    assert "backend: model '/no/such/model': model path '/no/such/model' does not exist" in flow_run["state"]["message"]
    assert flow_run["name"] == "demo/nomodel"
    task_runs = api(deployed, "POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}}).json()
    counts = {t["name"].rsplit("-", 1)[0]: t["run_count"] for t in task_runs}
    assert counts.get("prepare-run") == 1, counts  # the user error is not retried
    assert set(counts) <= {"plan-run", "prepare-run"} and all(c == 1 for c in counts.values()), counts
    assert not (tmp_path / "runs").exists()
