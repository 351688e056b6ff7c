"""Failures a user can cause: one line on stderr, ``error: <field>: <problem>``, exit code 2,
nothing written; and a prepare killed half way does not block its run id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import yaml
from typer.testing import CliRunner

from crowdlab.experiments import ConfigError, prepare_run, run
from crowdlab.flows.cli import app

REPO_ROOT = Path(__file__).resolve().parents[2]
CROWDLAB = [sys.executable, "-m", "crowdlab.flows.cli"]
runner = CliRunner()


def write_config(tmp_path: Path, **changes: Any) -> Path:
    config: dict[str, Any] = {
        "experiment": "clean",
        "population": {"spec": str(REPO_ROOT / "data/populations/general_adult.yaml"), "n": 60, "seed": 1},
        "scenario": {"kind": "beauty_contest"},
        "backend": {"kind": "behavioral"},
        "rounds": 1,
        "shard_size": 30,
    }
    config.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


# --- usage errors: every command, one line naming the parameter --------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["personas", "sample", "x.yaml", "-n", "ten", "-o", "p.parquet"], "error: n: "),
    (["personas", "sample", "x.yaml", "-n", "5", "--seed", "1.5", "-o", "p.parquet"], "error: seed: "),
    (["personas", "sample", "x.yaml", "-n", "5"], "error: out: missing; give -o / --out"),
    (["personas", "describe"], "error: path: missing"),
    (["run"], "error: config: missing"),
    (["run", "c.yaml", "--set", "rounds"], "error: set: expected KEY=VALUE"),
    (["run", "c.yaml", "--bogus"], "error: --bogus: "),
    (["report", "--nope"], "error: --nope: "),
])
def test_usage_errors_are_one_line_with_exit_code_2(args: list[str], expected: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert one_error_line(result.stderr).startswith(expected), result.stderr
    assert result.stdout == ""
    assert "╭" not in result.output and "Usage:" not in result.output  # no typer box


def test_usage_error_from_the_installed_command_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(CROWDLAB + ["personas", "sample", "x.yaml", "-n", "ten", "-o", "p.parquet"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert one_error_line(result.stderr).startswith("error: n: ")
    assert result.stdout == ""


# --- errors found by the library ---------------------------------------------------------------

def test_run_error_goes_to_stderr_unwrapped_and_keeps_brackets(tmp_path: Path) -> None:
    """A long message with `[low, high]` in it, piped: one line, brackets kept, nothing on stdout."""
    spec = tmp_path / ("a-spec-with-a-long-name-so-the-message-is-far-wider-than-any-terminal-" * 2 + "spec.yaml")
    spec.write_text("name: wide\nattributes:\n  - {name: x, kind: normal, mean: 0, std: 1, low: 50, high: 60}\n")
    config = write_config(tmp_path, population={"spec": str(spec), "n": 10, "seed": 0})
    result = subprocess.run(CROWDLAB + ["run", str(config), "--no-prefect", "--runs-root", str(tmp_path / "runs")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert len(line) > 120  # not wrapped at 120 columns
    assert "[low, high]" in line and line.startswith("error: population.spec: ")
    assert result.stdout == ""
    assert not (tmp_path / "runs").exists()


def test_run_id_clash_names_the_cli_flag(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    runs = tmp_path / "runs"
    first = runner.invoke(app, ["run", str(config), "--no-prefect", "--run-id", "r1", "--runs-root", str(runs)])
    assert first.exit_code == 0, first.output
    before = {p: p.stat().st_mtime_ns for p in files_under(runs)}
    clash = runner.invoke(app, ["run", str(config), "--no-prefect", "--run-id", "r1", "--runs-root", str(runs),
                                "--set", "rounds=2"])
    assert clash.exit_code == 2
    line = one_error_line(clash.stderr)
    assert line.startswith("error: run_id: ") and "--overwrite" in line and "overwrite=True" not in line
    assert {p: p.stat().st_mtime_ns for p in files_under(runs)} == before  # nothing touched
    # The library keeps its own wording.
    with pytest.raises(ConfigError, match=r"overwrite=True"):
        prepare_run(yaml.safe_load(config.read_text()) | {"rounds": 2}, run_id="r1", runs_root=runs)


def test_missing_model_path_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    config = write_config(tmp_path, backend={"kind": "vllm", "model": str(tmp_path / "no-such-model")})
    result = subprocess.run(CROWDLAB + ["run", str(config), "--no-prefect", "--runs-root", str(tmp_path / "runs")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert line.startswith("error: backend: ") and "no-such-model" in line and "does not exist" in line
    assert not (tmp_path / "runs").exists()


def test_empty_api_key_variable_is_one_line_before_anything_is_written(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROWDLAB_EMPTY_KEY", "")
    config = write_config(tmp_path, backend={"kind": "openai", "model": "m", "base_urls": ["http://127.0.0.1:9/v1"],
                                             "api_key_env": "CROWDLAB_EMPTY_KEY"})
    result = runner.invoke(app, ["run", str(config), "--no-prefect", "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith("error: backend: ") and "CROWDLAB_EMPTY_KEY" in line and "empty" in line
    assert not (tmp_path / "runs").exists()


def test_runs_root_that_cannot_be_written_fails_before_sampling(tmp_path: Path) -> None:
    """A runs root whose parent is a regular file cannot be created, even by root."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = write_config(tmp_path)
    result = runner.invoke(app, ["run", str(config), "--no-prefect", "--runs-root", str(blocker / "runs")])
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith("error: runs_root: ") and "a-file" in line
    with pytest.raises(ConfigError, match="runs_root"):
        run(yaml.safe_load(config.read_text()), runs_root=blocker / "runs")


