"""Step 1 of a run: validate everything, create the run folder, write manifest and personas.

All checks (config, design, persona file and columns, writable runs root, run-id clash, model
folders and key variables, Ray cluster capacity) happen before anything is written, so a bad
experiment fails in seconds with a ``ConfigError`` naming the field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from crowdlab.experiments.config import ExperimentConfig, load_config, validate_config
from crowdlab.experiments.design import Condition, expand_design
from crowdlab.experiments.errors import ConfigError, UserError
from crowdlab.experiments.scenarios import make_scenario
from crowdlab.experiments.redaction import redact, seal
from crowdlab.experiments.schema import SCHEMA_VERSION
from crowdlab.experiments.storage import (
    MANIFEST, PERSONAS, config_hash, now_iso, read_manifest, run_path, versions, write_manifest,
)
from crowdlab.parquet_io import write_table_atomic

log = logging.getLogger(__name__)

#: Where a run with ``population.backgrounds`` generates its personas (the personas generator's
#: own layout: manifest.json, shards/, personas.parquet); kept across prepares, resumable.
POPULATION_DIR = "population"


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


def load_population(config: ExperimentConfig, run_dir: str | Path | None = None) -> pa.Table:
    """Sample the spec or read the persona Parquet named by ``config.population``.

    With ``population.backgrounds`` the table is the one generated (or finished, when an earlier
    attempt was interrupted) in ``<run_dir>/population/``."""
    pop = config.population
    if pop.backgrounds is not None:
        if run_dir is None:
            raise ConfigError("population.backgrounds", "backgrounds are generated inside a run folder")
        table = pq.read_table(generate_population(config, run_dir))
    elif pop.personas is not None:
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


def background_backend(config: ExperimentConfig) -> dict[str, Any]:
    """The backgrounds' backend config: ``population.backgrounds.backend``, else the spec's own;
    checked (kind, fields, model folder, key variables) without starting an engine."""
    field = "population.backgrounds.backend"
    spec = _load_spec(Path(config.population.spec or ""))
    assert config.population.backgrounds is not None
    if spec.background is None:
        raise ConfigError("population.backgrounds", f"spec {config.population.spec} has no background: section "
                          "(what to write and how the gate checks it; see data/populations/backgrounds_demo.yaml)")
    backend = config.population.backgrounds.backend or spec.background.backend
    if backend is None:
        raise ConfigError(field, "no backend: set it here or as background.backend in the spec")
    if backend.get("kind") == "echo":
        from crowdlab.personas.backgrounds.echo_backend import EchoConfig

        try:
            EchoConfig.model_validate(backend)
        except ValueError as exc:
            raise ConfigError(field, f"invalid echo backend: {exc.errors()[0]['msg']}") from None  # type: ignore[attr-defined]
        return dict(backend)
    from crowdlab.experiments.backends import backend_config

    try:
        settings = backend_config(backend)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        first = errors()[0] if callable(errors) else None
        raise ConfigError(field, f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first else str(exc)) from None
    try:
        _check_backend(settings)
    except UserError as exc:
        raise ConfigError(field, exc.message) from None
    return dict(backend)


def population_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / POPULATION_DIR


def _generation_matches(out: Path, config: ExperimentConfig, backend: dict[str, Any]) -> bool:
    """The population folder was made for this spec, n, seed, shard size and backend."""
    try:
        found = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    pop = config.population
    assert pop.backgrounds is not None
    wanted = {"spec_hash": _load_spec(Path(pop.spec or "")).spec_hash, "n": pop.n, "seed": pop.seed,
              "shard_size": pop.backgrounds.shard_size, "backend_config": backend}
    return all(found.get(k) == v for k, v in wanted.items())


def new_run_id(config: ExperimentConfig) -> str:
    """A new run id from the time and the config (what ``prepare_run`` picks when given none)."""
    return _new_run_id(config_hash(config.model_dump(mode="json")))


def open_population(config: ExperimentConfig, run_id: str, runs_root: str | Path, overwrite: bool = False) -> Path:
    """The folder the run's backgrounds go to, ready to generate into (or to resume).

    Refuses a run-id clash like ``prepare_run``. When the run folder is not resumed (new, left
    by an interrupted prepare, or replaced), a population folder made for another spec, n, seed,
    shard size or backend is removed; one made for this run stays, and its shards are reused."""
    run_dir = run_path(runs_root, config.experiment, run_id)
    out = population_path(run_dir)
    backend = background_backend(config)
    if not _resumes(run_dir, run_id, config_hash(config.model_dump(mode="json")), overwrite):
        _drop_other_generation(out, config, backend)
    return out


def _drop_other_generation(out: Path, config: ExperimentConfig, backend: dict[str, Any]) -> None:
    if out.exists() and not _generation_matches(out, config, backend):
        log.info("removing %s: it was generated for another population or backend", out)
        shutil.rmtree(out)


def population_done(run_dir: str | Path) -> bool:
    """The run's population folder is complete (its personas.parquet written and recorded)."""
    out = population_path(run_dir)
    try:
        done = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("status") == "done"
    except (OSError, ValueError):
        return False
    return done and (out / "personas.parquet").is_file()


