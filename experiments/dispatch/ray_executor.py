"""Running a prepared run's shards on Ray actors that hold warm engines.

One pool of actors per distinct backend (model), each actor one engine on its own GPU(s),
started once per run. The driver (this process) reads each shard's inputs, queues per-model
work items, keeps ``in_flight_per_engine`` of them on every actor (a dynamic queue: a slow
engine simply takes fewer items), merges a shard's per-model parts, writes the decisions file
and settles rounds, so atomic writes, resume and the round barrier stay where they are locally.
Every (condition, replicate) cell advances on its own, so the fleet keeps working on other cells
while one waits at its round barrier.

An actor that dies (process or node) loses only its in-flight items: they go back to the front
of the queue for another engine (or the restarted one, ``max_restarts``), and the manifest's
``dispatch`` section counts deaths and reassignments. Decisions depend only on seeds, so the
rows equal those of an undisturbed run.

Interviews (``scenario.interview``) run on the same engines: once a cell's last round is settled,
each missing interview shard is queued as one item per model pool (an agent is asked by the model
that played it), with the same queue, loss handling and retries as decision items; the driver
reads the inputs and writes ``interviews/``, so ``finish_run`` finds them done and builds no
backend of its own.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from crowdlab.experiments.dispatch.actor import EngineWorker, run_spec
from crowdlab.experiments.dispatch.cluster import connect, disconnect, plan
from crowdlab.experiments.dispatch.config import RayDispatch
from crowdlab.experiments.interviews import (InterviewOutput, compute_interview, has_interview, interview_inputs,
                                             interview_models, interview_path, merge_interviews, write_interview)
from crowdlab.experiments.prepare import RunHandle
from crowdlab.experiments.run_context import RunContext, load_context
from crowdlab.experiments.settle_step import settle_columns, settle_round
from crowdlab.experiments.shard_step import ShardOutput, merge_outputs, shard_inputs, write_shard
from crowdlab.experiments.storage import decision_path, read_manifest, round_part_path, write_manifest

log = logging.getLogger(__name__)

NAMESPACE = "crowdlab"
MAX_PENDING_WRITES = 64  # complete shards waiting for the writer thread before dispatch waits too
Cell = tuple[str, int]


@dataclass
class _Task:
    """One model pool's part of one shard-round."""

    cell: Cell
    round: int
    shard: int
    pool: int
    models: list[int]
    inputs: Any = None  # the ShardInputs (shared by the shard's pools), read when first fed
    attempts: int = 0
    epoch: int = 0  # the engine's death count when submitted (tells new deaths from old news)
    kind: str = "decide"  # or "interview": the cell's interview of this shard (round: after_round)


@dataclass
class _Engine:
    name: str
    handle: Any
    inflight: dict[Any, _Task] = field(default_factory=dict)
    epoch: int = 0
    alive: bool = True
    probe: Any = None  # a pending ready() call after a death: no work until it answers


@dataclass
class _Pool:
    label: str
    backend: dict[str, Any]
    engines: list[_Engine] = field(default_factory=list)
    queue: deque[_Task] = field(default_factory=deque)
    parallel: int = 1  # batches one actor serves at once (a simulated node of several engines)
    pipelined: bool = False  # one more shard is prepared while the engine(s) run (overlap)

    def live(self) -> list[_Engine]:
        return [e for e in self.engines if e.alive]

    def serving(self) -> list[_Engine]:
        return [e for e in self.engines if e.alive and e.probe is None]


def _pools(ctx: RunContext) -> tuple[list[_Pool], dict[tuple[str, int], int]]:
    """One pool per distinct backend config, and (condition, model index) -> pool index."""
    keys: dict[str, int] = {}
    pools: list[_Pool] = []
    where: dict[tuple[str, int], int] = {}
    for cid in ctx.conditions:
        models, _ = ctx.models(cid)
        for m, (label, cfg) in enumerate(models):
            dump = cfg.model_dump(mode="json")
            key = json.dumps(dump, sort_keys=True)
            if key not in keys:
                keys[key] = len(pools)
                pools.append(_Pool(label, dump, parallel=int(getattr(cfg, "parallel_batches", 1)),
                                   pipelined=bool(getattr(cfg, "pipelined", False))))
            elif label not in pools[keys[key]].label.split("+"):
                pools[keys[key]].label += f"+{label}"
            where[(cid, m)] = keys[key]
    return pools, where


