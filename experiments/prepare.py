"""Step 1 of a run: validate everything, create the run folder, write manifest and personas.

All checks (config, design, persona file and columns, run-id clash) happen before anything is
written, so a bad experiment fails in seconds with a ``ConfigError`` naming the field.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from crowdlab.experiments.config import ExperimentConfig, load_config, validate_config
from crowdlab.experiments.design import Condition, expand_design
from crowdlab.experiments.errors import ConfigError
from crowdlab.experiments.scenarios import make_scenario
from crowdlab.experiments.schema import SCHEMA_VERSION
from crowdlab.experiments.storage import (
    MANIFEST, PERSONAS, RESUMABLE_FIELDS, config_hash, now_iso, read_manifest, run_path, versions, write_manifest,
)
from crowdlab.parquet_io import write_table_atomic

log = logging.getLogger(__name__)


class RunHandle(BaseModel):
    """Small, serialisable description of a prepared run (what a Prefect flow passes around)."""

    model_config = ConfigDict(frozen=True)

    run_dir: str
    run_id: str
    experiment: str
    cells: list[tuple[str, int]]  # (condition_id, replicate) in design order
    rounds: int
    n_shards: int
    n_agents: int
    max_concurrent_shards: int = 1


def as_config(config: ExperimentConfig | dict[str, Any] | str | Path) -> ExperimentConfig:
    if isinstance(config, (str, Path)):
        return load_config(config)
    return validate_config(config)


def load_population(config: ExperimentConfig) -> pa.Table:
    """Sample the spec or read the persona Parquet named by ``config.population``."""
    pop = config.population
    if pop.personas is not None:
        path = Path(pop.personas)
        if not path.is_file():
            raise ConfigError("population.personas", f"file not found: {path}")
        table = pq.read_table(path)
    else:
        path = Path(pop.spec or "")
        if not path.is_file():
            raise ConfigError("population.spec", f"file not found: {path}")
        from crowdlab.personas import sample  # experiments -> personas only here

        table = sample(_load_spec(path), pop.n, pop.seed)
    if "agent_id" not in table.column_names:
        raise ConfigError("population", "persona table has no 'agent_id' column")
    if table.num_rows == 0:
        raise ConfigError("population", "persona table is empty")
    return table


def _load_spec(path: Path) -> Any:
    from crowdlab.personas import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as exc:
        raise ConfigError("population.spec", f"{path}: {exc}") from None


def _population_columns(config: ExperimentConfig) -> list[str]:
    """The persona table's columns, known without sampling it (spec) or reading it (Parquet schema)."""
    pop = config.population
    if pop.personas is not None:
        path = Path(pop.personas)
        if not path.is_file():
            raise ConfigError("population.personas", f"file not found: {path}")
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConfigError("population.personas", f"{path} is not a Parquet file: {exc}") from None
        if "agent_id" not in names:
            raise ConfigError("population", "persona table has no 'agent_id' column")
        return names
    path = Path(pop.spec or "")
    if not path.is_file():
        raise ConfigError("population.spec", f"file not found: {path}")
    return ["agent_id", *(a.name for a in _load_spec(path).attributes)]


def _resumes(run_dir: Path, run_id: str, digest: str, overwrite: bool) -> bool:
    """True when ``run_dir`` holds this very run (same config hash); refuse a clash unless overwriting."""
    if (run_dir / MANIFEST).is_file():
        old = read_manifest(run_dir)
        if old.get("config_hash") == digest and (run_dir / PERSONAS).is_file() and not overwrite:
            return True
        if not overwrite:
            raise ConfigError("run_id", f"run {run_id!r} already exists at {run_dir} with a different "
                              "config; choose another run id or pass overwrite=True")
    elif run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise ConfigError("run_id", f"{run_dir} exists and is not a crowdlab run; pass overwrite=True")
    return False


def preflight(config: ExperimentConfig | dict[str, Any] | str | Path, run_id: str | None = None,
              runs_root: str | Path = "data/runs", overwrite: bool = False) -> ExperimentConfig:
    """Every check ``prepare_run`` makes, without sampling or writing anything (seconds at most).

    The CLI calls it before starting Prefect, so bad input fails with one clean line."""
    config = as_config(config)
    conditions = expand_design(config)
    check_personas(_population_columns(config), conditions)
    if run_id is not None:
        digest = config_hash(config.model_dump(mode="json"))
        _resumes(run_path(runs_root, config.experiment, run_id), run_id, digest, overwrite)
    return config


