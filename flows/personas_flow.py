"""Prefect flow for generating a population: one task per shard, resumable, thin.

Every task calls a plain function of ``crowdlab.personas.backgrounds.generate`` (which works without
Prefect); task parameters are the output folder and a shard index, and the plan is read back
from the folder's manifest. Finished shards are skipped, so re-running the flow on the same
folder resumes it. Tasks run one at a time in this process by default: they share one warm
LLM engine (``generate.backend_for``), and an engine already batches a whole shard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from crowdlab.experiments.errors import is_retryable
from crowdlab.flows.progress import ProgressListener, notify
from crowdlab.personas.backgrounds import generate as gen
from crowdlab.personas.sampling.loading import load_spec

@task(name="plan-population", cache_policy=NO_CACHE)
def plan_task(spec_path: str, n: int, seed: int, out_dir: str, shard_size: int, backend: dict[str, Any] | None) -> list[int]:
    plan = gen.plan_generation(load_spec(spec_path), n, seed, out_dir, shard_size, backend)
    return plan.pending()


def _retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """A bad model folder or key variable is not retried; a server that hiccuped is."""
    return is_retryable(state.data if isinstance(state.data, BaseException) else None)


@task(name="population-shard", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2,
      retry_condition_fn=_retry_unless_user_error, task_run_name="shard-{index:05d}")
def shard_task(out_dir: str, index: int) -> str:
    return str(gen.generate_shard(gen.load_plan(out_dir), index))


@task(name="combine-population", cache_policy=NO_CACHE)
def combine_task(out_dir: str) -> str:
    return str(gen.combine_shards(gen.load_plan(out_dir)))


@flow(name="crowdlab-personas", flow_run_name="personas {out_dir} (n={n}, seed={seed})",
      task_runner=ThreadPoolTaskRunner(max_workers=1), log_prints=False)
def personas_flow(
    spec_path: str, n: int, seed: int = 0, out_dir: str = "data/runs/personas", shard_size: int = 10_000,
    backend: dict[str, Any] | None = None,
) -> str:
    """Sample (and write backgrounds for) N personas into OUT_DIR; resumes an interrupted run.

    Args:
        spec_path: Population spec (YAML), relative to the worker's folder (the crowdlab checkout).
        n: Number of personas.
        seed: Random seed: the same seed gives the same table and texts.
        out_dir: Output folder (shards/, personas.parquet, manifest.json); an unfinished one resumes.
        shard_size: Personas per shard (one task each).
        backend: Backend config for backgrounds (a mapping with a kind), overriding the spec's.
    """
    pending = plan_task(spec_path, n, seed, out_dir, shard_size, backend)
    total = len(gen.load_plan(out_dir).bounds)
    done = total - len(pending)
    notify(done, total)
    if not pending and _combined(out_dir):  # a finished folder: nothing to write, no engine to start
        return str(Path(out_dir) / gen.FINAL)
    for index in pending:
        shard_task.submit(out_dir, index).result()
        done += 1
        notify(done, total)
    return combine_task(out_dir)


def _combined(out_dir: str) -> bool:
    """The folder's shards were already combined into personas.parquet (manifest status done)."""
    manifest = json.loads((Path(out_dir) / gen.MANIFEST).read_text(encoding="utf-8"))
    return manifest.get("status") == "done" and (Path(out_dir) / gen.FINAL).is_file()


def run_local(spec_path: str | Path, n: int, seed: int, out_dir: str | Path, shard_size: int = 10_000,
              backend: dict[str, Any] | None = None, on_shard: ProgressListener | None = None) -> Path:
    """The same job without Prefect (plain loop over ``generate_shard``)."""
    return gen.generate(load_spec(spec_path), n, seed, out_dir, backend=backend, shard_size=shard_size, on_shard=on_shard)
