"""Small hand-built persona tables and configs shared by the experiments tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from crowdlab.parquet_io import write_table_atomic

EDUCATION = ["high school", "bachelor's", "doctoral"]


def persona_table(n: int) -> pa.Table:
    ids = np.arange(n, dtype=np.int64)
    return pa.table({
        "agent_id": ids,
        "education": [EDUCATION[i % 3] for i in range(n)],
        "description": [f"Person {i}, a curious reader." for i in range(n)],
    })


@pytest.fixture
def personas_path(tmp_path: Path) -> Path:
    return write_table_atomic(persona_table(600), tmp_path / "personas.parquet")


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
