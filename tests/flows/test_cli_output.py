"""Terminal output for people (issue 12, item 17): 80 columns when piped, a plain message when
resuming finished work, and no third-party warnings without ``-v``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def _crowdlab(*args: str, cwd: Path = REPO_ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """The real entry point with piped output, as `crowdlab ... | tee log` runs it."""
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    environ.update({"COLUMNS": "80", **env})
    code = "import sys; from crowdlab.flows.cli import main; sys.argv[0] = 'crowdlab'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=300)


def _assert_fits(text: str, width: int = 80) -> None:
    for line in text.splitlines():
        assert len(line) <= width, f"{len(line)} columns: {line!r}"
    assert "…" not in text, "a column was cut short"


@pytest.fixture(scope="module")
def small_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two variants x two ratios (4 conditions), 60 behavioural agents, 2 rounds, 2 shards."""
    root = tmp_path_factory.mktemp("cli-output")
    config = {
        "experiment": "cli_output",
        "population": {"spec": str(REPO_ROOT / "data/populations/general_adult.yaml"), "n": 60, "seed": 1},
        "scenario": {"kind": "beauty_contest", "p": 0.6667},
        "backend": {"kind": "behavioral"},
        "rounds": 2, "shard_size": 30, "seed": 5,
        "design": {"factors": {"scenario.variant": ["P1", "P2"], "scenario.p": [0.5, 0.6667]}},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_run_fits_80_columns_and_resuming_a_finished_run_says_nothing_to_do(small_config: Path) -> None:
    runs = small_config.parent / "runs"
    first = _crowdlab("run", str(small_config), "--run-id", "r1", "--runs-root", str(runs), "--no-prefect")
    assert first.returncode == 0, first.stderr
    _assert_fits(first.stdout)
    assert "c003  variant=P2, p=0.6667" in first.stdout  # what each condition id stands for
    assert "nothing to do" not in first.stdout
    again = _crowdlab("run", str(small_config), "--run-id", "r1", "--runs-root", str(runs), "--no-prefect")
    assert again.returncode == 0, again.stderr
    # 4 conditions x 1 replicate x 2 rounds x 2 shards
    assert again.stdout.lstrip().startswith("nothing to do: 16/16 shards done")
    _assert_fits(again.stdout)


def test_resume_message_counts_settled_rounds_and_written_shards(small_config: Path, tmp_path: Path) -> None:
    from crowdlab import experiments
    from crowdlab.experiments.storage import decision_path, round_part_path
    from crowdlab.flows.run_status import resume_message

    config = experiments.load_config(small_config)
    assert resume_message(config, None, tmp_path) is None
    assert resume_message(config, "r9", tmp_path) is None  # a new run
    run_dir = experiments.run(config, run_id="r9", runs_root=tmp_path).run_dir
    assert resume_message(config, "r9", tmp_path) == "nothing to do: 16/16 shards done"
    # a kill after one shard of the last round: that round is not settled, one of its shards is written
    round_part_path(run_dir, "c003", 0, 2).unlink()
    decision_path(run_dir, "c003", 0, 2, 1).unlink()
    assert resume_message(config, "r9", tmp_path) == "resuming: 15/16 shards done"
    other = experiments.load_config(small_config, {"rounds": 3})
    assert resume_message(other, "r9", tmp_path) is None  # another config: no resume


@pytest.mark.slow
def test_report_fits_80_columns(small_config: Path) -> None:
    runs = small_config.parent / "runs-report"
    made = _crowdlab("run", str(small_config), "--run-id", "r1", "--runs-root", str(runs), "--no-prefect")
    assert made.returncode == 0, made.stderr
    out = _crowdlab("report", str(runs / "cli_output" / "r1"))
    assert out.returncode == 0, out.stderr
    _assert_fits(out.stdout)
    assert "95% CI" in out.stdout and "c002  variant=P2, p=0.5" in out.stdout
    assert "report: " in out.stdout


@pytest.mark.slow
def test_personas_describe_fits_80_columns(tmp_path: Path) -> None:
    sampled = tmp_path / "p.parquet"
    made = _crowdlab("personas", "sample", "data/populations/backgrounds_demo.yaml", "-n", "300", "--seed", "1",
                     "-o", str(sampled))
    assert made.returncode == 0, made.stderr
    out = _crowdlab("personas", "describe", str(sampled))
    assert out.returncode == 0, out.stderr
    _assert_fits(out.stdout)
    assert "occupation" in out.stdout


QUIET_PROBE = textwrap.dedent("""
    import logging, sys, warnings
    from crowdlab.flows.quiet import quiet_libraries
    quiet_libraries(verbose=sys.argv[1] == "-v")
    logging.basicConfig(level=logging.WARNING)
    # what vLLM's dispatcher triggers in torch, raised from torch's module name
    warnings.warn_explicit("`torch.distributed.reduce_op` is deprecated", FutureWarning,
                           "torch/distributed/__init__.py", 1, module="torch.distributed")
    warnings.warn_explicit("setuptools noise", UserWarning, "setuptools/__init__.py", 1, module="setuptools")
    logging.getLogger("vllm.triton_utils.importing").warning("Triton is installed, but ...")
    warnings.warn("crowdlab: a warning of our own", UserWarning)
""")


def test_third_party_warnings_hidden_unless_verbose() -> None:
    def probe(flag: str) -> str:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONWARNINGS", "VLLM_LOGGING_LEVEL", "TORCH_CPP_LOG_LEVEL")}
        done = subprocess.run([sys.executable, "-c", QUIET_PROBE, flag], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr

    quiet, verbose = probe(""), probe("-v")
    assert "reduce_op" in verbose and "setuptools noise" in verbose and "Triton" in verbose
    assert "reduce_op" not in quiet and "setuptools noise" not in quiet and "Triton" not in quiet
    assert "a warning of our own" in quiet  # crowdlab's own warnings are never hidden


@pytest.mark.slow
def test_run_of_a_declared_game_prints_its_answer_field_not_the_beauty_contest_table(tmp_path: Path) -> None:
    """A dictator game's run ends with its `give` field per round: no `p=nan, offset=nan`
    condition line and no empty target/winner columns of the beauty contest."""
    done = _crowdlab("run", str(REPO_ROOT / "experiments/configs/dictator.yaml"), "--set", "population.n=40",
                     "--runs-root", str(tmp_path), "--no-prefect")
    assert done.returncode == 0, done.stderr
    _assert_fits(done.stdout)
    assert "give per round" in done.stdout
    assert "nan" not in done.stdout and "target" not in done.stdout


@pytest.mark.slow
def test_run_of_a_one_number_scenario_prints_its_rounds_and_outcomes(tmp_path: Path) -> None:
    """The opinion scenario answers one number (the stance) and settles its own outcomes: the run
    ends with both tables, in 80 columns."""
    done = _crowdlab("run", str(REPO_ROOT / "experiments/configs/opinion_dynamics.yaml"), "--set",
                     "population.n=300", "--set", "rounds=2", "--runs-root", str(tmp_path), "--no-prefect")
    assert done.returncode == 0, done.stderr
    _assert_fits(done.stdout)
    assert "answers per round" in done.stdout and "assortativity" in done.stdout