def check_personas(column_names: list[str], conditions: list[Condition]) -> None:
    """Every condition's prompts and backends find the persona columns they read."""
    columns = set(column_names)
    for cond in conditions:
        scen = make_scenario(cond.config.scenario)
        missing = scen.required_persona_columns() - columns
        if missing:
            raise ConfigError("scenario.variant", f"{cond.config.scenario.variant} needs persona "
                              f"column(s) {sorted(missing)} (condition {cond.condition_id})")
        for i, (label, backend, _) in enumerate(cond.config.model_shares()):
            missing = backend.required_persona_columns() - columns
            if missing:
                field = "backend" if cond.config.backend is not None else f"models.{i}.backend"
                raise ConfigError(field, f"model {label!r} reads missing persona column(s) {sorted(missing)}")


def _new_run_id(digest: str) -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + digest[:6]


def _manifest(config: ExperimentConfig, conditions: list[Condition], run_id: str, digest: str,
              n_agents: int) -> dict[str, Any]:
    n_shards = -(-n_agents // config.shard_size)
    return {
        "schema_version": SCHEMA_VERSION, "experiment": config.experiment, "run_id": run_id,
        "status": "running", "created_at": now_iso(), "config_hash": digest,
        "config": config.model_dump(mode="json"),
        "seeds": {"run": config.seed, "population": config.population.seed},
        "n_agents": n_agents, "shard_size": config.shard_size, "n_shards": n_shards,
        "rounds": config.rounds, "replicates": config.design.replicates,
        "factor_names": list(config.design.factors),
        "conditions": [{"condition_id": c.condition_id, "index": c.index, "factors": c.factors,
                        "scenario": c.config.scenario.model_dump(mode="json"),
                        "models": [{"label": label, "share": share, "backend": b.model_dump(mode="json")}
                                   for label, b, share in c.config.model_shares()]}
                       for c in conditions],
        "versions": versions(), "timings": {}, "counts": {}, "attempts": 1,
    }


def prepare_run(config: ExperimentConfig | dict[str, Any] | str | Path, run_id: str | None = None,
                runs_root: str | Path = "data/runs", overwrite: bool = False) -> RunHandle:
    """Validate, then create (or reopen for resume) the run folder; returns its handle."""
    config = preflight(config)
    conditions = expand_design(config)
    digest = config_hash(config.model_dump(mode="json"))
    run_id = run_id or _new_run_id(digest)
    run_dir = run_path(runs_root, config.experiment, run_id)

    resume = _resumes(run_dir, run_id, digest, overwrite)
    if resume:
        personas = pq.read_table(run_dir / PERSONAS)
        check_personas(personas.column_names, conditions)
        manifest = read_manifest(run_dir)
        manifest["attempts"] = int(manifest.get("attempts", 1)) + 1
        manifest["status"] = "running"
        new_config = config.model_dump(mode="json")
        manifest["config"].update({k: new_config[k] for k in RESUMABLE_FIELDS})
        log.info("resuming run %s (attempt %d)", run_id, manifest["attempts"])
    else:
        personas = load_population(config)
        check_personas(personas.column_names, conditions)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        write_table_atomic(personas, run_dir / PERSONAS)
        manifest = _manifest(config, conditions, run_id, digest, personas.num_rows)
        manifest["personas_sha256"] = hashlib.sha256((run_dir / PERSONAS).read_bytes()).hexdigest()
    manifest["timings"]["started_at"] = now_iso()
    write_manifest(run_dir, manifest)
    return RunHandle(
        run_dir=str(run_dir), run_id=run_id, experiment=config.experiment,
        cells=[(c.condition_id, r) for c in conditions for r in range(config.design.replicates)],
        rounds=config.rounds, n_shards=manifest["n_shards"], n_agents=personas.num_rows,
        max_concurrent_shards=config.max_concurrent_shards,
    )
