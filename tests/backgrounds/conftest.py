"""Shared helpers for the backgrounds tests: the demo spec and small spec builders."""

from __future__ import annotations

from pathlib import Path

import pytest

from crowdlab.personas import load_spec, parse_spec

DEMO = Path(__file__).resolve().parents[2] / "data" / "populations" / "backgrounds_demo.yaml"


@pytest.fixture(scope="session")
def demo_spec():
    return load_spec(DEMO)


def small_spec(**extra):
    """age / occupation / education / city, plus whatever sections are passed."""
    data = {
        "name": "small",
        "attributes": [
            {"name": "age", "kind": "uniform", "low": 18, "high": 80, "integer": True},
            {"name": "occupation", "kind": "categorical", "percentages": {"student": 20, "nurse": 30, "professor": 10, "retired": 40}},
            {"name": "education", "kind": "categorical", "percentages": {"high school": 50, "master's degree": 30, "doctorate": 20}},
            {"name": "sex", "kind": "categorical", "percentages": {"male": 50, "female": 50}},
            {"name": "city", "kind": "identity", "field": "city", "locale": "en_US"},
        ],
    }
    data.update(extra)
    return parse_spec(data)


@pytest.fixture(scope="session")
def make_spec():
    """The small_spec builder, as a fixture (test modules cannot import conftest)."""
    return small_spec
