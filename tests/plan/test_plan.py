"""`crowdlab plan`: calls per stage, tokens with the model's own tokenizer, shared prefix, wall
time from measured throughput or a table, cost, limits; bad input is one line with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import yaml

from crowdlab.experiments import load_config, run, validate_config
from crowdlab.experiments.plan import (
    ThroughputTable, check_limits, common_prefix, make_plan, measured_throughput, plan_markdown, Price,
)
from crowdlab.experiments.errors import ConfigError

CROWDLAB = [sys.executable, "-m", "crowdlab.flows.cli"]


def _config(personas: Path, backend: dict, **extra) -> dict:
    return {"experiment": "plantest", "population": {"personas": str(personas)},
            "scenario": {"kind": "beauty_contest", "p": "2/3", "variant": "P1"},
            "backend": backend, "sampling": {"max_tokens": 32}, "rounds": 2, "shard_size": 200, "seed": 3, **extra}


def _llm(tiny_model: Path, tiny_engine_options: dict) -> dict:
    return {"kind": "vllm", "model": str(tiny_model), **tiny_engine_options}


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CROWDLAB + args, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_calls_per_stage_without_llm(personas_path: Path, tmp_path: Path) -> None:
    config = validate_config(_config(personas_path, {"kind": "behavioral"},
                                     design={"factors": {"scenario.p": [0.5, "2/3"]}, "replicates": 2}))
    plan = make_plan(config, tmp_path / "runs")
    (stage,) = plan.stages
    assert (plan.conditions, plan.replicates, plan.rounds, plan.n_agents) == (2, 2, 2, 600)
    assert stage.calls == 600 * 2 * 2 * 2 and stage.calls_per_round == 600 * 2 * 2
    assert not stage.llm and stage.prompt_tokens is None and plan.llm_calls == 0
    assert plan.notes[0].startswith("no LLM")
    assert "behavioral (no LLM)" in plan_markdown(plan)
    assert not (tmp_path / "runs").exists()  # planning writes nothing


def test_mixed_models_tokens_prefix_and_table(personas_path: Path, tiny_model: Path, tiny_engine_options: dict,
                                              tmp_path: Path) -> None:
    llm = _llm(tiny_model, tiny_engine_options)
    data = _config(personas_path, None, models=[{"label": "tiny", "backend": llm, "share": 1},
                                                {"label": "ch", "backend": {"kind": "behavioral"}, "share": 2}])
    data.pop("backend")
    config = validate_config(data)
    table = ThroughputTable.model_validate({"models": {"tiny": {"decisions_per_s": 10, "startup_s": 5}}})
    plan = make_plan(config, tmp_path / "runs", throughput=table, price=Price(gpu_hour=3.6))
    tiny = next(s for s in plan.stages if s.model == "tiny")
    assert tiny.llm and tiny.calls == 200 * 2 and plan.llm_calls == 400
    # The tokenizer's own count of the rendered chats (P1 prompts are a few hundred tokens).
    assert 50 < tiny.prompt_tokens_per_call < 2000
    assert tiny.prompt_tokens == pytest.approx(tiny.prompt_tokens_per_call * tiny.calls, rel=1e-3)
    assert 0.3 < tiny.shared_prefix_share < 1  # the rules are shared, the agent's own part is not
    assert tiny.output_tokens_source.startswith("cap") and tiny.output_tokens_cap <= 32
    assert tiny.wall_s == pytest.approx(5 + 400 / 10, abs=0.1)  # the table: start-up + calls / rate
    assert tiny.cost == pytest.approx(tiny.wall_s / 3600 * 3.6, rel=1e-3)
    with pytest.raises(ConfigError, match="max_calls"):
        check_limits(plan, max_calls=399)
    with pytest.raises(ConfigError, match="max_cost"):
        check_limits(plan, max_cost=tiny.cost * 0.9)
    check_limits(plan, max_cost=tiny.cost * 1.1, max_calls=400)
    per_tok = make_plan(config, tmp_path / "runs", throughput=table, price=Price(per_mtok=2.0))
    t2 = next(s for s in per_tok.stages if s.model == "tiny")
    assert t2.cost == pytest.approx((t2.prompt_tokens + t2.output_tokens) / 1e6 * 2.0, rel=1e-3)
    # A table without the model is refused.
    with pytest.raises(ConfigError, match="throughput"):
        make_plan(config, tmp_path / "runs", throughput=ThroughputTable.model_validate({"models": {}}))


def test_common_prefix() -> None:
    assert common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix([[7, 8]]) == 2 and common_prefix([]) == 0


def test_measured_throughput_matches_only_the_same_backend(personas_path: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    backend = {"kind": "dummy", "latency_s": 0.01}
    run(_config(personas_path, dict(backend, label="mine")), run_id="a", runs_root=runs)
    found = measured_throughput(runs, {**backend, "label": "another label"})
    assert found is not None and found.decisions_per_s > 0 and "plantest/a" in found.source
    assert measured_throughput(runs, {"kind": "dummy", "latency_s": 0.02}) is None  # other options
    loose = measured_throughput(runs, {"kind": "dummy", "latency_s": 0.02}, same_options=False)
    assert loose is not None and "other engine options" in loose.source  # the same model, though
    manifest = runs / "plantest" / "a" / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "status": "failed"}))
    assert measured_throughput(runs, backend) is None  # only completed runs count


@pytest.mark.slow
@pytest.mark.vllm
def test_estimate_against_a_real_engine_run(personas_path: Path, tiny_model: Path, tiny_engine_options: dict,
                                            vllm_backend, tmp_path: Path) -> None:
    """The plan's prompt tokens per call are the engine's own count (within 3 %), and after a
    run the plan uses its measured output tokens and throughput."""
    config = validate_config(_config(personas_path, _llm(tiny_model, tiny_engine_options), rounds=2))
    before = make_plan(config, tmp_path / "runs", sample=64)
    result = run(config, run_id="r", runs_root=tmp_path / "runs")
    decisions = ds.dataset(result.run_dir / "decisions", format="parquet").to_table(columns=["input_tokens"])
    measured = float(np.mean(decisions["input_tokens"].to_numpy()))
    (stage,) = before.stages
    assert stage.prompt_tokens_per_call == pytest.approx(measured, rel=0.03)
    after = make_plan(config, tmp_path / "runs")
    (stage,) = after.stages
    assert stage.output_tokens_source == "measured" and stage.wall_s is not None and after.wall_s is not None
    assert "plantest/r" in stage.throughput_source


def test_cli_plan_and_bad_input(personas_path: Path, tiny_model: Path, tiny_engine_options: dict,
                                tmp_path: Path) -> None:
    """One real `crowdlab plan` process; the other cases through the same typer app in this process."""
    from typer.testing import CliRunner

    from crowdlab.flows.cli import app

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_config(personas_path, _llm(tiny_model, tiny_engine_options))))
    runs = tmp_path / "runs"
    ok = _cli(["plan", str(config), "--runs-root", str(runs), "--max-calls", "1200"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    words = " ".join(ok.stdout.split())  # the notes are folded at the terminal's width
    assert "1,200" in words and "no measured throughput" in words
    assert max(len(line) for line in ok.stdout.splitlines()) <= 80  # piped: 80 columns
    runner = CliRunner()
    as_json = runner.invoke(app, ["plan", str(config), "--runs-root", str(runs), "--json"])
    assert as_json.exit_code == 0, as_json.output
    as_json = json.loads(as_json.stdout)
    assert as_json["llm_calls"] == 1200 and as_json["stages"][0]["prompt_tokens_per_call"] > 0
    table = tmp_path / "tp.yaml"
    table.write_text(yaml.safe_dump({"models": {"someone-else": {"decisions_per_s": 3}}}))
    cases = [
        (["--price-gpu-hour", "-2"], "error: price_gpu_hour: must be >= 0"),
        (["--max-calls", "-1"], "error: max_calls: must be >= 0"),
        (["--throughput", str(table)], "error: throughput: the table has no entry for model"),
        (["--max-calls", "1199"], "error: max_calls: the plan makes 1,200 LLM calls, above the limit of 1,199"),
        (["--max-cost", "1"], "error: max_cost: needs a price"),
        (["--max-cost", "1", "--price-gpu-hour", "2"], "error: max_cost: cannot check the cost"),
    ]
    for extra, message in cases:
        bad = runner.invoke(app, ["plan", str(config), "--runs-root", str(runs), *extra])
        assert bad.exit_code == 2, (extra, bad.output)
        lines = [ln for ln in bad.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and lines[0].startswith(message), (extra, bad.stderr)
        assert "Traceback" not in bad.stderr and isinstance(bad.exception, SystemExit)  # a clean exit, no crash
    # `crowdlab run` refuses to start above its limits: nothing is written.
    refused = runner.invoke(app, ["run", str(config), "--no-prefect", "--runs-root", str(runs), "--max-calls", "10"])
    assert refused.exit_code == 2 and "error: max_calls: the plan makes 1,200 LLM calls" in refused.stderr
    assert not runs.exists()


def test_ray_fleet_models_run_in_parallel(personas_path: Path, tiny_model: Path, tiny_engine_options: dict,
                                          tmp_path: Path) -> None:
    llm = _llm(tiny_model, tiny_engine_options)
    data = _config(personas_path, None, models=[{"label": "a", "backend": llm}, {"label": "b", "backend": llm}],
                   dispatch={"kind": "ray", "engines_per_model": 2})
    data.pop("backend")
    table = ThroughputTable.model_validate({"models": {"a": {"decisions_per_s": 10, "startup_s": 5},
                                                       "b": {"decisions_per_s": 5, "startup_s": 5}}})
    plan = make_plan(validate_config(data), tmp_path / "runs", throughput=table)
    a, b = plan.stages
    assert (a.calls, b.calls, a.engines) == (600, 600, 2)
    assert a.wall_s == pytest.approx(5 + 600 / 10 / 2) and b.wall_s == pytest.approx(5 + 600 / 5 / 2)
    assert plan.wall_s == pytest.approx(b.wall_s)  # each model on its own engines: the slower one
    local = make_plan(validate_config({**data, "dispatch": {"kind": "local"}}), tmp_path / "runs", throughput=table)
    assert local.wall_s == pytest.approx(5 + 60 + 5 + 120)  # locally the models take turns on one engine each


@pytest.mark.slow
@pytest.mark.prefect
def test_the_plan_is_the_flows_first_artifact(prefect_server: dict[str, str], personas_path: Path,
                                              tiny_model: Path, tiny_engine_options: dict, tmp_path: Path) -> None:
    """Through a real Prefect server: the experiment flow attaches the plan, keyed per run,
    before any shard runs (a baseline beside a tiny LLM on transformers, so the plan has tokens
    to count without a vLLM engine's worker processes)."""
    import httpx

    tiny = {"kind": "transformers", "model": str(tiny_model), "batch_size": 64}
    data = _config(personas_path, None, rounds=1, shard_size=600, sampling={"max_tokens": 8},
                   models=[{"label": "tiny", "backend": tiny, "share": 1},
                           {"label": "ch", "backend": {"kind": "behavioral"}, "share": 1}])
    data.pop("backend")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    result = subprocess.run(CROWDLAB + ["run", str(config), "--run-id", "p1", "--runs-root", str(tmp_path / "runs")],
                            env=prefect_server, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr

    def post(path: str, body: dict) -> list[dict]:
        response = httpx.post(f"{prefect_server['PREFECT_API_URL']}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    runs = [fr for fr in post("/flow_runs/filter", {"limit": 50}) if fr["parameters"].get("run_id") == "p1"]
    assert runs
    artifacts = post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [runs[0]["id"]]}}, "limit": 100})
    artifacts.sort(key=lambda a: a["created"])
    assert artifacts[0]["key"] == "plantest-p1-plan"  # the first artifact of the run
    text = artifacts[0]["data"]
    assert "## Plan of plantest" in text and "| decisions | tiny | transformers | 300 |" in text
    assert "behavioral (no LLM)" in text


