"""One real local Ray cluster for the whole session, with 4 logical GPUs on the CPU machine.

Ray's ``num_gpus`` is only a resource count, so logical GPUs let the GPU placement logic run
here; engine actors ask ``num_cpus=0`` so that more of them than cores can start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # inherited by the actors' worker processes
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


LOGICAL_GPUS = 4
VOLATILE = ["run_id", "latency_s", "shard"]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, float]]:
    import ray

    ray.init(num_cpus=2, num_gpus=LOGICAL_GPUS, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


@pytest.fixture
def base_config(personas_path: Path) -> dict[str, Any]:
    return {
        "experiment": "ray_test",
        "population": {"personas": str(personas_path)},
        "scenario": {"kind": "beauty_contest"},
        "backend": {"kind": "behavioral"},
        "rounds": 3,
        "shard_size": 50,
        "seed": 7,
    }


def _decision_rows(run_dir: Path, drop: list[str] = VOLATILE) -> pa.Table:
    """Every decision of a run, in a canonical order, without the columns that may differ."""
    table = ds.dataset(run_dir / "decisions", format="parquet").to_table()
    table = table.drop_columns([c for c in drop if c in table.column_names])
    return table.sort_by([("condition_id", "ascending"), ("replicate", "ascending"),
                          ("round", "ascending"), ("agent_id", "ascending")])


@pytest.fixture
def decision_rows():  # type: ignore[no-untyped-def]
    return _decision_rows
