"""`crowdlab run` on a config with `population.backgrounds`: one pipeline, population ->
experiment -> analysis, in one run folder, with and without Prefect, resumable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from crowdlab import experiments

REPO_ROOT = Path(__file__).resolve().parents[2]
CROWDLAB = [sys.executable, "-m", "crowdlab.flows.cli"]
SPEC = str(REPO_ROOT / "data/populations/backgrounds_demo.yaml")
N = 20


def pipeline_config(**changes: object) -> dict:
    """20 personas, echo backgrounds in 3 shards, P5 (self-description) played by the dummy LLM
    stand-in, which renders real prompts and records them in the run's prompt audit."""
    config = {
        "experiment": "pipe",
        "population": {"spec": SPEC, "n": N, "seed": 1, "backgrounds": {"backend": {"kind": "echo"}, "shard_size": 8}},
        "scenario": {"kind": "beauty_contest", "variant": "P5"},
        "backend": {"kind": "dummy", "latency_s": 0.0},
        "rounds": 2,
        "shard_size": 10,
        "seed": 5,
    }
    config.update(changes)
    return config


def write_config(tmp_path: Path, **changes: object) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline_config(**changes)), encoding="utf-8")
    return path


def run_cli(args: list[str], env: dict[str, str] | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CROWDLAB + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def population_mtimes(run_dir: Path) -> dict[str, int]:
    pop = run_dir / "population"
    return {str(p.relative_to(pop)): p.stat().st_mtime_ns for p in pop.rglob("*.parquet")}


def check_run_folder(run_dir: Path, report: bool = True) -> None:
    """The population with its backgrounds, the decisions, prompts that carry the backgrounds, the report."""
    population = pq.read_table(run_dir / "population" / "personas.parquet")
    assert population.num_rows == N
    assert {"background", "background_consistent", "background_tries"} <= set(population.column_names)
    assert all(population.column("background_consistent").to_pylist())
    assert len(list((run_dir / "population" / "shards").glob("shard-*.parquet"))) == 3
    # The experiment played exactly that table.
    played = pq.read_table(run_dir / "personas" / "personas.parquet")
    assert played.column("background").to_pylist() == population.column("background").to_pylist()
    assert ds.dataset(run_dir / "decisions", format="parquet").count_rows() == 2 * N
    messages = ds.dataset(run_dir / "prompt_messages", format="parquet").to_table().column("content").to_pylist()
    backgrounds = set(population.column("background").to_pylist())
    assert sum(any(b in m for b in backgrounds) for m in messages) >= N  # P5's "About you" is the background
    assert (run_dir / "report.html").is_file() == report
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["config"]["population"]["backgrounds"]["shard_size"] == 8


def test_pipeline_without_prefect_generates_plays_reports_and_resumes(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    runs = tmp_path / "runs"
    result = run_cli(["run", str(config), "--run-id", "local", "--runs-root", str(runs), "--no-prefect"], None, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = runs / "pipe" / "local"
    check_run_folder(run_dir)
    assert "report:" in result.stdout and "report.html" in result.stdout.replace("\n", "")

    before = population_mtimes(run_dir)
    again = run_cli(["run", str(config), "--run-id", "local", "--runs-root", str(runs), "--no-prefect"], None, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert population_mtimes(run_dir) == before  # no background written again
    assert ds.dataset(run_dir / "decisions", format="parquet").count_rows() == 2 * N


def _interrupt_population(run_dir: Path, keep_shards: int) -> None:
    """Make the population folder look like a generation killed after ``keep_shards`` shards."""
    pop = run_dir / "population"
    for path in sorted((pop / "shards").glob("shard-*.parquet"))[keep_shards:]:
        path.unlink()
    (pop / "personas.parquet").unlink()
    manifest = json.loads((pop / "manifest.json").read_text())
    manifest["status"] = "running"
    (pop / "manifest.json").write_text(json.dumps(manifest))


def test_interrupted_population_resumes_with_only_the_missing_shards(tmp_path: Path) -> None:
    """Killed while generating (no run manifest yet), and killed in a prepare (status preparing):
    the same run id keeps the shards already written and writes only the others."""
    runs = tmp_path / "runs"
    run_dir = experiments.run(pipeline_config(), run_id="cut", runs_root=runs).run_dir
    first = population_mtimes(run_dir)

    # 1. Killed in the population stage: the run folder holds only population/ (1 of 3 shards).
    for item in run_dir.iterdir():
        if item.name != "population":
            subprocess.run(["rm", "-rf", str(item)], check=True)
    _interrupt_population(run_dir, keep_shards=1)
    experiments.run(pipeline_config(), run_id="cut", runs_root=runs)
    second = population_mtimes(run_dir)
    assert second["shards/shard-00000.parquet"] == first["shards/shard-00000.parquet"]
    assert second["shards/shard-00001.parquet"] != first["shards/shard-00001.parquet"]
    check_run_folder(run_dir, report=False)

    # 2. Killed in a prepare (status preparing): prepared again, the population kept.
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["status"] = "preparing"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    _interrupt_population(run_dir, keep_shards=2)
    experiments.run(pipeline_config(), run_id="cut", runs_root=runs)
    third = population_mtimes(run_dir)
    assert third["shards/shard-00001.parquet"] == second["shards/shard-00001.parquet"]
    assert third["shards/shard-00002.parquet"] != second["shards/shard-00002.parquet"]
    check_run_folder(run_dir, report=False)


def test_another_population_under_the_same_run_id_is_regenerated_with_overwrite(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_dir = experiments.run(pipeline_config(), run_id="ow", runs_root=runs).run_dir
    with pytest.raises(experiments.ConfigError, match="run_id"):
        experiments.run(pipeline_config(seed=6), run_id="ow", runs_root=runs)
    assert pq.read_table(run_dir / "population" / "personas.parquet").num_rows == N  # nothing lost
    changed = pipeline_config()
    changed["population"] = {**changed["population"], "seed": 2}
    experiments.run(changed, run_id="ow", runs_root=runs, overwrite=True)
    assert json.loads((run_dir / "population" / "manifest.json").read_text())["seed"] == 2
    assert pq.read_table(run_dir / "personas" / "personas.parquet").equals(
        pq.read_table(run_dir / "population" / "personas.parquet"))


def test_the_plan_counts_the_background_calls() -> None:
    from crowdlab.experiments.plan import make_plan

    plan = make_plan(experiments.validate_config(pipeline_config()))
    backgrounds = plan.stages[0]
    assert backgrounds.stage == "backgrounds" and backgrounds.kind == "echo" and not backgrounds.llm
    assert backgrounds.calls == 2 * N  # a writer and a reader call per persona, one try each
    assert any("at most 120" in note for note in plan.notes)  # the gate's 3 tries
    assert [s.stage for s in make_plan(experiments.validate_config(pipeline_config(population={
        "spec": SPEC, "n": N}))).stages] == ["decisions"]


def _no_background_spec(tmp_path: Path, description: bool) -> Path:
    spec = {"name": "plain", "attributes": [{"name": "age", "kind": "uniform", "low": 18, "high": 80, "integer": True}]}
    if description:
        spec["attributes"].append({"name": "description", "kind": "template", "template": "aged {age}"})
    path = tmp_path / f"plain_{description}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.mark.parametrize("case", ["spec_without_background", "p5_without_description", "personas_file",
                                  "missing_backend_file", "missing_model_folder", "backend_without_kind"])
def test_bad_pipeline_input_is_one_line_before_any_work(tmp_path: Path, case: str) -> None:
    population = pipeline_config()["population"]
    expected, says = "population.backgrounds", ""
    if case == "spec_without_background":
        population = {**population, "spec": str(_no_background_spec(tmp_path, description=True))}
        says = "no background: section"
    elif case == "p5_without_description":  # neither backgrounds nor a description column for P5
        population = {"spec": str(_no_background_spec(tmp_path, description=False)), "n": N}
        expected, says = "scenario.variant", "description"
    elif case == "personas_file":
        population = {"personas": str(tmp_path / "p.parquet"), "backgrounds": {}}
        says = "needs 'spec'"
    elif case == "missing_backend_file":
        population = {**population, "backgrounds": {"backend": str(tmp_path / "nope.yaml")}}
        expected, says = "population.backgrounds.backend", "file not found"
    elif case == "missing_model_folder":
        population = {**population, "backgrounds": {"backend": {"kind": "vllm", "model": str(tmp_path / "no-model")}}}
        expected, says = "population.backgrounds.backend", "no-model"
    else:
        population = {**population, "backgrounds": {"backend": {"model": "x"}}}
        expected, says = "population.backgrounds.backend", "kind"
    config = write_config(tmp_path, population=population)
    runs = tmp_path / "runs"
    result = run_cli(["run", str(config), "--run-id", "bad", "--runs-root", str(runs), "--no-prefect"], None, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}:") and says in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not runs.exists()  # nothing written


def _spec_without_description(tmp_path: Path) -> str:
    """backgrounds_demo without its templated description: P5 then has only the backgrounds."""
    spec = yaml.safe_load(Path(SPEC).read_text(encoding="utf-8"))
    spec["attributes"] = [a for a in spec["attributes"] if a["name"] != "description"]
    path = tmp_path / "no_description.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return str(path)


def test_p5_plays_the_backgrounds_when_the_population_has_no_description(tmp_path: Path) -> None:
    config = pipeline_config(population={**pipeline_config()["population"], "spec": _spec_without_description(tmp_path)})
    run_dir = experiments.run(config, run_id="nodesc", runs_root=tmp_path / "runs").run_dir
    population = pq.read_table(run_dir / "population" / "personas.parquet")
    assert "description" not in population.column_names
    assert ds.dataset(run_dir / "decisions", format="parquet").count_rows() == 2 * N
    users = [m for m in ds.dataset(run_dir / "prompt_messages", format="parquet").to_table().column("content")
             .to_pylist() if "About you: " in m]
    assert {b for b in population.column("background").to_pylist() if any(b in m for m in users)} \
        == set(population.column("background").to_pylist())


def test_p5_stops_naming_the_column_when_a_background_failed_the_gate_and_no_description(tmp_path: Path) -> None:
    """Every text comes back empty (the gate flags all): nothing to show, and no description to fall back on."""
    population = {**pipeline_config()["population"], "spec": _spec_without_description(tmp_path),
                  "backgrounds": {"backend": {"kind": "echo", "empty_rate": 1.0}, "shard_size": 8}}
    config = write_config(tmp_path, population=population)
    runs = tmp_path / "runs"
    result = run_cli(["run", str(config), "--run-id", "gate", "--runs-root", str(runs), "--no-prefect"], None, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: population:") and "'description' column" in lines[0], lines
    assert "Traceback" not in result.stdout + result.stderr
    assert not list((runs / "pipe" / "gate").glob("decisions/**/*.parquet"))  # no decision written


def api_post(env: dict[str, str], path: str, body: dict) -> list[dict]:
    response = httpx.post(f"{env['PREFECT_API_URL']}{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


@pytest.mark.prefect
@pytest.mark.slow
def test_pipeline_through_prefect_runs_three_subflows_links_the_report_and_resumes(
        prefect_server: dict[str, str], tmp_path: Path) -> None:
    config = write_config(tmp_path)
    runs = tmp_path / "runs"
    result = run_cli(["run", str(config), "--run-id", "srv", "--runs-root", str(runs)], prefect_server, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    run_dir = runs / "pipe" / "srv"
    check_run_folder(run_dir)
    assert "report.html" in result.stdout.replace("\n", "")

    flow_runs = api_post(prefect_server, "/flow_runs/filter", {"limit": 200})
    pipeline = [fr for fr in flow_runs if fr["name"] == "pipe/srv" and fr["parameters"].get("config_path") == str(config)
                and "overrides" in fr["parameters"] and "report" not in fr["parameters"]]
    assert pipeline and pipeline[0]["state_type"] == "COMPLETED"
    flows = {f["id"]: f["name"] for f in api_post(prefect_server, "/flows/filter", {"limit": 200})}
    children = [fr for fr in flow_runs if fr.get("parent_task_run_id")]
    child_flows = {flows[fr["flow_id"]] for fr in children if fr["state_type"] == "COMPLETED"}
    assert {"crowdlab-personas", "crowdlab-experiment", "crowdlab-analysis"} <= child_flows
    assert flows[pipeline[0]["flow_id"]] == "crowdlab-pipeline"

    artifacts = api_post(prefect_server, "/artifacts/filter",
                         {"artifacts": {"key": {"any_": ["report-pipe-srv", "run-folder-pipe-srv"]}}, "limit": 10})
    links = {a["key"]: a["data"] for a in artifacts}
    assert (run_dir / "report.html").resolve().as_uri() in links["report-pipe-srv"]
    assert run_dir.resolve().as_uri() in links["run-folder-pipe-srv"]

    before = population_mtimes(run_dir)
    again = run_cli(["run", str(config), "--run-id", "srv", "--runs-root", str(runs)], prefect_server, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert population_mtimes(run_dir) == before  # resumed: no background call made again
    assert ds.dataset(run_dir / "decisions", format="parquet").count_rows() == 2 * N
