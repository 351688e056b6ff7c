"""The analysis notebook runs as shipped on what `make demo` writes, and on any run through its
papermill-style parameter cell, in a kernel running the venv's python started in notebooks/: a
beauty contest (its own sections beside the answer-field ones) and a declared game (the answer
fields read from the run's schema, by condition, by persona attribute, against human data)."""

from __future__ import annotations

import inspect
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "experiment.ipynb"
DEMO_CONFIG = REPO / "experiments" / "configs" / "demo.yaml"
INTERVIEW_CONFIG = REPO / "experiments" / "configs" / "public_goods_interview.yaml"
LLM_KINDS = {"vllm", "openai", "transformers"}


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
        parts.append(out.get("data", {}).get("text/html", ""))
        parts.append(out.get("data", {}).get("text/markdown", ""))
    return "\n".join(parts)


def _parameters_cell(nb) -> int:
    [index] = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    return index


def _execute(notebook: Path, parameters: dict[str, str] | None = None) -> tuple[object, str]:
    """Execute like Jupyter (kernel started in the notebook's folder); parameters as papermill
    injects them, in a cell right after the one tagged "parameters"."""
    nb = nbformat.read(notebook, as_version=4)
    if parameters:
        source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
        nb.cells.insert(_parameters_cell(nb) + 1, nbformat.v4.new_code_cell(source))
    NotebookClient(nb, kernel_name="python3", timeout=240,
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    return nb, "\n".join(_text(cell) for cell in nb.cells if cell.cell_type == "code")


def _demo_config(n: int) -> dict:
    """The shipped demo config at a small size; an LLM model beside the baseline is played by the
    dummy backend under the same label (the test has no model weights), so the run keeps the demo's
    shape: its experiment name, game, rounds and models."""
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    config["population"]["n"] = n
    for model in config.get("models") or []:
        if model["backend"]["kind"] in LLM_KINDS:
            model["backend"] = {"kind": "dummy", "latency_s": 0.0}
    if (config.get("backend") or {}).get("kind") in LLM_KINDS:
        config["backend"] = {"kind": "dummy", "latency_s": 0.0}
    config["population"]["spec"] = str(REPO / config["population"]["spec"])
    return config


def test_default_run_is_the_folder_make_demo_writes(monkeypatch, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    namespace: dict = {}
    exec(nb.cells[_parameters_cell(nb)].source, namespace)
    assert not Path(namespace["RUN"]).is_absolute()
    assert "\tcrowdlab demo" in (REPO / "Makefile").read_text().replace("$(BIN)/", "")
    # what `crowdlab demo` (the Makefile's target) passes on: config, run id and runs root
    from crowdlab.flows import cli

    seen: dict = {}

    def capture(*args, **kwargs):
        seen.update(inspect.signature(original).bind(*args, **kwargs).arguments)
        raise SystemExit(0)

    original = cli._run
    monkeypatch.setattr(cli, "_run", capture)
    monkeypatch.chdir(REPO)
    CliRunner().invoke(cli.app, ["demo"])
    experiment = yaml.safe_load(Path(seen["config"]).read_text())["experiment"]
    assert Path(seen["runs_root"]) / experiment / seen["run_id"] == Path(namespace["RUN"])


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_notebook_runs_as_shipped_on_the_demo_run(tmp_path):
    """A copy of the checkout's layout (pyproject.toml, data/, notebooks/) holding a demo run
    where `make demo` puts it: the notebook, unchanged and without parameters, finds and reads it."""
    from crowdlab.experiments import run

    checkout = tmp_path / "checkout"
    (checkout / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", checkout / "pyproject.toml")
    shutil.copy(NOTEBOOK, checkout / "notebooks" / NOTEBOOK.name)
    nb_default = {}
    exec(nbformat.read(NOTEBOOK, as_version=4).cells[_parameters_cell(nbformat.read(NOTEBOOK, as_version=4))].source,
         nb_default)
    result = run(_demo_config(n=150), run_id="demo", runs_root=checkout / "data" / "runs")
    assert result.run_dir == checkout / nb_default["RUN"]

    nb, outputs = _execute(checkout / "notebooks" / NOTEBOOK.name)
    assert f"run folder: {result.run_dir}" in outputs
    printed = dict(line.split(": ", 1) for line in outputs.splitlines() if line.startswith("kernel "))
    assert printed["kernel prefix"] == sys.prefix  # the venv, not a system python
    assert os.path.abspath(printed["kernel python"]) == os.path.abspath(sys.executable)
    models = {m["label"] for m in yaml.safe_load(DEMO_CONFIG.read_text()).get("models") or []}
    line = next(line for line in outputs.splitlines() if line.startswith("models: "))
    assert models <= set(line.removeprefix("models: ").split(", "))
    assert "nagel1995_pooled" in outputs  # the demo plays p = 2/3 (0.6667): compared with Nagel (1995)
    assert "p-beauty contest: yes" in outputs and "skipped" not in outputs
    assert "no declared answer fields" in outputs  # the built-in game stores its guess in `value`
    assert "no interviews in this run" in outputs
    images = [out for cell in nb.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) >= 4


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_notebook_parameters_papermill_style(engine_run, tmp_path):
    """Another run through the parameter cell: a 2 x 2 design with replicates, given by absolute path."""
    nb, outputs = _execute(NOTEBOOK, {"RUN": str(engine_run)})
    assert f"run folder: {engine_run}" in outputs
    assert "r1" in outputs and "nagel1995_pooled" in outputs and "mannwhitney_p" in outputs
    assert "no human data" not in outputs  # p in {1/2, 2/3}: both games have human data


@pytest.mark.slow
def test_a_missing_run_says_what_to_do(tmp_path):
    with pytest.raises(Exception) as err:
        _execute(NOTEBOOK, {"RUN": "data/runs/no/such-run"})
    assert "does not exist: run `make demo`" in str(err.value)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_notebook_on_a_declared_game(tmp_path):
    """The shipped public-goods interview config on the formula baseline (40 agents, 2 rounds):
    every answer field and interview field is named, tabled per round and by a persona attribute,
    set beside the human reference row of its game (Ledyard 1995), and the beauty-contest
    sections say they are skipped."""
    from crowdlab.experiments import run

    config = yaml.safe_load(INTERVIEW_CONFIG.read_text())
    config["population"].update({"n": 40, "spec": str(REPO / config["population"]["spec"])})
    config["scenario"]["interview"]["sample"] = {"n": 8}
    config.update({"rounds": 2, "shard_size": 40})
    result = run(config, run_id="pg", runs_root=tmp_path / "runs")

    nb, outputs = _execute(NOTEBOOK, {"RUN": str(result.run_dir), "ATTRIBUTES": ["education"]})
    assert f"run folder: {result.run_dir}" in outputs
    assert "p-beauty contest: no" in outputs and "answer fields: contribution, reasoning" in outputs
    tables = "\n".join(out.get("data", {}).get("text/html", "") for cell in nb.cells for out in cell.get("outputs", []))
    for field in ("contribution", "reasoning"):  # the overview, the per-round tables, the figures
        assert f"<td>{field}</td>" in tables
        assert f"{field} (" in outputs  # its section heading: name (type): question
    assert "integer in [0, 20]" in outputs and "reasoning, at most 300 characters" in outputs
    assert "attributes: education" in outputs and "by education" in outputs
    assert "ledyard1995" in outputs and "Ledyard, J. (1995)" in outputs  # the human reference row
    for field in ("motive", "trust", "explanation"):  # the interview's fields (formula baseline: no_prompts)
        assert field in outputs
    assert "no_prompts: 8" in outputs
    assert outputs.count("not a p-beauty contest") == 6  # every beauty-contest section, skipped
    images = [out for cell in nb.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) >= 3  # mean per round, contribution per round, by education
