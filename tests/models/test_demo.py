"""The demo's shape without model weights: the shipped demo.yaml puts an LLM beside the baseline;
`crowdlab run` prints a round table per model and the report puts each model beside the human
data. The LLM is played by the dummy backend under its label here (tests/llm/test_smollm2.py
runs the real model)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from crowdlab.analysis import fidelity, load, round_metrics
from crowdlab.analysis.model_fidelity import model_fidelity

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "experiments" / "configs" / "demo.yaml"


def test_demo_config_puts_smollm2_beside_the_baseline() -> None:
    config = yaml.safe_load(DEMO.read_text())
    kinds = {m["label"]: m["backend"]["kind"] for m in config["models"]}
    assert kinds == {"smollm2-135m": "vllm", "cognitive-hierarchy": "behavioral"}
    llm = config["models"][0]["backend"]
    assert llm["model"] == "data/models/smollm2-135m-instruct"
    from crowdlab.experiments import load_config
    from crowdlab.experiments.scenarios import make_scenario

    loaded = load_config(DEMO)
    # the shipped sampling settings never cut an answer off
    assert loaded.sampling.max_tokens >= make_scenario(loaded.scenario).max_answer_tokens()


def _small_demo(tmp_path: Path) -> Path:
    config = yaml.safe_load(DEMO.read_text())
    config["population"] = {**config["population"], "n": 60, "spec": str(REPO / config["population"]["spec"])}
    config["models"][0]["backend"] = {"kind": "dummy", "latency_s": 0.0}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_prints_rounds_per_model_and_report_compares_each_with_humans(tmp_path: Path) -> None:
    from crowdlab.flows.cli import app

    result = CliRunner().invoke(app, ["run", str(_small_demo(tmp_path)), "--no-prefect", "--run-id", "t",
                                      "--runs-root", str(tmp_path / "runs"), "--report"])
    assert result.exit_code == 0, result.output
    by_model = result.output.split("rounds by model", 1)[1]
    rows = [line.split() for line in by_model.splitlines() if line.startswith("c000")]
    assert len(rows) == 2 * 3  # two models x three rounds
    assert sorted(r[3] for r in rows) == ["cognitive-hierarchy"] * 3 + ["smollm2-135m"] * 3
    assert all(r[4] == "30" and r[5] == "0" for r in rows)  # n and invalid per model and round
    assert all(len(line) <= 80 for line in by_model.splitlines())  # fits a piped 80-column log

    run_dir = tmp_path / "runs" / "demo" / "t"
    run = load(run_dir)
    table = model_fidelity(run, fidelity(round_metrics(run)))
    assert set(table["model"]) == {"smollm2-135m", "cognitive-hierarchy"}
    assert set(table["dataset"]) >= {"nagel1995_pooled"}
    decisions = run.read_decisions(["round", "model", "value", "valid"])
    ch = decisions[(decisions["model"] == "cognitive-hierarchy") & (decisions["round"] == 1) & decisions["valid"]]
    row = table[(table["model"] == "cognitive-hierarchy") & (table["round"] == 1)].iloc[0]
    assert row["sim_mean"] == ch["value"].mean()
    assert row["mean_diff"] == row["sim_mean"] - row["human_mean"]
    html = (run_dir / "report.html").read_text()
    assert "Each model against human data" in html and "smollm2-135m" in html


def test_single_model_runs_have_no_per_model_rows(tmp_path: Path) -> None:
    from crowdlab.experiments import load_config, run as run_experiment

    config = load_config(REPO / "experiments" / "configs" / "baseline.yaml",
                         {"population.n": 50, "rounds": 1,
                          "population.spec": str(REPO / "data/populations/general_adult.yaml")})
    result = run_experiment(config, run_id="t", runs_root=tmp_path)
    assert model_fidelity(result.run_dir, fidelity(round_metrics(result.run_dir))).empty
    assert isinstance(model_fidelity(result.run_dir, pd.DataFrame()), pd.DataFrame)
