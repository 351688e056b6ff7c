"""Generating a population into a folder, shard by shard, resumable (no Prefect needed).

Layout of ``OUT_DIR``::

    manifest.json                    spec, n, seed, shard size, backend config, status, rates
    shards/shard-00000.parquet       rows of shard 0 (with backgrounds when the spec has them)
    personas.parquet                 all shards combined, spec and background metadata inside

A shard file exists only when complete (temp file + rename), so re-running skips finished shards
and never duplicates a row. ``plan_generation`` refuses to resume into a folder made for a
different spec, n, seed or shard size. The Prefect flow (``crowdlab.flows.personas_flow``)
runs one task per ``generate_shard`` call; ``generate`` here does the same in a plain loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from crowdlab.parquet_io import write_table_atomic, write_text_atomic
from crowdlab.personas.sampling.errors import SpecError
from crowdlab.personas.sampling.io import write_personas
from crowdlab.personas.sampling.sampler import check_quotas, check_request, sample_rows, shard_bounds, warn_departures
from crowdlab.personas.sampling.spec import PopulationSpec

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FINAL = "personas.parquet"
SHARDS = "shards"
PROBE_ROWS = 4096
_BACKENDS: dict[str, Any] = {}  # one backend per config per process (an engine is expensive)


@dataclass(frozen=True)
class GenerationPlan:
    spec: PopulationSpec
    n: int
    seed: int
    shard_size: int
    out_dir: Path
    backend_config: dict[str, Any] | None

    @property
    def bounds(self) -> list[tuple[int, int]]:
        return shard_bounds(self.n, -(-self.n // self.shard_size))

    def shard_path(self, index: int) -> Path:
        return self.out_dir / SHARDS / f"shard-{index:05d}.parquet"

    def pending(self) -> list[int]:
        return [i for i in range(len(self.bounds)) if not self.shard_path(i).exists()]


def plan_generation(
    spec: PopulationSpec, n: int, seed: int, out_dir: str | Path, shard_size: int = 10_000,
    backend_config: dict[str, Any] | None = None,
) -> GenerationPlan:
    """Check everything that can be checked before work starts, then write (or match) the manifest."""
    check_request(n, seed)
    check_quotas(spec, n)
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise SpecError("shard_size", f"must be a positive integer, got {shard_size!r}")
    if spec.background is not None:
        config = backend_config if backend_config is not None else spec.background.backend
        if config is None:
            raise SpecError("background.backend", "no backend: set background.backend in the spec or pass --backend FILE")
        backend_config = config
        _validate_backend_config(config)
    elif backend_config is not None:
        log.warning("spec %s has no background section; the backend is not used", spec.name)
        backend_config = None
    if spec.constraints:  # an infeasible spec fails here, naming the constraint, before any file
        sample_rows(spec, 0, min(n, PROBE_ROWS), seed, n)
        warn_departures(spec)  # once per generation, not once per shard
    out = Path(out_dir)
    plan = GenerationPlan(spec, n, seed, shard_size, out, backend_config)
    wanted = {"spec_hash": spec.spec_hash, "n": n, "seed": seed, "shard_size": shard_size}
    path = out / MANIFEST
    if path.exists():
        found = json.loads(path.read_text(encoding="utf-8"))
        clash = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
        if clash:
            raise SpecError("out", f"{out} holds a different generation {clash} (found, wanted); use a new folder")
    else:
        manifest = {**wanted, "spec_name": spec.name, "spec": json.loads(spec.to_json()),
                    "shards": len(plan.bounds), "backend_config": backend_config, "status": "running",
                    "started": time.time()}
        write_text_atomic(json.dumps(manifest, indent=2, ensure_ascii=False), path)
    return plan


def _validate_backend_config(config: Any) -> None:
    if hasattr(config, "generate"):
        return
    if not isinstance(config, dict) or "kind" not in config:
        raise SpecError("background.backend", f"must be a mapping with a kind, got {config!r}")
    if config["kind"] == "echo":
        from crowdlab.personas.backgrounds.echo_backend import EchoConfig

        EchoConfig.model_validate(config)
        return
    from crowdlab.experiments.backends import backend_config as validate

    try:
        validate(config)
    except ValueError as exc:
        raise SpecError("background.backend", f"invalid backend config: {exc}") from None


def backend_for(config: Any) -> Any:
    """The process's backend for this config (built once, reused by every shard)."""
    if hasattr(config, "generate"):
        return config
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _BACKENDS:
        from crowdlab.personas.backgrounds.write import build_backend

        _BACKENDS[key] = build_backend(config)
    return _BACKENDS[key]


