"""The experiments tests' base config (its persona file comes from tests/conftest.py)."""

from __future__ import annotations

import copy
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


def with_field(cfg: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of ``cfg`` with the field at a dotted path (list items by index:
    ``scenario.questions.0.prompt``) set to ``value``: one bad value per case."""
    cfg = copy.deepcopy(cfg)
    node: Any = cfg
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[leaf] = value
    return cfg
