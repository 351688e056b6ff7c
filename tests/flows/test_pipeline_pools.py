"""The pipeline's stages on the work pools a config names, through the session's real Prefect
server with real process workers: the population stage on a second pool, the experiment stage on
crowdlab's own, each as a subflow run of the pipeline; a pool with no worker is one clean line."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from crowdlab.flows.ui import PREFECT, WORK_POOL, register, start_worker, stop
from tests.flows.test_pipeline_flow import N, api_post, pipeline_config, run_cli, write_config

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = "crowdlab-small"  # the second pool: where the backgrounds are written
IDLE = "crowdlab-idle"  # a pool nobody works on


def _pool(env: dict[str, str], name: str) -> dict:
    return httpx.get(f"{env['PREFECT_API_URL']}/work_pools/{name}", timeout=30).json()


def _wait_ready(env: dict[str, str], names: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_pool(env, n).get("status") == "READY" for n in names):
            return
        time.sleep(0.5)
    raise AssertionError(f"work pools {names} not ready: {[_pool(env, n).get('status') for n in names]}")


def _pools_config(tmp_path: Path, population_pool: str, experiment_pool: str | None) -> Path:
    population = pipeline_config()["population"]
    population = {**population, "backgrounds": {**population["backgrounds"], "work_pool": population_pool}}
    changes = {"population": population, "rounds": 1}
    if experiment_pool:
        changes["work_pool"] = experiment_pool
    return write_config(tmp_path, **changes)


def test_stages_run_on_the_pools_the_config_names(prefect_server: dict[str, str], tmp_path: Path) -> None:
    env = dict(prefect_server, PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="2")
    register(REPO_ROOT, env)  # the crowdlab pool and prefect.yaml's deployments, the stages' included
    for pool in (SMALL, IDLE):
        subprocess.run([PREFECT, "work-pool", "create", pool, "--type", "process", "--overwrite"], env=env,
                       cwd=REPO_ROOT, check=True, capture_output=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = [start_worker(REPO_ROOT, env, logs / "crowdlab.log"),
               subprocess.Popen([PREFECT, "worker", "start", "--pool", SMALL], env=env, cwd=REPO_ROOT,
                                stdout=(logs / "small.log").open("ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)]
    try:
        _wait_ready(env, [WORK_POOL, SMALL])
        runs = tmp_path / "runs"
        result = run_cli(["run", str(_pools_config(tmp_path, SMALL, WORK_POOL)), "--run-id", "pools",
                          "--runs-root", str(runs)], env, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        run_dir = runs / "pipe" / "pools"
        population = pq.read_table(run_dir / "population" / "personas.parquet")
        assert population.num_rows == N and all(population.column("background_consistent").to_pylist())
        assert ds.dataset(run_dir / "decisions", format="parquet").count_rows() == N
        assert (run_dir / "report.html").is_file()

        flows = {f["id"]: f["name"] for f in api_post(env, "/flows/filter", {"limit": 200})}
        runs_of: dict[str, list[dict]] = {}
        for fr in api_post(env, "/flow_runs/filter", {"limit": 200}):
            if fr["parameters"].get("run_id") == "pools" or \
                    fr["parameters"].get("out_dir") == str(run_dir.resolve() / "population"):
                runs_of.setdefault(flows[fr["flow_id"]], []).append(fr)
        (population_run,) = runs_of["crowdlab-population"]
        (experiment_run,) = runs_of["crowdlab-experiment"]
        assert (population_run["work_pool_name"], experiment_run["work_pool_name"]) == (SMALL, WORK_POOL)
        assert population_run["state_type"] == experiment_run["state_type"] == "COMPLETED"
        assert population_run["parent_task_run_id"] and experiment_run["parent_task_run_id"]  # subflows
        (pipeline,) = [fr for fr in runs_of["crowdlab-pipeline"] if fr["name"] == "pipe/pools"]
        assert pipeline["state_type"] == "COMPLETED" and pipeline["work_pool_name"] is None  # the CLI's process
        (personas,) = runs_of["crowdlab-personas"]  # what the pipeline runs in-process, here on the pool's worker
        assert personas["work_pool_name"] is None and personas["state_type"] == "COMPLETED"
        # the manifest keeps where each stage ran (the pools are not part of the config's hash)
        recorded = json.loads((run_dir / "manifest.json").read_text())["stages"]
        assert {s: (r["work_pool"], r["flow_run_id"]) for s, r in recorded.items()} == {
            "population": (SMALL, population_run["id"]), "experiment": (WORK_POOL, experiment_run["id"])}

        # The stage fails on its worker (the key variable the pipeline's host has is empty there):
        # the pipeline stops with one line naming the pool's field and the stage's own error.
        key_env = "CROWDLAB_POOL_TEST_KEY"
        population = pipeline_config()["population"]
        population = {**population, "backgrounds": {"work_pool": SMALL, "backend": {
            "kind": "openai", "model": "m", "base_urls": ["http://127.0.0.1:9/v1"], "api_key_env": key_env}}}
        config = write_config(tmp_path, population=population, rounds=1)
        result = run_cli(["run", str(config), "--run-id", "nokey", "--runs-root", str(runs)],
                         {**env, key_env: "k"}, tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: population.backgrounds.work_pool: the population "
                                                       f"stage on work pool '{SMALL}' ended"), lines
        assert key_env in lines[0] and "Traceback" not in result.stdout + result.stderr
    finally:
        for worker in workers:
            stop(worker)

    # A pool with no worker online: one line naming the field, before any work, nothing written.
    result = run_cli(["run", str(_pools_config(tmp_path, IDLE, None)), "--run-id", "idle", "--runs-root",
                      str(runs)], env, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: population.backgrounds.work_pool:"), lines
    assert f"'{IDLE}' has no worker online" in lines[0] and "Traceback" not in result.stdout + result.stderr
    assert not (runs / "pipe" / "idle").exists()