def generate_population(config: ExperimentConfig, run_dir: str | Path, on_shard: Any = None) -> Path:
    """Sample the personas and write their backgrounds (with the gate) into ``<run_dir>/population``,
    skipping the shards already written; returns its personas.parquet. Called only where the
    run folder is (re)prepared: a population folder of another generation is replaced."""
    from crowdlab.personas.backgrounds import generate as gen
    from crowdlab.personas.sampling.errors import SpecError

    pop = config.population
    assert pop.backgrounds is not None
    out = population_path(run_dir)
    backend = background_backend(config)
    _drop_other_generation(out, config, backend)
    if population_done(run_dir):
        return out / gen.FINAL
    try:
        return gen.generate(_load_spec(Path(pop.spec or "")), int(pop.n or 0), pop.seed, out,
                            backend=backend, shard_size=pop.backgrounds.shard_size,
                            on_shard=on_shard)
    except SpecError as exc:
        raise ConfigError(f"population.{exc.field}" if exc.field else "population", exc.problem) from None


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
    names = ["agent_id", *(a.name for a in _load_spec(path).attributes)]
    if pop.backgrounds is not None:
        from crowdlab.personas.backgrounds.write import BACKGROUND_FIELDS

        background_backend(config)
        names += [f.name for f in BACKGROUND_FIELDS]
    return names


def _population_size(config: ExperimentConfig) -> int | None:
    """The number of agents, known without sampling (spec ``n``) or reading rows (Parquet footer)."""
    pop = config.population
    if pop.personas is not None:
        return pq.ParquetFile(pop.personas).metadata.num_rows
    return pop.n


def _partial_only(run_dir: Path) -> bool:
    """True when a folder without a manifest holds only what an interrupted prepare leaves:
    leftover ``.tmp`` files, the persona table (crowdlab before 0.1 wrote it first) and the
    population folder a run with backgrounds generates first."""
    for item in run_dir.rglob("*"):
        rel = item.relative_to(run_dir)
        if item.is_file() and not (_is_tmp(item) or rel == PERSONAS or rel.parts[0] == POPULATION_DIR):
            return False
    return True


def _clear_run_dir(run_dir: Path, keep_population: bool) -> None:
    """Delete a run folder being prepared again; its generated population stays when this run uses it."""
    if not run_dir.exists():
        return
    if not keep_population:
        shutil.rmtree(run_dir)
        return
    for item in run_dir.iterdir():
        if item.name == POPULATION_DIR:
            continue
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink()


