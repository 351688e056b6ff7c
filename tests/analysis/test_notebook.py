"""The analysis notebook executes end to end on a small engine run, in a kernel running the venv's python."""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "beauty_contest.ipynb"


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
        parts.append(out.get("data", {}).get("text/html", ""))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_notebook_executes_on_an_engine_run(engine_run, monkeypatch, tmp_path):
    monkeypatch.setenv("CROWDLAB_RUN", str(engine_run))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "\n".join(_text(cell) for cell in nb.cells if cell.cell_type == "code")
    printed = dict(line.split(": ", 1) for line in outputs.splitlines() if line.startswith("kernel "))
    assert printed["kernel prefix"] == sys.prefix  # the venv, not a system python
    assert os.path.abspath(printed["kernel python"]) == os.path.abspath(sys.executable)
    assert "r1" in outputs and "nagel1995_pooled" in outputs and "mannwhitney_p" in outputs
    images = [out for cell in nb.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) >= 4