def test_stand_ins_are_timed_by_their_own_config(personas_path: Path, tmp_path: Path) -> None:
    sim = {"kind": "simulated_gpu", "throughput": 100, "fixed_latency_s": 0.5}
    plan = make_plan(validate_config(_config(personas_path, sim)), tmp_path / "runs")
    (stage,) = plan.stages
    assert not stage.llm and stage.calls == 1200
    assert stage.wall_s == pytest.approx(0.5 * 3 * 2 + 1200 / 100)  # 3 shards x 2 rounds, then calls / rate
    dummy = make_plan(validate_config(_config(personas_path, {"kind": "dummy", "latency_s": 2.0})), tmp_path / "runs")
    assert dummy.stages[0].wall_s == pytest.approx(2.0 * 3 * 2)  # one sleep per shard-round


REPO_ROOT = Path(__file__).resolve().parents[2]


def _small_background_spec(tmp_path: Path) -> Path:
    """backgrounds_demo with 5-word backgrounds and one try (a cheap real generation)."""
    spec = yaml.safe_load((REPO_ROOT / "data/populations/backgrounds_demo.yaml").read_text())
    spec["background"]["words"] = 5
    spec["background"]["gate"]["max_tries"] = 1
    path = tmp_path / "bg_spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _pipeline(spec: Path, writer: dict, n: int = 50, **extra) -> dict:
    return {"experiment": "planpipe", "population": {"spec": str(spec), "n": n, "backgrounds": {"backend": writer}},
            "scenario": {"kind": "beauty_contest", "variant": "P5"}, "backend": {"kind": "behavioral"},
            "rounds": 1, "shard_size": 25, **extra}


