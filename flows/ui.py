"""`crowdlab ui`: a local Prefect server with the UI, crowdlab's deployments and a worker.

Everything here drives Prefect's own CLI (server, work pool, deploy, worker) in subprocesses, so
what a newcomer gets from `make ui` is exactly what they would type by hand.

The server keeps its database under its own ``PREFECT_HOME`` (``.prefect/ui`` in the checkout,
git-ignored; ``CROWDLAB_UI_PREFECT_HOME`` moves it), never the one CLI runs use for their
temporary API: two processes writing one SQLite file gave "database is locked" errors. CLI runs
that should appear in the UI talk to the server instead (``export PREFECT_API_URL=...``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

WORK_POOL = "crowdlab"
PREFECT = str(Path(sys.executable).with_name("prefect"))
#: Where the UI's server keeps its database, relative to the checkout (override: CROWDLAB_UI_PREFECT_HOME).
UI_PREFECT_HOME = Path(".prefect") / "ui"


class UIError(RuntimeError):
    """The local Prefect stack could not be brought up; the message says which step failed."""


def ui_prefect_home(project_root: Path) -> Path:
    """The UI server's own PREFECT_HOME: $CROWDLAB_UI_PREFECT_HOME or ``<checkout>/.prefect/ui``."""
    override = os.environ.get("CROWDLAB_UI_PREFECT_HOME")
    return Path(override).expanduser() if override else project_root / UI_PREFECT_HOME


def prefect_environment(api_url: str | None = None, prefect_home: Path | None = None) -> dict[str, str]:
    """The environment of the server, deploy and worker subprocesses (``prefect_home`` replaces
    any PREFECT_HOME this process has, so the UI never shares the CLI's database)."""
    env = dict(os.environ)
    if prefect_home is not None:
        prefect_home.mkdir(parents=True, exist_ok=True)
        env["PREFECT_HOME"] = str(prefect_home)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_LOGGING_LEVEL", "INFO")  # flow-run logs show in the UI
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def wait_healthy(api_url: str, timeout_s: float = 120.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise UIError(f"the Prefect server exited with code {proc.returncode} before it was healthy")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise UIError(f"the Prefect server at {api_url} was not healthy after {timeout_s:.0f} s")


def _prefect(args: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run([PREFECT, *args], env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise UIError(f"`prefect {' '.join(args)}` failed:\n{result.stdout}\n{result.stderr}".strip())
    return result.stdout


def register(project_root: Path, env: dict[str, str]) -> None:
    """Create the process work pool (if missing) and deploy everything in prefect.yaml."""
    pools = _prefect(["work-pool", "ls"], env, project_root)
    if WORK_POOL not in pools:
        _prefect(["work-pool", "create", WORK_POOL, "--type", "process"], env, project_root)
    _prefect(["--no-prompt", "deploy", "--all"], env, project_root)


def start_worker(project_root: Path, env: dict[str, str], log_path: Path | None = None) -> subprocess.Popen[bytes]:
    out = log_path.open("ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen([PREFECT, "worker", "start", "--pool", WORK_POOL], env=env, cwd=project_root,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def local_stack(project_root: Path, host: str = "127.0.0.1", port: int = 4200,
                logs: Path | None = None) -> Iterator[str]:
    """Server + registered deployments + one worker; yields the UI's URL and stops all on exit."""
    api_url = f"http://{host}:{port}/api"
    env = prefect_environment(api_url, ui_prefect_home(project_root))
    logs = logs or project_root / "data" / "ui-logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([PREFECT, "server", "start", "--host", host, "--port", str(port)], env=env,
                              cwd=project_root, stdout=(logs / "server.log").open("ab"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    worker: subprocess.Popen[bytes] | None = None
    try:
        wait_healthy(api_url, proc=server)
        register(project_root, env)
        worker = start_worker(project_root, env, logs / "worker.log")
        yield f"http://{host}:{port}"
    finally:
        if worker is not None:
            stop(worker)
        stop(server)
