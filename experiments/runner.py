"""Running a whole experiment from Python: ``run()`` loops over the four step functions.

``prepare_run`` -> for each (condition, replicate), for each round: ``run_shard`` for every
shard (a thread pool of ``max_concurrent_shards``), then ``settle_round`` -> ``finish_run``.
The Prefect flow wraps the same steps as tasks; nothing here needs Prefect.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from crowdlab.experiments.config import ExperimentConfig
from crowdlab.experiments.prepare import RunHandle, prepare_run
from crowdlab.experiments.redaction import redact_text
from crowdlab.experiments.run_context import exit_cleanly_on_sigterm, load_context
from crowdlab.experiments.settle_step import settle_round
from crowdlab.experiments.shard_step import run_shard
from crowdlab.experiments.throughput import summarise
from crowdlab.experiments.storage import ROUNDS, now_iso, read_manifest, round_part_path, write_manifest
from crowdlab.parquet_io import write_table_atomic

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunResult:
    """A finished run: where it is and its headline counts."""

    run_dir: Path
    run_id: str
    experiment: str
    status: str
    n_decisions: int
    n_invalid: int
    wall_s: float
    throughput: dict[str, Any] = field(default_factory=dict)  # per model, as in the manifest

    def rounds(self) -> pa.Table:
        return pq.read_table(self.run_dir / ROUNDS)

    def decisions(self, columns: list[str] | None = None) -> pa.Table:
        return ds.dataset(self.run_dir / "decisions", format="parquet").to_table(columns=columns)


def finish_run(run_dir: str | Path) -> RunResult:
    """Combine the rounds parts into rounds.parquet and mark the manifest completed."""
    path = Path(run_dir)
    manifest = read_manifest(path)
    cells = [(c["condition_id"], r) for c in manifest["conditions"] for r in range(manifest["replicates"])]
    parts = []
    for cid, rep in cells:
        for k in range(1, manifest["rounds"] + 1):
            part = round_part_path(path, cid, rep, k)
            if not part.is_file():
                raise RuntimeError(f"cannot finish: round {k} of {cid}/{rep} is not settled")
            parts.append(pq.read_table(part))
    from crowdlab.experiments.interviews import run_interviews  # interviews read the settled rounds

    n_interviews = run_interviews(path)
    rounds = pa.concat_tables(parts)
    write_table_atomic(rounds, path / ROUNDS)
    pooled = rounds.filter(pc.equal(rounds["group"], -1))
    n_decisions = int(pc.sum(pooled["n"]).as_py() or 0)
    n_invalid = int(pc.sum(pooled["n_invalid"]).as_py() or 0)
    started = manifest["timings"].get("first_started_at") or manifest["timings"].get("started_at")
    manifest["timings"].setdefault("first_started_at", started)
    manifest["timings"]["finished_at"] = now_iso()
    manifest["counts"] = {"decisions": n_decisions, "invalid": n_invalid, "cells": len(cells),
                          "round_rows": rounds.num_rows}
    if n_interviews or (path / "interviews").is_dir():
        manifest["counts"]["interviews"] = _count_interviews(path)
    wall = float(manifest["timings"].get("wall_s", 0.0))
    manifest["throughput"] = summarise(path, wall or None)
    manifest["status"] = "completed"
    write_manifest(path, manifest)
    for label, t in manifest["throughput"].items():
        log.info("model %s: %d decisions, %d failures, %s decisions/s over %d engine(s), %s per engine",
                 label, t["decisions"], t["failures"], t["decisions_per_s"], t["engines"],
                 t["decisions_per_s_per_engine"])
    return RunResult(path, manifest["run_id"], manifest["experiment"], "completed", n_decisions, n_invalid, wall,
                     manifest["throughput"])


def _count_interviews(path: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in (path / "interviews").rglob("*.parquet"))


def _mark(run_dir: Path, status: str, **timings: Any) -> None:
    manifest = read_manifest(run_dir)
    manifest["status"] = status
    manifest["timings"].update(timings)
    write_manifest(run_dir, manifest)


def mark_failed(run_dir: str | Path, exc: BaseException) -> None:
    """Record in the manifest that the run stopped, and why (credentials redacted)."""
    _mark(Path(run_dir), "failed", error=redact_text(f"{type(exc).__name__}: {exc}"))


def execute(handle: RunHandle, progress: Progress | None = None) -> None:
    """Play every shard and settle every round of a prepared run (skipping finished work).

    ``dispatch: {kind: ray}`` hands the shards to engine actors on a Ray cluster instead of
    this process's thread pool; either way only this process writes the run folder.
    """
    dispatch = load_context(handle.run_dir).config.dispatch
    if dispatch.kind == "ray":
        from crowdlab.experiments.dispatch.ray_executor import execute_on_ray  # imports Ray

        execute_on_ray(handle, dispatch, progress)
        return
    total = len(handle.cells) * handle.rounds * handle.n_shards
    done = 0
    workers = max(1, min(max(handle.max_concurrent_shards, _overlap(handle)), handle.n_shards))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shard") as pool:
        for cid, rep in handle.cells:
            for k in range(1, handle.rounds + 1):
                if round_part_path(Path(handle.run_dir), cid, rep, k).is_file():
                    done += handle.n_shards
                else:
                    futures = [pool.submit(run_shard, handle.run_dir, cid, rep, k, s) for s in range(handle.n_shards)]
                    for fut in futures:
                        fut.result()
                        done += 1
                        if progress:
                            progress(done, total)
                    settle_round(handle.run_dir, cid, rep, k)
                if progress:
                    progress(done, total)


def _overlap(handle: RunHandle) -> int:
    """2 when every model's backend serialises its own engine calls (``pipelined``): then shard
    k+1 is rendered, and shard k-1 parsed and written, while the engine runs shard k."""
    ctx = load_context(handle.run_dir)
    configs = [cfg for cid in ctx.conditions for _, cfg in ctx.models(cid)[0]]
    return 2 if configs and all(getattr(cfg, "pipelined", False) for cfg in configs) else 1


def run(config: ExperimentConfig | dict[str, Any] | str | Path, run_id: str | None = None,
        runs_root: str | Path = "data/runs", overwrite: bool = False,
        progress: Progress | None = None) -> RunResult:
    """Run (or resume) an experiment end to end; same run id + same config resumes."""
    started = time.perf_counter()
    exit_cleanly_on_sigterm()
    handle = prepare_run(config, run_id=run_id, runs_root=runs_root, overwrite=overwrite)
    run_dir = Path(handle.run_dir)
    try:
        execute(handle, progress)
    except BaseException as exc:
        mark_failed(run_dir, exc)
        raise
    _mark(run_dir, "running", wall_s=round(time.perf_counter() - started, 3))
    return finish_run(run_dir)