def test_backgrounds_stage_tokens_time_and_cost(tiny_model: Path, tmp_path: Path) -> None:
    """The backgrounds' model's own tokenizer counts writer and reader prompts; the table's
    backgrounds_per_s times the stage, which adds to the run's wall time and cost."""
    from crowdlab.personas import load_spec

    spec = _small_background_spec(tmp_path)
    writer = {"kind": "transformers", "model": str(tiny_model)}
    config = validate_config(_pipeline(spec, writer))
    table = ThroughputTable.model_validate({"models": {str(tiny_model): {"backgrounds_per_s": 5, "startup_s": 2}}})
    plan = make_plan(config, tmp_path / "runs", throughput=table, price=Price(gpu_hour=3.6), sample=16)
    bg, decisions = plan.stages
    assert (bg.stage, bg.llm, bg.calls, decisions.stage) == ("backgrounds", True, 100, "decisions")
    background = load_spec(spec).background
    cap = -(-(background.token_budget + background.gate.max_tokens) // 2)  # writer and reader calls alike
    assert bg.output_tokens_source.startswith("cap") and bg.output_tokens_cap == cap
    # the writer at its cap, the reader's answer the gate fields as JSON (below its own cap)
    assert background.token_budget / 2 < bg.output_tokens_per_call < cap
    # writer chats carry the persona's facts; reader chats an empty text plus the writer's cap
    assert 50 < bg.prompt_tokens_per_call < 2000
    assert bg.prompt_tokens == pytest.approx(bg.prompt_tokens_per_call * bg.calls, rel=1e-3)
    assert 0.2 < bg.shared_prefix_share < 1  # the two system prompts
    assert bg.wall_s == pytest.approx(2 + 50 / 5) and bg.cost == pytest.approx(bg.wall_s / 3600 * 3.6, rel=1e-2)
    assert plan.wall_s == pytest.approx(bg.wall_s + decisions.wall_s)  # written before any decision
    assert plan.llm_calls == 100 and plan.prompt_tokens == bg.prompt_tokens and plan.cost == bg.cost
    assert "| backgrounds |" in plan_markdown(plan)
    # A table without the backgrounds' model is refused; one without their rate leaves the time unknown.
    with pytest.raises(ConfigError, match="backgrounds' model"):
        make_plan(config, tmp_path / "runs", throughput=ThroughputTable.model_validate({"models": {}}))
    only_decisions = ThroughputTable.model_validate({"models": {str(tiny_model): {"decisions_per_s": 5}}})
    unknown = make_plan(config, tmp_path / "runs", throughput=only_decisions, price=Price(gpu_hour=1))
    assert unknown.stages[0].wall_s is None and unknown.wall_s is None and unknown.cost is None
    with pytest.raises(ConfigError, match="max_cost"):
        check_limits(unknown, max_cost=100)


@pytest.mark.slow
@pytest.mark.vllm
def test_backgrounds_stage_from_an_earlier_generation(tiny_model: Path, tiny_engine_options: dict, vllm_backend,
                                                      tmp_path: Path) -> None:
    """After a real generation with the model (the session's warm engine), the plan times the
    stage from its shards and counts the reader's prompts around the texts it wrote."""
    from crowdlab.experiments.plan import measured_background_throughput
    from crowdlab.personas import load_spec
    from crowdlab.personas.backgrounds import generate as gen

    spec = _small_background_spec(tmp_path)
    writer = _llm(tiny_model, tiny_engine_options)
    runs = tmp_path / "runs"
    config = validate_config(_pipeline(spec, writer, n=12))
    before = make_plan(config, runs).stages[0]
    assert before.wall_s is None and before.output_tokens_source.startswith("cap")
    gen.generate(load_spec(spec), 12, 0, runs / "personas" / "tiny", backend=writer, shard_size=4)
    found = measured_background_throughput(runs, writer)
    assert found is not None and found[0].backgrounds_per_s > 0 and "personas/tiny" in found[0].source
    assert measured_background_throughput(runs, {**writer, "max_model_len": 512}) is None  # other options
    after = make_plan(config, runs)
    bg = after.stages[0]
    assert bg.output_tokens_source == "measured" and bg.wall_s is not None and after.wall_s is not None
    assert bg.wall_s == pytest.approx(found[0].startup_s + 12 / found[0].backgrounds_per_s, abs=0.1)
    assert bg.prompt_tokens_per_call != before.prompt_tokens_per_call  # readers around the real texts


def test_a_p5_plan_shows_the_backgrounds_as_self_descriptions(tiny_model: Path, tmp_path: Path) -> None:
    """P5 on a spec without a description column: the sampled decision prompts carry stand-in
    backgrounds of the spec's length (no earlier generation to take real ones from)."""
    spec = yaml.safe_load((REPO_ROOT / "data/populations/backgrounds_demo.yaml").read_text())
    spec["attributes"] = [a for a in spec["attributes"] if a["name"] != "description"]
    path = tmp_path / "no_description.yaml"
    path.write_text(yaml.safe_dump(spec))
    tiny = {"kind": "transformers", "model": str(tiny_model)}
    data = {**_pipeline(path, {"kind": "echo"}), "backend": tiny}
    p5 = make_plan(validate_config(data), tmp_path / "runs", sample=8)
    p1 = make_plan(validate_config({**data, "scenario": {"kind": "beauty_contest", "variant": "P1"}}),
                   tmp_path / "runs", sample=8)
    (decisions,) = [s for s in p5.stages if s.stage == "decisions"]
    (plain,) = [s for s in p1.stages if s.stage == "decisions"]
    assert decisions.prompt_tokens_per_call > plain.prompt_tokens_per_call + 20  # "About you: <60 words>"
    assert any("stand-ins of 60 words" in note for note in p5.notes)


def test_background_generations_are_timed_from_their_shard_files(tmp_path: Path) -> None:
    """Rate, start-up and shard size of an earlier generation (echo writer: a real folder, fast);
    a folder whose files were touched after it finished (a plain copy) cannot be timed."""
    import os

    from crowdlab.experiments.plan import measured_background_throughput
    from crowdlab.personas import load_spec
    from crowdlab.personas.backgrounds import generate as gen

    runs = tmp_path / "runs"
    echo = {"kind": "echo"}
    out = runs / "personas" / "echo"
    gen.generate(load_spec(_small_background_spec(tmp_path)), 12, 0, out, backend=echo, shard_size=4)
    found = measured_background_throughput(runs, echo)
    assert found is not None and found.shard_size == 4 and len(found.texts) == 12
    assert found.throughput.backgrounds_per_s > 0 and "personas/echo" in found.throughput.source
    assert measured_background_throughput(runs, {"kind": "echo", "corrupt_rate": 0.5}) is None  # another backend
    later = json.loads((out / "manifest.json").read_text())["finished"] + 60
    for shard in (out / "shards").iterdir():
        os.utime(shard, (later, later))
    assert measured_background_throughput(runs, echo) is None