def _is_tmp(path: Path) -> bool:
    """A temporary file of ``write_table_atomic``/``write_text_atomic`` (``.<name>.<random>.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def remove_leftovers(run_dir: Path) -> int:
    """Delete temporary files a killed writer left behind; returns how many."""
    removed = 0
    for item in run_dir.rglob(".*.tmp"):
        if item.is_file():
            item.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d leftover temporary file(s) in %s", removed, run_dir)
    return removed


def _resumes(run_dir: Path, run_id: str, digest: str, overwrite: bool) -> bool:
    """True when ``run_dir`` holds this very run (same config hash); refuse a clash unless overwriting.

    A folder an interrupted prepare left (status ``preparing``, or no manifest and only partial
    files) holds no results, so it is prepared again from scratch."""
    if (run_dir / MANIFEST).is_file():
        old = read_manifest(run_dir)
        if old.get("status") == "preparing":
            return False
        if old.get("config_hash") == digest and (run_dir / PERSONAS).is_file() and not overwrite:
            return True
        if not overwrite:
            raise ConfigError("run_id", f"run {run_id!r} already exists at {run_dir} with a different "
                              "config; choose another run id", remedy=("overwrite", True))
    elif run_dir.is_dir() and not _partial_only(run_dir) and not overwrite:
        raise ConfigError("run_id", f"{run_dir} exists and is not a crowdlab run; choose another run id",
                          remedy=("overwrite", True))
    return False


def check_writable(runs_root: str | Path, field: str = "runs_root") -> None:
    """Fail before any work when nothing can be written under ``runs_root``.

    A real probe (a temporary file in the nearest existing folder), not ``os.access``: that
    says yes to root on a read-only mount."""
    path = Path(runs_root).expanduser().absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(field, f"cannot create {path}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(field, f"cannot write to {existing}: {exc.strerror or exc}") from None


def check_backends(config: ExperimentConfig, conditions: list[Condition]) -> None:
    """What a backend needs from this machine (model folder, chat template, API key variable),
    checked without starting an engine. On a Ray fleet the workers' machines matter, not this one."""
    if config.dispatch.kind == "ray":
        return
    seen: set[str] = set()
    for cond in conditions:
        for i, (label, backend, _) in enumerate(cond.config.model_shares()):
            key = json.dumps(backend.model_dump(mode="json"), sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            field = "backend" if cond.config.backend is not None else f"models.{i}.backend"
            try:
                _check_backend(backend)
            except UserError as exc:
                raise ConfigError(field, f"model {label!r}: {exc.message}") from None


def _check_backend(backend: Any) -> None:
    from crowdlab.experiments.backends.model_ref import load_chat_template, require_chat_template, resolve_model
    from crowdlab.experiments.backends.settings import LocalModelSettings

    if isinstance(backend, LocalModelSettings):
        require_chat_template(resolve_model(backend.model, backend.revision), backend.chat_template)
        load_chat_template(backend.chat_template)
    check = getattr(backend, "check_environment", None)
    if check is not None:
        check()


def _n_pools(conditions: list[Condition]) -> int:
    """Distinct backend configs of the design: one engine pool each on a Ray fleet."""
    return len({json.dumps(b.model_dump(mode="json"), sort_keys=True)
                for c in conditions for _, b, _ in c.config.model_shares()})


def preflight(config: ExperimentConfig | dict[str, Any] | str | Path, run_id: str | None = None,
              runs_root: str | Path = "data/runs", overwrite: bool = False) -> ExperimentConfig:
    """Every check ``prepare_run`` makes, without sampling or writing anything.

    Config, design and persona columns; that ``runs_root`` can be written; the run-id clash;
    the backends' model folders and key variables; on a Ray fleet, that the cluster answers and
    holds the engines. The CLI calls it before starting Prefect, so bad input fails with one
    clean line, and ``prepare_run`` calls it before writing anything."""
    config = as_config(config)
    conditions = expand_design(config)
    check_personas(_population_columns(config), conditions)
    if config.network is not None:
        from crowdlab.experiments.network import check_network

        check_network(config.network, _population_columns(config), _population_size(config))
    check_writable(runs_root)
    if run_id is not None:
        digest = config_hash(config.model_dump(mode="json"))
        _resumes(run_path(runs_root, config.experiment, run_id), run_id, digest, overwrite)
    check_backends(config, conditions)
    if config.dispatch.kind == "ray":
        from crowdlab.experiments.dispatch.cluster import check_cluster  # imports Ray

        check_cluster(config.dispatch, _n_pools(conditions))
    return config


def check_personas(column_names: list[str], conditions: list[Condition]) -> None:
    """Every condition's prompts and backends find the persona columns they read."""
    columns = set(column_names)
    for cond in conditions:
        scen = make_scenario(cond.config.scenario)
        missing = scen.required_persona_columns() - columns
        if missing and hasattr(scen, "persona_column_path"):  # declarative: name the template
            first = sorted(missing)[0]
            raise ConfigError(scen.persona_column_path(first), f"template reads persona column {first!r}, which "
                              f"the population does not have (condition {cond.condition_id})")
        if hasattr(scen, "trial_render"):  # declarative: every template renders with example values
            scen.trial_render(sorted(columns))
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
    """The manifest of a new run, status ``preparing`` until its persona table is in place.

    Credentials in the config are redacted here (``redaction.seal``): the real values stay in
    this process's memory for the step functions, never on disk."""
    n_shards = -(-n_agents // config.shard_size)
    return {
        "schema_version": SCHEMA_VERSION, "experiment": config.experiment, "run_id": run_id,
        "status": "preparing", "created_at": now_iso(), "config_hash": digest,
        "config": seal(config.model_dump(mode="json")),
        "seeds": {"run": config.seed, "population": config.population.seed},
        "n_agents": n_agents, "shard_size": config.shard_size, "n_shards": n_shards,
        "rounds": config.rounds, "replicates": config.design.replicates,
        "factor_names": list(config.design.factors),
        "conditions": [redact({"condition_id": c.condition_id, "index": c.index, "factors": c.factors,
                               "scenario": c.config.scenario.model_dump(mode="json"),
                               "models": [{"label": label, "share": share, "backend": b.model_dump(mode="json")}
                                          for label, b, share in c.config.model_shares()]})
                       for c in conditions],
        "versions": versions(), "timings": {}, "counts": {}, "attempts": 1,
    }


def prepare_run(config: ExperimentConfig | dict[str, Any] | str | Path, run_id: str | None = None,
                runs_root: str | Path = "data/runs", overwrite: bool = False) -> RunHandle:
    """Validate, then create (or reopen for resume) the run folder; returns its handle.

    A new run's manifest is written first (status ``preparing``), then the persona table, then
    the manifest again (status ``running``): a prepare killed at any point leaves a folder the
    same run id prepares again, and a resume deletes temporary files a killed writer left."""
    config = preflight(config, run_id, runs_root, overwrite)
    conditions = expand_design(config)
    digest = config_hash(config.model_dump(mode="json"))
    run_id = run_id or _new_run_id(digest)
    run_dir = run_path(runs_root, config.experiment, run_id)

    resume = _resumes(run_dir, run_id, digest, overwrite)
    if resume:
        remove_leftovers(run_dir)
        personas = pq.read_table(run_dir / PERSONAS)
        check_personas(personas.column_names, conditions)
        manifest = read_manifest(run_dir)
        manifest["attempts"] = int(manifest.get("attempts", 1)) + 1
        manifest["config"] = seal(config.model_dump(mode="json"))  # resumable fields may have changed
        if config.network is not None and not (run_dir / "network.parquet").is_file():  # killed before it was written
            from crowdlab.experiments.network import write_network

            manifest["network"] = write_network(run_dir, config.network, personas, None, config.seed)
        log.info("resuming run %s (attempt %d)", run_id, manifest["attempts"])
    else:
        personas = load_population(config, run_dir)
        check_personas(personas.column_names, conditions)
        graph = None
        if config.network is not None:  # built (and checked: unknown ids, ranges) before anything is written
            from crowdlab.experiments.network import build_network

            graph = build_network(config.network, personas, config.seed)
        _clear_run_dir(run_dir, keep_population=config.population.backgrounds is not None)
        manifest = _manifest(config, conditions, run_id, digest, personas.num_rows)
        write_manifest(run_dir, manifest)
        write_table_atomic(personas, run_dir / PERSONAS)
        manifest["personas_sha256"] = hashlib.sha256((run_dir / PERSONAS).read_bytes()).hexdigest()
        if graph is not None:
            from crowdlab.experiments.network import write_network

            manifest["network"] = write_network(run_dir, config.network, personas, graph, config.seed)
    manifest["status"] = "running"
    manifest["timings"]["started_at"] = now_iso()
    write_manifest(run_dir, manifest)
    return RunHandle(
        run_dir=str(run_dir), run_id=run_id, experiment=config.experiment,
        cells=[(c.condition_id, r) for c in conditions for r in range(config.design.replicates)],
        rounds=config.rounds, n_shards=manifest["n_shards"], n_agents=personas.num_rows,
        max_concurrent_shards=config.max_concurrent_shards,
    )
