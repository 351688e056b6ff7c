"""Invalid answers are counted by cause: one cause per decision row, counts per rounds row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.experiments import run
from crowdlab.experiments.schema import INVALID_CAUSES
from crowdlab.experiments.settle_step import cause_counts


def test_every_cause_is_counted_per_round_and_group(base_config: dict, tmp_path: Path) -> None:
    cfg = dict(base_config, rounds=2, max_failed_share=0.5,
               scenario={"kind": "beauty_contest", "variant": "P6", "groups": 2},
               backend={"kind": "dummy", "latency_s": 0, "garbage_rate": 0.1, "out_of_range_rate": 0.1,
                        "failure_rate": 0.1})
    result = run(cfg, run_id="causes", runs_root=tmp_path)
    d = result.decisions()
    errors = pc.fill_null(d["error"], "").to_pylist()
    causes = [e.split(":")[0] for e in errors if e]
    assert set(causes) == {"unparseable", "out_of_range", "backend_error"}  # the vocabulary, nothing else
    assert all(e.startswith("backend_error: ") for e in errors if e.startswith("backend_error"))
    rounds = result.rounds()
    assert {f"n_{c}" for c in INVALID_CAUSES} <= set(rounds.column_names)
    for row in rounds.to_pylist():
        mine = d.filter(pc.equal(d["round"], row["round"]))
        if row["group"] >= 0:
            mine = mine.filter(pc.equal(mine["group"], row["group"]))
        mine_errors = pc.fill_null(mine["error"], "").to_pylist()
        for cause in INVALID_CAUSES:
            assert row[f"n_{cause}"] == sum(e.startswith(cause) for e in mine_errors), (row, cause)
        assert sum(row[f"n_{c}"] for c in INVALID_CAUSES) == row["n_invalid"]
        assert row["n_truncated"] == 0  # the dummy backend never cuts an answer off


def test_cause_counts_by_group_and_pooled() -> None:
    decisions = pa.table({
        "group": pa.array([0, 0, 1, 1, 1], pa.int32()),
        "error": ["truncated", None, "unparseable", "backend_error: boom", "truncated"],
    })
    out = cause_counts(decisions, np.array([0, 1, -1]))
    assert out["n_truncated"].to_pylist() == [1, 1, 2]
    assert out["n_unparseable"].to_pylist() == [0, 1, 1]
    assert out["n_backend_error"].to_pylist() == [0, 1, 1]
    assert out["n_out_of_range"].to_pylist() == [0, 0, 0]
