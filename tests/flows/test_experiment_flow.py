"""`crowdlab run` through a real Prefect server (and the ephemeral API), as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import json
import re
import textwrap

import httpx
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml


REPO_ROOT = Path(__file__).resolve().parents[2]
CROWDLAB = [sys.executable, "-m", "crowdlab.flows.cli"]

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def write_config(tmp_path: Path, **changes: object) -> Path:
    config = {
        "experiment": "flowtest",
        "population": {"spec": str(REPO_ROOT / "data/populations/general_adult.yaml"), "n": 240, "seed": 3},
        "scenario": {"kind": "beauty_contest", "p": 0.6667, "variant": "P1"},
        "backend": {"kind": "behavioral"},
        "rounds": 2,
        "shard_size": 100,
        "seed": 11,
        "design": {"factors": {"scenario.p": [0.5, 0.6667]}, "replicates": 1},
    }
    config.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CROWDLAB + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def api_post(env: dict[str, str], path: str, body: dict) -> list[dict]:
    response = httpx.post(f"{env['PREFECT_API_URL']}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def test_run_through_prefect_server_lands_decisions_and_artifacts(prefect_server: dict[str, str], tmp_path: Path) -> None:
    config = write_config(tmp_path)
    runs = tmp_path / "runs"
    result = run_cli(["run", str(config), "--run-id", "srv", "--runs-root", str(runs), "--report"],
                     prefect_server, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "rounds of" in result.stdout

    run_dir = runs / "flowtest" / "srv"
    decisions = ds.dataset(run_dir / "decisions", format="parquet").to_table()
    # 2 conditions x 2 rounds x 240 agents, every agent once per round.
    assert decisions.num_rows == 2 * 2 * 240
    assert len(list((run_dir / "decisions").rglob("shard-*.parquet"))) == 2 * 2 * 3
    rounds = pq.read_table(run_dir / "rounds.parquet").to_pandas()
    assert set(rounds["condition_id"]) == {"c000", "c001"}

    flow_runs = api_post(prefect_server, "/flow_runs/filter", {"flow_runs": {"name": {}}, "limit": 50})
    ours = [fr for fr in flow_runs if fr["parameters"].get("run_id") == "srv"]
    assert ours and ours[0]["state_type"] == "COMPLETED"
    assert ours[0]["name"] == "flowtest/srv"  # named after the experiment and run id
    artifacts = api_post(prefect_server, "/artifacts/filter",
                         {"artifacts": {"flow_run_id": {"any_": [ours[0]["id"]]}}, "limit": 100})
    kinds = sorted(a["type"] for a in artifacts)
    assert kinds.count("table") == 2 * 2  # one per condition x round
    assert "markdown" in kinds and "progress" in kinds
    # Keyed per run (another run of the experiment gets its own), in Prefect's key alphabet.
    keys = [a["key"] for a in artifacts]
    assert all(k.startswith(("flowtest-srv-", "progress-flowtest-srv", "report-flowtest-srv")) for k in keys), keys
    assert all(re.fullmatch(r"[a-z0-9-]+", k) for k in keys)
    # The HTML report is linked from the experiment run.
    links = [a for a in artifacts if "report.html" in str(a["data"])]
    assert links and (run_dir / "report.html").resolve().as_uri() in links[0]["data"]
    assert "report.html" in result.stdout
    tables = [a for a in artifacts if a["type"] == "table"]
    assert any("mean" in str(a["data"]) for a in tables)
    progress = [a for a in artifacts if a["type"] == "progress"][0]
    assert float(progress["data"]) == pytest.approx(100.0)

    task_runs = api_post(prefect_server, "/task_runs/filter",
                         {"flow_runs": {"id": {"any_": [ours[0]["id"]]}}, "limit": 200})
    shard_runs = [t for t in task_runs if t["name"].startswith("c00") and "shard" in t["name"]]
    assert len(shard_runs) == 2 * 2 * 3
    assert all(t["state_type"] == "COMPLETED" for t in shard_runs)

    # Same run id again resumes: nothing is recomputed or duplicated.
    again = run_cli(["run", str(config), "--run-id", "srv", "--runs-root", str(runs)], prefect_server, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert ds.dataset(run_dir / "decisions", format="parquet").count_rows() == decisions.num_rows


def test_overrides_and_bad_input_fail_cleanly(prefect_server: dict[str, str], tmp_path: Path) -> None:
    """Mistakes are refused in one line, exit 2, before Prefect starts (so in-process, with typer's
    runner: a real `crowdlab` process per case would cost seconds of start-up each); the run in
    between goes through the real entry point and the session's server."""
    from typer.testing import CliRunner

    from crowdlab.flows.cli import app

    def refused(args: list[str], *needles: str) -> None:
        out = CliRunner().invoke(app, args, env=prefect_server)
        lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
        assert out.exit_code == 2 and len(lines) == 1, (args, out.output, out.stderr)
        assert all(needle in lines[0] for needle in needles), (args, lines)
        assert isinstance(out.exception, SystemExit) and "Traceback" not in out.stderr  # no crash

    config = write_config(tmp_path)
    runs = tmp_path / "runs"
    refused(["run", str(config), "--runs-root", str(runs), "--set", "rounds=0"], "rounds")
    assert not runs.exists()
    refused(["run", str(tmp_path / "nope.yaml")], "not found")
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiment: x\nrounds: [1,\n", encoding="utf-8")
    refused(["run", str(broken)], "line")

    ok = run_cli(["run", str(config), "--run-id", "small", "--runs-root", str(runs), "--set", "rounds=1",
                  "--set", "population.n=120"], prefect_server, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    decisions = ds.dataset(runs / "flowtest" / "small" / "decisions", format="parquet")
    assert decisions.count_rows() == 2 * 1 * 120

    # A different config under the same run id is refused, and the first run's files stay.
    refused(["run", str(config), "--run-id", "small", "--runs-root", str(runs), "--set", "rounds=2"], "small")
    assert decisions.count_rows() == 2 * 1 * 120

    # A population spec that does not validate: one clean line naming the spec's field.
    bad_spec = tmp_path / "bad_spec.yaml"
    bad_spec.write_text("name: broken\nattributes:\n  - {name: age, kind: uniform, low: 70, high: 18}\n")
    refused(["run", str(config), "--runs-root", str(runs), "--set", f"population.spec={bad_spec}"],
            "population.spec", "low")


def test_ephemeral_prefect_by_default(tmp_path: Path, ephemeral_prefect_env: dict[str, str]) -> None:
    """With no PREFECT_API_URL the flow runs on Prefect's temporary local server, quietly."""
    env = ephemeral_prefect_env
    config = write_config(tmp_path, rounds=1, design={"factors": {}, "replicates": 1})
    result = run_cli(["run", str(config), "--run-id", "eph", "--runs-root", str(tmp_path / "runs")], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "database is locked" not in output
    assert "INFO" not in output  # Prefect's per-task log lines stay out of a normal run
    assert (tmp_path / "runs" / "flowtest" / "eph" / "rounds.parquet").is_file()


def test_a_failed_run_under_prefect_says_failed_in_its_manifest(prefect_server: dict[str, str], tmp_path: Path) -> None:
    """Every request fails (nothing listens on the discard port): the run stops, exit code 1, one
    error line last, the manifest says failed, and the transient failure was retried by Prefect."""
    dead = {"kind": "openai", "model": "m", "base_urls": ["http://127.0.0.1:9/v1"], "max_retries": 0}
    config = write_config(tmp_path, backend=dead, rounds=1, max_failed_share=0.0,
                          design={"factors": {}, "replicates": 1}, population={
                              "spec": str(REPO_ROOT / "data/populations/general_adult.yaml"), "n": 50, "seed": 3})
    runs = tmp_path / "runs"
    result = run_cli(["run", str(config), "--run-id", "dead", "--runs-root", str(runs)], prefect_server, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: run stopped: ")
    manifest = json.loads((runs / "flowtest" / "dead" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "ShardFailedError" in manifest["timings"]["error"]

    flow_runs = api_post(prefect_server, "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["flowtest/dead"]}}})
    assert flow_runs and flow_runs[0]["state_type"] == "FAILED"
    task_runs = api_post(prefect_server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_runs[0]["id"]]}}})
    shard = [t for t in task_runs if "shard" in t["name"]]
    assert shard and shard[0]["run_count"] == 3  # a server that is down may come back: retried twice


ONE_SHARD_WITHOUT_THE_KEY = textwrap.dedent("""
    import os, sys
    import yaml
    from prefect import flow
    from crowdlab.experiments import prepare_run
    from crowdlab.flows.pipeline import shard_task

    os.environ["CROWDLAB_WORKER_KEY"] = "present-when-prepared"
    handle = prepare_run(yaml.safe_load(open(sys.argv[1])), run_id="nokey", runs_root=sys.argv[2])
    del os.environ["CROWDLAB_WORKER_KEY"]  # the process that plays the shard lacks the key

    @flow(name="one-shard", flow_run_name="one-shard-nokey")
    def one_shard():
        return shard_task(handle.run_dir, handle.cells[0][0], 0, 1, 0)

    state = one_shard(return_state=True)
    print(state.type.value)
""")


def test_an_error_no_retry_can_fix_is_not_retried(prefect_server: dict[str, str], tmp_path: Path) -> None:
    backend = {"kind": "openai", "model": "m", "base_urls": ["http://127.0.0.1:9/v1"],
               "api_key_env": "CROWDLAB_WORKER_KEY"}
    config = write_config(tmp_path, backend=backend, design={"factors": {}, "replicates": 1})
    result = subprocess.run([sys.executable, "-c", ONE_SHARD_WITHOUT_THE_KEY, str(config), str(tmp_path / "runs")],
                            env=prefect_server, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().splitlines()[-1] == "FAILED", result.stdout + result.stderr
    flow_runs = api_post(prefect_server, "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["one-shard-nokey"]}}})
    task_runs = api_post(prefect_server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_runs[0]["id"]]}}})
    assert len(task_runs) == 1 and task_runs[0]["state_type"] == "FAILED"
    assert task_runs[0]["run_count"] == 1  # BackendError is a UserError: no retry
    assert "CROWDLAB_WORKER_KEY" in task_runs[0]["state"]["message"]
