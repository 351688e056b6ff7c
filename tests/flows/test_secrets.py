"""A real key pasted where it should not be never reaches the run folder, the logs or Prefect's
database; one pasted into ``api_key_env`` is refused without being echoed.

The endpoint is the fake OpenAI server of tests/llm/test_openai_errors.py (a thread in this
process); `crowdlab run` runs as a user runs it, through the session's Prefect server.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CROWDLAB = [sys.executable, "-m", "crowdlab.flows.cli"]
KEY = "sk-live-4c1d8e0b7a9f2e6d3c5b8a1f0e9d7c6b"

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def _fake_server_class() -> Any:
    spec = importlib.util.spec_from_file_location("openai_fakes", REPO_ROOT / "tests/llm/test_openai_errors.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.FakeServer


@pytest.fixture
def server():
    fake = _fake_server_class()()
    yield fake
    fake.close()


def holders(root: Path, secret: str) -> list[str]:
    """Files under ``root`` whose bytes contain the secret (or its base64 in a Basic header)."""
    needles = [secret.encode(), base64.b64encode(f"user:{secret}".encode())]
    return [str(p) for p in root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


def write_config(tmp_path: Path, backend: dict[str, Any]) -> Path:
    config = {
        "experiment": "secrets",
        "population": {"spec": str(REPO_ROOT / "data/populations/general_adult.yaml"), "n": 40, "seed": 2},
        "scenario": {"kind": "beauty_contest"},
        "backend": backend,
        "rounds": 1,
        "shard_size": 20,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_keys_in_urls_bodies_and_overrides_stay_out_of_files_logs_and_prefect(
        server: Any, prefect_server: dict[str, str], tmp_path: Path) -> None:
    port = server.url.split(":")[-1].split("/")[0]
    backend = {
        "kind": "openai", "model": "m", "api_key_env": "CROWDLAB_SECRET_KEY",
        "base_urls": [f"http://user:{KEY}@127.0.0.1:{port}/v1"],
        "extra_body": {"api_key": KEY, "metadata": {"Authorization": f"Bearer {KEY}", "team": "lab"}},
        "max_retries": 1, "backoff_initial_s": 0.01,
    }
    config = write_config(tmp_path, backend)
    env = dict(prefect_server, CROWDLAB_SECRET_KEY=KEY)
    runs = tmp_path / "runs"
    result = subprocess.run(CROWDLAB + ["-v", "run", str(config), "--run-id", "s1", "--runs-root", str(runs),
                                        "--set", f"backend.extra_body.x_token={KEY}"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    # The key was really used: in the URL (httpx sends it as Basic auth) and in the body.
    assert len(server.bodies) == 40
    basic = base64.b64encode(f"user:{KEY}".encode()).decode()
    assert {h["Authorization"] for h in server.headers} == {f"Basic {basic}"}
    assert all(b["api_key"] == KEY and b["x_token"] == KEY for b in server.bodies)

    run_dir = runs / "secrets" / "s1"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stored = manifest["config"]["backend"]
    assert stored["api_key_env"] == "CROWDLAB_SECRET_KEY"  # a variable's name is not a secret
    assert stored["extra_body"]["api_key"] == "<redacted>" and stored["extra_body"]["metadata"]["team"] == "lab"
    assert stored["base_urls"] == [f"http://<redacted>@127.0.0.1:{port}/v1"]

    assert holders(run_dir, KEY) == []
    assert KEY not in result.stdout + result.stderr  # -v: library and Prefect logs included
    assert "INFO" in result.stderr
    assert holders(Path(prefect_server["PREFECT_HOME"]), KEY) == []  # database, WAL, logs


def test_a_key_pasted_into_api_key_env_is_refused_without_echo(tmp_path: Path) -> None:
    backend = {"kind": "openai", "model": "m", "base_urls": ["http://127.0.0.1:9/v1"], "api_key_env": KEY}
    config = write_config(tmp_path, backend)
    runs = tmp_path / "runs"
    for extra in ([], ["--set", f"backend.api_key_env={KEY}"]):
        cfg = config if not extra else write_config(tmp_path, dict(backend, api_key_env="OPENAI_API_KEY"))
        result = subprocess.run(CROWDLAB + ["run", str(cfg), "--runs-root", str(runs), *extra],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: backend.api_key_env: "), result.stderr
        assert "NAME of an environment variable" in lines[0]
        assert KEY not in result.stdout + result.stderr
        assert not runs.exists()


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "HF_TOKEN", "my_key_var", "CROWDLAB_TEST_KEY"])
def test_ordinary_variable_names_are_accepted(name: str) -> None:
    from crowdlab.experiments.backends.openai_compat import OpenAIBackendConfig

    assert OpenAIBackendConfig(model="m", base_urls=["http://x/v1"], api_key_env=name).api_key_env == name


@pytest.mark.parametrize("value", [KEY, "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345", "gsk_abc",
                                   "AbCdEf0123456789GhIjKlMnOpQr", "Bearer abc", "key with spaces"])
def test_key_shaped_values_are_refused(value: str) -> None:
    from pydantic import ValidationError

    from crowdlab.experiments.backends.openai_compat import OpenAIBackendConfig

    with pytest.raises(ValidationError) as err:
        OpenAIBackendConfig(model="m", base_urls=["http://x/v1"], api_key_env=value)
    assert value not in str(err.value.errors()[0]["msg"])


def test_failures_against_a_url_with_credentials_never_show_them(caplog: pytest.LogCaptureFixture) -> None:
    """Error rows (stored in the decisions' error column), warnings and httpx's own request log."""
    import logging

    import numpy as np

    from crowdlab.experiments.backends.base import RequestBatch
    from crowdlab.experiments.backends.openai_compat import OpenAIBackendConfig

    backend = OpenAIBackendConfig(model="m", base_urls=[f"http://user:{KEY}@127.0.0.1:9/v1"], max_retries=1,
                                  backoff_initial_s=0.01, extra_body={"token": KEY}).build()
    batch = RequestBatch(agent_ids=np.arange(3), seeds=np.arange(3),
                         messages=[[{"role": "user", "content": "hi"}]] * 3)
    with caplog.at_level(logging.DEBUG):
        out = backend.generate(batch)
    assert all(e and "127.0.0.1:9" in e for e in out.errors)
    assert KEY not in json.dumps(out.errors) and KEY not in caplog.text
    assert KEY not in json.dumps(backend.describe())
