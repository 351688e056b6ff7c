"""Shared helpers for the personas tests."""

from __future__ import annotations

from pathlib import Path

import pytest

POPULATIONS = Path(__file__).resolve().parents[2] / "data" / "populations"


@pytest.fixture(scope="session")
def populations() -> Path:
    return POPULATIONS