class RayExecutor:
    """Plays every unfinished shard of a prepared run on the Ray fleet; see the module doc."""

    def __init__(self, handle: RunHandle, dispatch: RayDispatch,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.handle = handle
        self.dispatch = dispatch
        self.progress = progress
        self.ctx = load_context(handle.run_dir)
        self.pools, self.pool_of = _pools(self.ctx)
        self.total = len(handle.cells) * handle.rounds * handle.n_shards
        self.done = 0
        self.record: dict[str, Any] = {"kind": "ray", "address": dispatch.address, "actor_deaths": 0,
                                       "shards_reassigned": 0, "engines_lost": 0, "items_computed": 0,
                                       "interview_items_computed": 0}
        # cell -> (round being played, shard -> {pool: part or None})
        self.active: dict[Cell, tuple[int, dict[int, dict[int, ShardOutput | None]]]] = {}
        self.waiting: deque[Cell] = deque(handle.cells)
        # (cell, round, shard) -> its inputs, only for shards handed to an engine: inputs are read
        # when fed and sent with the call, so the driver holds what is in flight, not a round
        self.inputs: dict[tuple[str, Cell, int, int], Any] = {}
        self.owner: dict[Any, tuple[_Pool, _Engine]] = {}  # in-flight ref -> where it runs
        # Parquet writes run on one thread beside the dispatch loop (pyarrow releases the GIL);
        # at most MAX_PENDING_WRITES complete shards wait there, which bounds the driver's memory
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crowdlab-shard-writer")
        self.writes: dict[Cell, list[Future]] = {}
        self.unticked: deque[Future] = deque()
        self.timings = {"inputs_s": 0.0, "write_s": 0.0, "settle_s": 0.0, "wait_s": 0.0}
        # cell -> shard -> the settle columns of its written rows, for a round played from scratch:
        # the barrier settles from memory (about 25 bytes per agent) instead of reading every file
        self.kept: dict[Cell, dict[int, pa.Table] | None] = {}
        # (cell, shard) -> {pool: interview part or None} of the interview shards in flight
        self.interviews: dict[tuple[Cell, int], dict[int, InterviewOutput | None]] = {}

    # --- setup and teardown -----------------------------------------------------------------
    def _start_engines(self) -> None:
        import ray

        layout = plan(self.dispatch, len(self.pools))
        agent_ids = self.ctx.personas.select(["agent_id"])
        # kept on self: a restarting actor re-reads its constructor arguments from the store
        self._spec = spec = ray.put(run_spec(str(self.ctx.run_dir), self.ctx.run_id,
                                self.ctx.config.model_dump(mode="json"), agent_ids))
        worker = ray.remote(EngineWorker)
        tag = uuid.uuid4().hex[:6]
        for p, pool in enumerate(self.pools):
            for i in range(layout.engines_per_pool):
                name = f"{self.ctx.run_id}/{pool.label}/{i}/{tag}"
                actor = worker.options(
                    name=name, namespace=NAMESPACE, num_gpus=self.dispatch.gpus_per_engine,
                    num_cpus=self.dispatch.num_cpus_per_engine, max_restarts=self.dispatch.max_restarts,
                    max_task_retries=0, max_concurrency=pool.parallel + int(pool.pipelined),
                ).remote(spec, pool.backend, name)
                pool.engines.append(_Engine(name, actor))
        started = time.perf_counter()
        handles = [e.handle.ready.remote() for pool in self.pools for e in pool.engines]
        ready, pending = ray.wait(handles, num_returns=len(handles), timeout=self.dispatch.start_timeout_s)
        if pending:
            raise RuntimeError(f"{len(pending)} of {len(handles)} engines did not start within "
                               f"{self.dispatch.start_timeout_s:g} s (dispatch.start_timeout_s)")
        ray.get(ready)  # raises the actor's own error if an engine failed to start
        self.record.update(
            engines_ready_s=round(time.perf_counter() - started, 3), gpus=layout.gpus_needed,
            cluster_gpus=layout.gpus_available,
            pools=[{"models": pool.label, "engines": len(pool.engines), "gpus_per_engine": self.dispatch.gpus_per_engine,
                    "parallel_batches": pool.parallel, "names": [e.name for e in pool.engines]}
                   for pool in self.pools],
        )
        log.info("%d engine(s) in %d pool(s) ready in %.1f s", len(handles), len(self.pools),
                 self.record["engines_ready_s"])

    def _stop_engines(self) -> None:
        import ray

        for pool in self.pools:
            for engine in pool.engines:
                ray.kill(engine.handle, no_restart=True)

    def _save_record(self) -> None:
        manifest = read_manifest(Path(self.handle.run_dir))
        manifest["dispatch"] = self.record
        write_manifest(Path(self.handle.run_dir), manifest)

    # --- the work queue -----------------------------------------------------------------------
    def _tick(self, n: int = 1) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total)

    def _advance(self, cell: Cell, round_: int) -> None:
        """Queue the first unfinished round of ``cell`` from ``round_`` on (settling as needed)."""
        cid, rep = cell
        run_dir = Path(self.handle.run_dir)
        for k in range(round_, self.handle.rounds + 1):
            if round_part_path(run_dir, cid, rep, k).is_file():
                self._tick(self.handle.n_shards)
                continue
            todo = [s for s in range(self.handle.n_shards) if not decision_path(run_dir, cid, rep, k, s).is_file()]
            self._tick(self.handle.n_shards - len(todo))
            if not todo:
                settle_round(run_dir, cid, rep, k)
                continue
            models, _ = self.ctx.models(cid)
            by_pool: dict[int, list[int]] = {}
            for m in range(len(models)):
                by_pool.setdefault(self.pool_of[(cid, m)], []).append(m)
            parts: dict[int, dict[int, ShardOutput | None]] = {}
            self.kept[cell] = {} if len(todo) == self.handle.n_shards else None  # resumed: read the files
            for s in todo:
                parts[s] = {p: None for p in by_pool}
                for p, ms in by_pool.items():
                    self.pools[p].queue.append(_Task(cell, k, s, p, ms))
            self.active[cell] = (k, parts)
            return
        self.active.pop(cell, None)
        self._queue_interviews(cell)

    def _queue_interviews(self, cell: Cell) -> None:
        """A settled cell's missing interview shards: one item per model pool that has sampled
        agents in the shard; a shard with nobody sampled is written here (no engine needed)."""
        cid, rep = cell
        if not has_interview(self.ctx, cid):
            return
        after = self.ctx.scenario(cid).params.interview.round_after(self.handle.rounds)  # type: ignore[attr-defined]
        for s in range(self.handle.n_shards):
            if interview_path(self.ctx.run_dir, cid, rep, s).is_file():
                continue
            by_pool: dict[int, list[int]] = {}
            for m in interview_models(self.ctx, cid, rep, s):
                by_pool.setdefault(self.pool_of[(cid, m)], []).append(m)
            if not by_pool:
                write_interview(self.ctx, compute_interview(self.ctx, interview_inputs(self.ctx, cid, rep, s), []))
                continue
            self.interviews[(cell, s)] = {p: None for p in by_pool}
            for p, ms in by_pool.items():
                self.pools[p].queue.append(_Task(cell, after, s, p, ms, kind="interview"))

    def _slots(self, pool: _Pool) -> int:
        """Items kept on each actor of ``pool``: ``in_flight_per_engine`` per batch it serves at once."""
        return self.dispatch.in_flight_per_engine * pool.parallel

    def _capacity(self) -> int:
        return sum(len(p.live()) * self._slots(p) for p in self.pools)

    def _inputs_of(self, task: _Task) -> Any:
        """A task's shard inputs, read from the run folder once per shard. They travel with the call
        (Ray inlines small arguments; an explicit ``ray.put`` per shard cost the driver a quarter
        of its time at 256 engines)."""
        key = (task.kind, task.cell, task.round, task.shard)
        if key not in self.inputs:
            started = time.perf_counter()
            if task.kind == "interview":
                self.inputs[key] = interview_inputs(self.ctx, task.cell[0], task.cell[1], task.shard)
            else:
                self.inputs[key] = shard_inputs(self.ctx, task.cell[0], task.cell[1], task.round, task.shard)
            self.timings["inputs_s"] += time.perf_counter() - started
        return self.inputs[key]

    def _fill(self) -> None:
        """Open more cells while the queues are shorter than what the engines can hold."""
        while self.waiting and sum(len(p.queue) for p in self.pools) < self._capacity():
            self._advance(self.waiting.popleft(), 1)

    def _feed(self) -> None:
        """Top every live engine up to ``in_flight_per_engine`` items, one slot at a time."""
        for pool in self.pools:
            for slot in range(self._slots(pool)):
                for engine in pool.serving():
                    if pool.queue and len(engine.inflight) <= slot:
                        task = pool.queue.popleft()
                        task.epoch = engine.epoch
                        if task.inputs is None:
                            task.inputs = self._inputs_of(task)
                        call = engine.handle.interview if task.kind == "interview" else engine.handle.compute
                        ref = call.remote(task.inputs, task.models)
                        engine.inflight[ref] = task
                        self.owner[ref] = (pool, engine)

    def _lost(self, pool: _Pool, engine: _Engine, task: _Task, exc: Exception) -> None:
        """An engine died with ``task`` in flight: count it, requeue the task at the front."""
        if task.epoch == engine.epoch and engine.alive:
            engine.epoch += 1
            self.record["actor_deaths"] += 1
            log.warning("engine %s died (%s); its unfinished shards go back to the queue",
                        engine.name, type(exc).__name__)
            engine.probe = engine.handle.ready.remote()
        task.attempts += 1
        self.record["shards_reassigned"] += 1
        if task.attempts >= self.dispatch.max_shard_attempts:
            what = "interview" if task.kind == "interview" else f"round {task.round}"
            raise RuntimeError(f"shard {task.shard} of {task.cell[0]}/{task.cell[1]}/{what} lost its "
                               f"engine {task.attempts} times (dispatch.max_shard_attempts): {exc}")
        if not pool.live():
            raise RuntimeError(f"every engine of model(s) {pool.label} died; last error: {exc}")
        pool.queue.appendleft(task)

    def _finished(self, task: _Task, output: ShardOutput) -> None:
        """Store a part; write the shard when complete; settle and move on when the round is."""
        if task.kind == "interview":
            self._interviewed(task, output)
            return
        self.record["items_computed"] += 1
        round_, parts = self.active[task.cell]
        parts[task.shard][task.pool] = output
        if any(v is None for v in parts[task.shard].values()):
            return
        merged = merge_outputs([v for v in parts.pop(task.shard).values() if v is not None])
        self.inputs.pop((task.kind, task.cell, task.round, task.shard), None)
        kept = self.kept.get(task.cell)
        if kept is not None:  # a copy: a slice would pin the whole result in Ray's object store
            table = merged.table.select(settle_columns(self.ctx.scenario(task.cell[0])))
            kept[task.shard] = table.take(pa.array(np.arange(table.num_rows)))
        write = self.writer.submit(self._write, merged)
        self.writes.setdefault(task.cell, []).append(write)
        self.unticked.append(write)
        if len(self.unticked) > MAX_PENDING_WRITES:
            self._ticks(wait=True)
        if not parts:
            for done in self.writes.pop(task.cell):
                done.result()  # the round barrier: every shard on disk (a write error stops the run)
            self._ticks()
            started = time.perf_counter()
            kept = self.kept.pop(task.cell, None)
            rows = pa.concat_tables([kept[s] for s in sorted(kept)]) if kept else None
            settle_round(self.handle.run_dir, task.cell[0], task.cell[1], round_, rows)
            self.timings["settle_s"] += time.perf_counter() - started
            self._advance(task.cell, round_ + 1)

    def _interviewed(self, task: _Task, output: Any) -> None:
        """Store an interview part; write the shard's interviews file when every pool answered."""
        self.record["interview_items_computed"] += 1
        parts = self.interviews[(task.cell, task.shard)]
        parts[task.pool] = output
        if any(v is None for v in parts.values()):
            return
        del self.interviews[(task.cell, task.shard)]
        self.inputs.pop((task.kind, task.cell, task.round, task.shard), None)
        started = time.perf_counter()
        write_interview(self.ctx, merge_interviews([v for v in parts.values() if v is not None]))
        self.timings["write_s"] += time.perf_counter() - started

    def _write(self, output: ShardOutput) -> None:
        """On the writer thread: one complete shard to Parquet."""
        started = time.perf_counter()
        write_shard(self.ctx, output)
        self.timings["write_s"] += time.perf_counter() - started

    def _ticks(self, wait: bool = False) -> None:
        """Count written shards in the progress (on the dispatch thread); ``wait``: for the oldest."""
        while self.unticked and (self.unticked[0].done() or wait):
            started = time.perf_counter()
            self.unticked.popleft().result()
            self.timings["wait_s"] += time.perf_counter() - started
            self._tick()
            wait = False

    def _probed(self, pool: _Pool, engine: _Engine) -> None:
        """A dead engine's ready() answered: back to work if Ray restarted it, else drop it."""
        import ray
        from ray.exceptions import ActorDiedError, RayActorError

        try:
            ray.get(engine.probe)
            engine.probe = None
            log.info("engine %s restarted", engine.name)
        except ActorDiedError:
            engine.alive, engine.probe = False, None
            self.record["engines_lost"] += 1
            log.error("engine %s is gone for good (max_restarts=%d)", engine.name, self.dispatch.max_restarts)
        except RayActorError:  # still restarting
            time.sleep(0.2)
            engine.probe = engine.handle.ready.remote()
        if not pool.live():
            raise RuntimeError(f"every engine of model(s) {pool.label} died")

    def _collect(self) -> None:
        import ray
        from ray.exceptions import OutOfMemoryError, RayActorError

        owner = self.owner
        probes = {e.probe: (pool, e) for pool in self.pools for e in pool.engines if e.probe is not None}
        refs = list(owner) + list(probes)
        ready, rest = ray.wait(refs, num_returns=1)
        if rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        for ref in ready:
            if ref in probes:
                self._probed(*probes[ref])
                continue
            pool, engine = owner.pop(ref)
            task = engine.inflight.pop(ref)
            try:
                output = ray.get(ref)
            except (RayActorError, OutOfMemoryError) as exc:  # OOM: Ray's memory monitor killed the worker
                self._lost(pool, engine, task, exc)
                continue
            self._finished(task, output)

    def run(self) -> None:
        started = connect(self.dispatch)
        import ray

        try:
            try:
                self._start_engines()
                while True:
                    self._fill()
                    self._feed()
                    if not any(e.inflight or e.probe is not None for p in self.pools for e in p.engines):
                        if any(p.queue for p in self.pools):
                            raise RuntimeError("work is queued but no engine is alive to take it")
                        break
                    self._collect()
                    self._ticks()
                while self.unticked:
                    self._ticks(wait=True)
            finally:
                self.writer.shutdown(wait=True, cancel_futures=True)
                self.record["driver_s"] = {k: round(v, 3) for k, v in self.timings.items()}
                self._save_record()
                self._stop_engines()
        finally:
            if started:
                disconnect()


def execute_on_ray(handle: RunHandle, dispatch: RayDispatch,
                   progress: Callable[[int, int], None] | None = None) -> None:
    """Play every shard and settle every round of a prepared run on a Ray fleet."""
    RayExecutor(handle, dispatch, progress).run()


__all__ = ["RayExecutor", "execute_on_ray"]
