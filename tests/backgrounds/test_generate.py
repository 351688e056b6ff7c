"""Shard files, resume, the final table and its metadata; bad input fails before any file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from crowdlab.flows.cli import app
from crowdlab.personas import SpecError, sample
from crowdlab.personas.backgrounds.generate import FINAL, generate, load_plan, plan_generation

ECHO = {"kind": "echo", "corrupt_rate": 0.3}


def test_generate_writes_shards_and_a_table_equal_to_sampling(demo_spec, tmp_path: Path) -> None:
    path = generate(demo_spec, 2500, 3, tmp_path, backend=ECHO, shard_size=700)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [f"shard-0000{i}.parquet" for i in range(4)]
    table = pq.read_table(path)
    assert table.num_rows == 2500 and table["agent_id"].to_pylist() == list(range(2500))
    assert table.select(sample(demo_spec, 2500, 3).column_names).equals(sample(demo_spec, 2500, 3))
    meta = json.loads(table.schema.metadata[b"crowdlab.personas.background"])
    assert meta["prompt_version"] == "v1" and meta["backend"]["backend"] == "echo"
    assert meta["contradiction_rate"]["before_regeneration"] > meta["contradiction_rate"]["after_regeneration"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["background"]["contradiction_rate"] == meta["contradiction_rate"]


def test_resume_skips_finished_shards_and_duplicates_nothing(demo_spec, tmp_path: Path) -> None:
    first = pq.read_table(generate(demo_spec, 2000, 3, tmp_path, backend=ECHO, shard_size=500))
    shards = sorted((tmp_path / "shards").iterdir())
    (tmp_path / FINAL).unlink()
    shards[2].unlink()  # as if the run died while writing shard 2
    stamps = {p: p.stat().st_mtime_ns for p in shards if p.exists()}
    seen: list[tuple[int, int]] = []
    again = pq.read_table(generate(demo_spec, 2000, 3, tmp_path, backend=ECHO, shard_size=500, on_shard=lambda d, t: seen.append((d, t))))
    assert seen == [(4, 4)]  # only the missing shard ran
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert again.equals(first)
    assert not [p for p in (tmp_path / "shards").iterdir() if p.name.startswith(".")]  # no temp files left


def test_resume_into_a_folder_of_another_generation_is_refused(demo_spec, tmp_path: Path) -> None:
    plan_generation(demo_spec, 100, 1, tmp_path, 50, ECHO)
    with pytest.raises(SpecError, match=r"out: .* holds a different generation .*seed"):
        plan_generation(demo_spec, 100, 2, tmp_path, 50, ECHO)
    assert load_plan(tmp_path).seed == 1


def test_bad_input_fails_before_any_file(make_spec, tmp_path: Path) -> None:
    no_backend = make_spec(background={"mention": ["age"]})
    with pytest.raises(SpecError, match="background.backend: no backend"):
        plan_generation(no_backend, 100, 1, tmp_path / "a")
    infeasible = make_spec(constraints=[{"name": "nobody", "then": {"age": {"gt": 100}}}], max_passes=3)
    with pytest.raises(SpecError, match=r"constraints\[0\] \(nobody\)"):
        plan_generation(infeasible, 100, 1, tmp_path / "b")
    bad_kind = make_spec(background={"mention": ["age"], "backend": {"kind": "nonsense"}})
    with pytest.raises(SpecError, match="background.backend: invalid backend config"):
        plan_generation(bad_kind, 100, 1, tmp_path / "c")
    assert not any(tmp_path.iterdir())


def test_cli_generate_local_and_bad_backend_file(tmp_path: Path) -> None:
    spec = Path(__file__).resolve().parents[2] / "data" / "populations" / "backgrounds_demo.yaml"
    runner = CliRunner()
    result = runner.invoke(app, ["personas", "generate", str(spec), "-n", "300", "-o", str(tmp_path / "out"), "--shard-size", "100", "--local"])
    assert result.exit_code == 0, result.output
    assert "contradiction rate" in result.output and (tmp_path / "out" / FINAL).exists()
    bad = tmp_path / "backend.yaml"
    bad.write_text("model: x\n")
    result = runner.invoke(app, ["personas", "generate", str(spec), "-n", "300", "-o", str(tmp_path / "o2"), "--backend", str(bad)])
    assert result.exit_code == 2 and "must be a mapping with a kind" in result.output
    assert not (tmp_path / "o2").exists()


@pytest.mark.slow
@pytest.mark.prefect
def test_flow_runs_one_task_per_shard_and_resumes(tmp_path: Path, prefect_server: dict[str, str]) -> None:
    """`crowdlab personas generate` as a Prefect flow on a real server: one task per shard, resumable."""
    spec = Path(__file__).resolve().parents[2] / "data" / "populations" / "backgrounds_demo.yaml"
    backend = tmp_path / "echo.yaml"
    backend.write_text(yaml.safe_dump(ECHO))
    out = tmp_path / "pop"
    cmd = [sys.executable, "-m", "crowdlab.flows.cli", "personas", "generate", str(spec), "-n", "900", "--seed", "2",
           "-o", str(out), "--shard-size", "300", "--backend", str(backend)]
    first = subprocess.run(cmd, env=prefect_server, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Traceback" not in first.stdout + first.stderr
    table = pq.read_table(out / FINAL)

    flow_runs = httpx.post(f"{prefect_server['PREFECT_API_URL']}/flow_runs/filter", json={"limit": 50}, timeout=30).json()
    ours = [fr for fr in flow_runs if fr["parameters"].get("out_dir") == str(out)]
    assert len(ours) == 1 and ours[0]["state_type"] == "COMPLETED"
    task_runs = httpx.post(f"{prefect_server['PREFECT_API_URL']}/task_runs/filter",
                           json={"flow_runs": {"id": {"any_": [ours[0]["id"]]}}}, timeout=30).json()
    assert sorted(t["name"] for t in task_runs if t["name"].startswith("shard-")) == [
        "shard-00000", "shard-00001", "shard-00002"]

    (out / "shards" / "shard-00001.parquet").unlink()
    os.remove(out / FINAL)
    again = subprocess.run(cmd, env=prefect_server, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert pq.read_table(out / FINAL).equals(table)


def test_unreachable_targets_are_warned_once_per_generation(make_spec, tmp_path: Path, caplog) -> None:
    import logging

    rule = [{"name": "retired_very_old", "if": {"occupation": {"in": ["retired"]}}, "then": {"age": {"ge": 70}}}]
    spec = make_spec(constraints=rule)
    with caplog.at_level(logging.WARNING, logger="crowdlab.personas"):
        path = generate(spec, 3000, 2, tmp_path, shard_size=500)  # six shards
    warned = [r.getMessage() for r in caplog.records if "from its target" in r.getMessage()]
    assert warned and len(warned) == len({m.split(" keep ")[1].split(" ")[0] for m in warned})  # once per attribute
    assert "attainable" in warned[0]
    assert pq.read_table(path).select(sample(spec, 3000, 2).column_names).equals(sample(spec, 3000, 2))