def test_unwritable_runs_root_on_a_read_only_file_system(tmp_path: Path) -> None:
    """/proc refuses new files whoever asks: the probe writes, so it is not fooled by running as root."""
    config = write_config(tmp_path)
    result = runner.invoke(app, ["run", str(config), "--no-prefect", "--runs-root", "/proc/crowdlab-runs"])
    assert result.exit_code == 2
    assert one_error_line(result.stderr).startswith("error: runs_root: cannot write to /proc")


@pytest.mark.parametrize("command", ["sample", "generate"])
def test_personas_output_that_cannot_be_written_fails_before_sampling(tmp_path: Path, command: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "pop" / ("p.parquet" if command == "sample" else "folder")
    result = runner.invoke(app, ["personas", command, str(REPO_ROOT / "data/populations/general_adult.yaml"),
                                 "-n", "20", "-o", str(out), *(["--local"] if command == "generate" else [])])
    assert result.exit_code == 2, result.output
    assert one_error_line(result.stderr).startswith("error: out: ")


# --- a prepare killed half way -----------------------------------------------------------------

KILL_AFTER_PERSONAS = textwrap.dedent("""
    import os, signal, sys
    import yaml
    import crowdlab.experiments.prepare as prepare

    real = prepare.write_table_atomic

    def write_then_die(table, path, **kw):
        real(table, path, **kw)
        # a stray temporary file, as a writer killed mid-write leaves one
        open(os.path.join(os.path.dirname(path), ".personas.parquet.x1y2.tmp"), "wb").write(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)

    prepare.write_table_atomic = write_then_die
    prepare.prepare_run(yaml.safe_load(open(sys.argv[1])), run_id="k", runs_root=sys.argv[2])
""")


def test_a_prepare_killed_after_the_personas_resumes_under_the_same_run_id(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    runs = tmp_path / "runs"
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_PERSONAS, str(config), str(runs)],
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    run_dir = runs / "clean" / "k"
    assert (run_dir / "personas" / "personas.parquet").is_file()
    assert list(run_dir.rglob(".*.tmp"))
    if (run_dir / "manifest.json").is_file():
        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "preparing"

    result = run(yaml.safe_load(config.read_text()), run_id="k", runs_root=runs)
    assert result.status == "completed"
    assert ds.dataset(run_dir / "decisions", format="parquet").count_rows() == 60
    assert not list(run_dir.rglob(".*.tmp"))


def test_a_folder_with_only_leftover_temporary_files_is_prepared_again(tmp_path: Path) -> None:
    config = yaml.safe_load(write_config(tmp_path).read_text())
    run_dir = tmp_path / "runs" / "clean" / "k"
    run_dir.mkdir(parents=True)
    (run_dir / ".manifest.json.a1b2.tmp").write_text("{")
    handle = prepare_run(config, run_id="k", runs_root=tmp_path / "runs")
    assert json.loads((Path(handle.run_dir) / "manifest.json").read_text())["status"] == "running"
    assert not list(run_dir.rglob(".*.tmp"))
    # A folder holding someone else's files is still refused.
    other = tmp_path / "runs" / "clean" / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a crowdlab run"):
        prepare_run(config, run_id="other", runs_root=tmp_path / "runs")


def test_resume_removes_temporary_files_a_killed_shard_writer_left(tmp_path: Path) -> None:
    config = yaml.safe_load(write_config(tmp_path).read_text())
    first = run(config, run_id="t", runs_root=tmp_path / "runs")
    shard_dir = next((first.run_dir / "decisions").rglob("shard-*.parquet")).parent
    leftover = shard_dir / ".shard-00001.parquet.k9z8.tmp"
    leftover.write_bytes(b"half a file")
    again = run(config, run_id="t", runs_root=tmp_path / "runs")
    assert again.status == "completed" and not leftover.exists()
    assert ds.dataset(first.run_dir / "decisions", format="parquet").count_rows() == 60


def test_manifest_is_written_with_status_preparing_before_the_personas(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import crowdlab.experiments.prepare as prepare

    seen: list[str] = []
    real = prepare.write_table_atomic

    def spy(table, path, **kw):  # type: ignore[no-untyped-def]
        manifest = Path(path).parents[1] / "manifest.json"
        seen.append(json.loads(manifest.read_text())["status"] if manifest.is_file() else "none")
        return real(table, path, **kw)

    monkeypatch.setattr(prepare, "write_table_atomic", spy)
    prepare_run(yaml.safe_load(write_config(tmp_path).read_text()), run_id="s", runs_root=tmp_path / "runs")
    assert seen == ["preparing"]
    assert os.path.isfile(tmp_path / "runs" / "clean" / "s" / "manifest.json")