def generate_shard(plan: GenerationPlan, index: int, backend: Any = None) -> Path:
    """Write shard ``index`` (skipped when its file exists); returns its path."""
    path = plan.shard_path(index)
    if path.exists():
        return path
    start, stop = plan.bounds[index]
    table = sample_rows(plan.spec, start, stop, plan.seed, plan.n)
    if plan.spec.background is not None:
        from crowdlab.personas.backgrounds.write import add_backgrounds

        table = add_backgrounds(table, plan.spec, plan.seed, backend if backend is not None else backend_for(plan.backend_config))
    write_table_atomic(table, path)
    log.info("wrote shard %d (%d rows) to %s", index, table.num_rows, path)
    return path


def combine_shards(plan: GenerationPlan, backend: Any = None) -> Path:
    """Concatenate the shards into ``personas.parquet`` and finish the manifest."""
    missing = plan.pending()
    if missing:
        raise RuntimeError(f"{len(missing)} shards are not written yet (first: {missing[0]})")
    table = pa.concat_tables([pq.read_table(plan.shard_path(i)) for i in range(len(plan.bounds))])
    manifest = json.loads((plan.out_dir / MANIFEST).read_text(encoding="utf-8"))
    meta = dict(table.schema.metadata or {})
    if plan.spec.background is not None:
        from crowdlab.personas.backgrounds.write import META_BACKGROUND, background_metadata, contradiction_rates

        info = background_metadata(plan.spec, backend if backend is not None else backend_for(plan.backend_config))
        info["contradiction_rate"] = contradiction_rates(table)
        meta[META_BACKGROUND.encode()] = json.dumps(info, ensure_ascii=False, default=str).encode()
        manifest["background"] = info
    path = write_personas(table.replace_schema_metadata(meta), plan.out_dir / FINAL, spec=plan.spec, seed=plan.seed)
    manifest.update(status="done", finished=time.time(), rows=table.num_rows)
    write_text_atomic(json.dumps(manifest, indent=2, ensure_ascii=False, default=str), plan.out_dir / MANIFEST)
    return path


def generate(
    spec: PopulationSpec, n: int, seed: int, out_dir: str | Path, *, backend: Any = None, shard_size: int = 10_000,
    on_shard: Callable[[int, int], None] | None = None,
) -> Path:
    """The whole job in one process: plan, every pending shard, combine. Returns personas.parquet."""
    config = backend if isinstance(backend, dict) or backend is None else None
    plan = plan_generation(spec, n, seed, out_dir, shard_size, config)
    instance = backend if backend is not None and not isinstance(backend, dict) else None
    total = len(plan.bounds)
    done = total - len(plan.pending())
    for index in plan.pending():
        generate_shard(plan, index, instance)
        done += 1
        if on_shard is not None:
            on_shard(done, total)
    return combine_shards(plan, instance)


def load_plan(out_dir: str | Path) -> GenerationPlan:
    """The plan a folder's manifest records (what a worker needs: just the folder's path)."""
    from crowdlab.personas.sampling.loading import parse_spec

    out = Path(out_dir)
    path = out / MANIFEST
    if not path.exists():
        raise SpecError("out", f"{out} has no {MANIFEST}; plan the generation first")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    spec = parse_spec(manifest["spec"])
    return GenerationPlan(spec, int(manifest["n"]), int(manifest["seed"]), int(manifest["shard_size"]), out, manifest.get("backend_config"))
