"""End-to-end runs: files as in docs/contracts.md, resume after a kill, shard invariance,
invalid-answer accounting, mixed models."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from crowdlab.experiments import ShardFailedError, finish_run, prepare_run, run, run_shard, settle_round

VOLATILE = ["run_id", "latency_s", "shard"]


def decision_rows(run_dir: Path, drop: list[str] = VOLATILE) -> pa.Table:
    table = ds.dataset(run_dir / "decisions", format="parquet").to_table()
    table = table.drop_columns([c for c in drop if c in table.column_names])
    return table.sort_by([("condition_id", "ascending"), ("replicate", "ascending"),
                          ("round", "ascending"), ("agent_id", "ascending")])


def test_run_writes_the_contracted_layout(base_config: dict, tmp_path: Path) -> None:
    cfg = dict(base_config, design={"factors": {"scenario.variant": ["P1", "P5"]}, "replicates": 2})
    calls: list[tuple[int, int]] = []
    result = run(cfg, run_id="r1", runs_root=tmp_path, progress=lambda d, t: calls.append((d, t)))
    run_dir = tmp_path / "test" / "r1"
    assert result.run_dir == run_dir and result.status == "completed"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["n_shards"] == 3
    assert manifest["counts"]["decisions"] == 600 * 3 * 2 * 2 == result.n_decisions
    assert (run_dir / "personas" / "personas.parquet").is_file()
    assert (run_dir / "decisions" / "c001" / "replicate-1" / "round-3" / "shard-00002.parquet").is_file()
    assert calls[-1] == (36, 36)
    decisions = result.decisions()
    assert decisions.num_rows == 7200
    assert decisions.schema.field("scenario.variant").type == pa.string()
    assert set(decisions["model"].to_pylist()) == {"ch-tau1.5"}
    rounds = result.rounds()
    assert rounds.num_rows == 2 * 2 * 3 * 2  # cells x rounds x (group 0 + pooled)
    assert {"winner_ids", "n_invalid", "target", "scenario.variant"} <= set(rounds.column_names)
    pooled = rounds.filter(pc.equal(rounds["group"], -1)).sort_by([("condition_id", "ascending"),
                                                                   ("replicate", "ascending"), ("round", "ascending")])
    means = np.array(pooled["mean"].to_pylist()).reshape(4, 3)
    assert np.all(np.diff(means, axis=1) < 0)  # the CH baseline learns over rounds


def test_shard_count_and_concurrency_do_not_change_results(base_config: dict, tmp_path: Path) -> None:
    a = run(dict(base_config, shard_size=600), run_id="a", runs_root=tmp_path)
    b = run(dict(base_config, shard_size=77, max_concurrent_shards=4), run_id="b", runs_root=tmp_path)
    assert decision_rows(a.run_dir).equals(decision_rows(b.run_dir))
    assert a.rounds().drop_columns(["run_id"]).equals(b.rounds().drop_columns(["run_id"]))


def test_invalid_answers_are_kept_flagged_and_counted(base_config: dict, tmp_path: Path) -> None:
    cfg = dict(base_config, rounds=1, backend={"kind": "dummy", "latency_s": 0, "garbage_rate": 0.1,
                                               "out_of_range_rate": 0.1})
    result = run(cfg, run_id="r", runs_root=tmp_path)
    d = result.decisions()
    assert d.num_rows == 600
    errors = d["error"].to_pylist()
    n_bad = sum(e is not None for e in errors)
    assert errors.count("unparseable") > 20 and errors.count("out_of_range") > 20
    assert all(t for t in d["text"].to_pylist())
    bad_values = d.filter(pc.equal(d["error"], "out_of_range"))["value"].to_numpy()
    assert np.all(bad_values > 100)
    pooled = result.rounds().filter(pc.equal(result.rounds()["group"], -1)).to_pylist()[0]
    assert pooled["n_invalid"] == n_bad == result.n_invalid
    valid_values = d.filter(d["valid"])["value"].to_numpy()
    assert pooled["mean"] == pytest.approx(valid_values.mean())


def test_backend_failures_above_the_tolerance_stop_the_run_without_writing_the_shard(
        base_config: dict, tmp_path: Path) -> None:
    cfg = dict(base_config, rounds=1, shard_size=200,
               backend={"kind": "dummy", "latency_s": 0, "failure_rate": 0.2}, max_failed_share=0.05)
    with pytest.raises(ShardFailedError, match="failed in the backend.*simulated backend failure"):
        run(cfg, run_id="f", runs_root=tmp_path)
    run_dir = tmp_path / "test" / "f"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"
    assert not list((run_dir / "decisions").rglob("*.parquet"))  # nothing partial, nothing lost

    # Tolerating the failures (the share is not part of the config hash) resumes the same run:
    # failed calls become flagged rows, counted as invalid, never dropped.
    result = run(dict(cfg, max_failed_share=0.5), run_id="f", runs_root=tmp_path)
    d = result.decisions()
    assert d.num_rows == 600
    failed = d.filter(pc.equal(d["error"], "backend_error: dummy: simulated backend failure"))
    assert 60 < failed.num_rows < 180 and not pc.any(failed["valid"]).as_py()
    assert result.n_invalid == failed.num_rows
    assert result.throughput["dummy"]["failures"] == failed.num_rows


def test_mixed_models_split_by_share_and_label(base_config: dict, tmp_path: Path) -> None:
    cfg = copy.deepcopy(base_config)
    cfg.pop("backend")
    cfg["models"] = [{"label": "cautious", "backend": {"kind": "behavioral", "tau": 0.5}, "share": 1},
                     {"label": "deep", "backend": {"kind": "behavioral", "tau": 3}, "share": 1},
                     {"label": "noise", "backend": {"kind": "dummy", "latency_s": 0}, "share": 1}]
    d = run(cfg, run_id="m", runs_root=tmp_path).decisions()
    r1 = d.filter(pc.equal(d["round"], 1))
    labels = r1["model"].to_numpy(zero_copy_only=False)
    assert {k: int((labels == k).sum()) for k in ("cautious", "deep", "noise")} == {"cautious": 200, "deep": 200, "noise": 200}
    vals = r1["value"].to_numpy()
    assert vals[labels == "deep"].mean() < vals[labels == "cautious"].mean()
    by_agent = {a: m for a, m in zip(d["agent_id"].to_pylist(), d["model"].to_pylist())}
    assert len(by_agent) == 600  # an agent keeps its model in every round


def test_step_functions_resume_without_redoing_work(base_config: dict, tmp_path: Path) -> None:
    handle = prepare_run(base_config, run_id="s", runs_root=tmp_path)
    cid, rep = handle.cells[0]
    first = run_shard(handle.run_dir, cid, rep, 1, 0)
    assert not first.skipped and first.n == 250
    again = run_shard(handle.run_dir, cid, rep, 1, 0)
    assert again.skipped
    with pytest.raises(RuntimeError, match="missing"):
        settle_round(handle.run_dir, cid, rep, 1)
    for s in range(1, handle.n_shards):
        run_shard(handle.run_dir, cid, rep, 1, s)
    settled = settle_round(handle.run_dir, cid, rep, 1)
    assert settled.n == 600 and not settled.skipped
    assert settle_round(handle.run_dir, cid, rep, 1).skipped
    with pytest.raises(RuntimeError, match="not settled"):
        finish_run(handle.run_dir)


SCRIPT = """
import sys, json
from crowdlab.experiments import run
cfg = json.loads(sys.argv[1])
run(cfg, run_id=sys.argv[2], runs_root=sys.argv[3])
"""


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted_run(base_config: dict, tmp_path: Path) -> None:
    cfg = dict(base_config, shard_size=50, backend={"kind": "dummy", "latency_s": 0.02, "concurrency": 10,
                                                      "garbage_rate": 0.05})
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(cfg), "killed", str(tmp_path)],
                            env={**os.environ, "PYTHONHASHSEED": "0"})
    round2 = tmp_path / "test" / "killed" / "decisions" / "c000" / "replicate-0" / "round-2"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(round2.glob("shard-*.parquet"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(list(round2.glob("shard-*.parquet")))
    assert 3 <= written < 12, "the kill should land mid-round 2"
    manifest = json.loads((tmp_path / "test" / "killed" / "manifest.json").read_text())
    assert manifest["status"] == "running"

    resumed = run(cfg, run_id="killed", runs_root=tmp_path)
    clean = run(cfg, run_id="clean", runs_root=tmp_path)
    assert resumed.n_decisions == clean.n_decisions == 600 * 3
    assert decision_rows(resumed.run_dir).equals(decision_rows(clean.run_dir))
    assert resumed.rounds().drop_columns(["run_id"]).equals(clean.rounds().drop_columns(["run_id"]))
    assert json.loads((resumed.run_dir / "manifest.json").read_text())["attempts"] == 2
