"""The experiments tests' base config (its persona file comes from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def base_config(personas_path: Path) -> dict[str, Any]:
    return {
        "experiment": "test",
        "population": {"personas": str(personas_path)},
        "scenario": {"kind": "beauty_contest"},
        "backend": {"kind": "behavioral"},
        "rounds": 3,
        "shard_size": 250,
        "seed": 7,
    }
