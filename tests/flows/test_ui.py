"""`crowdlab ui` (what `make ui` runs): server + UI, deployments and a worker, stopped by Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from crowdlab.flows.ui import prefect_environment, ui_prefect_home, wait_healthy

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_ui_has_its_own_prefect_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The UI's server never shares the SQLite database of the CLI's PREFECT_HOME."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "cli-home"))
    monkeypatch.delenv("CROWDLAB_UI_PREFECT_HOME", raising=False)
    home = ui_prefect_home(tmp_path / "checkout")
    assert home == tmp_path / "checkout" / ".prefect" / "ui"
    env = prefect_environment("http://127.0.0.1:1/api", home)
    assert env["PREFECT_HOME"] == str(home) != os.environ["PREFECT_HOME"] and home.is_dir()
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:1/api"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".prefect/ui/prefect.db"], cwd=REPO_ROOT)
    assert ignored.returncode == 0, "the UI's database must be git-ignored"
    monkeypatch.setenv("CROWDLAB_UI_PREFECT_HOME", str(tmp_path / "elsewhere"))
    assert ui_prefect_home(tmp_path / "checkout") == tmp_path / "elsewhere"


@pytest.mark.prefect
@pytest.mark.slow
def test_crowdlab_ui_serves_the_ui_with_deployments_and_a_worker(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "cli-home"),
           "CROWDLAB_UI_PREFECT_HOME": str(tmp_path / "ui-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "crowdlab.flows.cli", "ui", "--port", str(port)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(api, timeout_s=120)
        deadline = time.monotonic() + 120
        names: set[str] = set()
        workers: list[dict] = []
        while time.monotonic() < deadline:
            deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
            names = {d["name"] for d in deployments}
            workers = httpx.post(f"{api}/work_pools/crowdlab/workers/filter", json={}, timeout=10).json()
            if {"experiment", "report"} <= names and workers and workers[0]["status"] == "ONLINE":
                break
            time.sleep(1)
        assert {"experiment", "report"} <= names
        assert workers and workers[0]["status"] == "ONLINE"
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert "Prefect UI: " in output and "Traceback" not in output
    assert f"export PREFECT_API_URL=http://127.0.0.1:{port}/api\n" in output
    # the server's database lives in the UI's own home, not in the CLI's
    assert list((tmp_path / "ui-home").glob("*.db")) and not list((tmp_path / "cli-home").glob("*.db"))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{api}/health", timeout=2)
