"""ExperimentConfig: the YAML a user writes, validated with pydantic before any work starts.

Bad input raises ``ConfigError`` naming the field as a dotted path (``scenario.p``,
``design.factors.scenario.variant``), never a pydantic traceback.
"""

from __future__ import annotations

import re
import secrets
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from crowdlab import yaml_io
from crowdlab.experiments.answers import ANSWER_TAGS
from crowdlab.experiments.backends import BackendConfig, BackendSettings, SamplingSettings
from crowdlab.experiments.dispatch import DispatchConfig, LocalDispatch
from crowdlab.experiments.errors import ConfigError
from crowdlab.experiments.network.config import NETWORK_KINDS, NetworkConfig
from crowdlab.experiments.scenarios import ScenarioConfig

FACTOR_ROOTS = ("scenario", "backend", "models", "sampling")


#: A Prefect work pool's name as crowdlab accepts it (it becomes part of a deployment's name).
WORK_POOL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class BackgroundsConfig(BaseModel):
    """LLM-written backgrounds generated inside the run (``<run_dir>/population/``), resumable.

    The spec's ``background:`` section says what to write and how the gate checks it; this says
    which backend writes (a backend mapping, or the path of a backend YAML, read when the config
    is loaded) and how many personas one shard (one resumable task) holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: dict[str, Any] | None = Field(
        None, description="backend config (a mapping with a kind) or path to a backend YAML; "
                          "empty: the spec's background.backend")
    shard_size: int = Field(10_000, ge=1, description="personas per background shard (one task each)")
    work_pool: str | None = Field(
        None, pattern=WORK_POOL_NAME, exclude=True,
        description="Prefect work pool the pipeline's population stage runs on (as the deployment "
                    "crowdlab-population/stage); empty: in the pipeline's own process. Where a stage runs, "
                    "not what it computes: left out of the dumped config, so of the run's config hash too")

    @field_validator("backend", mode="before")
    @classmethod
    def _read_backend(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)):
            file = Path(value)
            if not file.is_file():
                raise _plain(f"file not found: {file}")
            try:
                value = yaml_io.safe_load(file.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise _plain(f"{file} is not valid YAML: {exc}") from None
            if not isinstance(value, dict):
                raise _plain(f"{file} does not hold a mapping")
        if isinstance(value, dict) and "kind" not in value:
            raise _plain("a backend needs a kind (vllm, openai, transformers, echo)")
        return value


def _plain(message: str) -> PydanticCustomError:
    """A validator error whose message pydantic shows as written (no "Value error, " prefix)."""
    return PydanticCustomError("invalid", message)


class PopulationConfig(BaseModel):
    """Either a population spec to sample (``spec`` + ``n`` + ``seed``) or a persona Parquet.

    With ``backgrounds`` (spec only), the run first writes each persona's background with an
    LLM into its own folder (``population/``), then the experiment reads that table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: str | None = None
    n: int | None = Field(None, ge=1)
    seed: int = 0
    personas: str | None = None
    backgrounds: BackgroundsConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "PopulationConfig":
        if (self.spec is None) == (self.personas is None):
            raise ValueError("give exactly one of 'spec' (with 'n') or 'personas'")
        if self.spec is not None and self.n is None:
            raise ValueError("'n' is required with 'spec'")
        if self.backgrounds is not None and self.spec is None:
            raise ValueError("backgrounds: needs 'spec' (backgrounds are written for a sampled population)")
        return self


class ModelShare(BaseModel):
    """One model of a mixed-model population: its label, backend and share of the agents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    backend: BackendConfig
    share: float = Field(1.0, gt=0)


class SamplingConfig(BaseModel):
    """Decoding settings shared by every request (LLM backends)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)

    def settings(self) -> SamplingSettings:
        return SamplingSettings(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


class DesignConfig(BaseModel):
    """Factors crossed in order (each a dotted path and its levels) and the replicate count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factors: dict[str, list[Any]] = Field(default_factory=dict)
    replicates: int = Field(1, ge=1)

    @field_validator("factors")
    @classmethod
    def _check_factors(cls, factors: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, levels in factors.items():
            if name.split(".")[0] not in FACTOR_ROOTS:
                raise ValueError(f"factor {name!r} must start with one of {', '.join(FACTOR_ROOTS)}")
            if not levels:
                raise ValueError(f"factor {name!r} has no levels")
        return factors


class ExperimentConfig(BaseModel):
    """One experiment: population, scenario, backend (or mixed models), rounds and design."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: str = Field(description="folder name under runs_root")
    description: str = ""
    population: PopulationConfig
    scenario: ScenarioConfig
    backend: BackendConfig | None = None
    models: list[ModelShare] | None = None
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    rounds: int = Field(1, ge=1)
    shard_size: int = Field(10_000, ge=1)
    seed: int = 0
    max_concurrent_shards: int = Field(1, ge=1, description="shards of one round run at once")
    max_failed_share: float = Field(
        0.01, ge=0, le=1,
        description="largest share of a shard's requests that may fail in the backend (after its own "
                    "retries) and still be written as flagged rows; above it the shard is not written, "
                    "the run stops naming the cause, and re-running resumes by asking those agents again")
    dispatch: DispatchConfig = Field(default_factory=LocalDispatch, description="local threads or Ray actors")
    design: DesignConfig = Field(default_factory=DesignConfig)
    network: NetworkConfig | None = Field(None, description="who hears whom: a generated graph or an edge list "
                                                         "(experiments/network); none: agents see only aggregates")
    work_pool: str | None = Field(
        None, pattern=WORK_POOL_NAME, exclude=True,
        description="Prefect work pool the pipeline's experiment stage runs on (as the deployment "
                    "crowdlab-experiment/stage); needs population.backgrounds (the pipeline); empty: in the "
                    "pipeline's own process. Left out of the dumped config and its hash, like the population's")

    @field_validator("experiment")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError("use letters, digits, '_', '-', '.' (it names a folder)")
        return name

    @model_validator(mode="after")
    def _one_backend(self) -> "ExperimentConfig":
        if (self.backend is None) == (self.models is None):
            raise ValueError("give exactly one of 'backend' or 'models'")
        if self.models is not None:
            if not self.models:
                raise ValueError("'models' is empty")
            labels = [m.label for m in self.models]
            if len(set(labels)) != len(labels):
                raise ValueError(f"model labels must be unique, got {labels}")
        return self

    @model_validator(mode="after")
    def _pool_needs_pipeline(self) -> "ExperimentConfig":
        if self.work_pool is not None and self.population.backgrounds is None:
            raise ValueError("work_pool: only the pipeline (a config with population.backgrounds) hands its "
                             "experiment stage to a work pool; otherwise run the crowdlab-experiment deployment "
                             "on that pool")
        return self

    @model_validator(mode="after")
    def _interview_round(self) -> "ExperimentConfig":
        interview = getattr(self.scenario, "interview", None)
        if interview is not None and interview.round_after(self.rounds) > self.rounds:
            raise ValueError(f"scenario.interview.after_round: {interview.after_round} is beyond the "
                             f"last round ({self.rounds})")
        return self

    def model_shares(self) -> list[tuple[str, BackendSettings, float]]:
        """(label, backend config, share) per model; one entry when ``backend`` is used."""
        if self.models is not None:
            return [(m.label, m.backend, m.share) for m in self.models]
        assert self.backend is not None
        return [(self.backend.display_label(), self.backend, 1.0)]


def _union_tags(union: Any) -> set[str]:
    """The ``kind`` values of a discriminated union (pydantic puts them in error locations)."""
    members = get_args(get_args(union)[0]) or (get_args(union)[0],)
    return {m.model_fields["kind"].default for m in members}


_TAGS = _union_tags(BackendConfig) | _union_tags(ScenarioConfig) | _union_tags(DispatchConfig) | NETWORK_KINDS


# Tags of unions nested in a declarative scenario: answer types under ``fields.<name>``, settle
# rules under ``outcome.<i>`` (matched by position, so a field may be named like a type).
_NESTED_TAGS = {"fields": ANSWER_TAGS, "outcome": frozenset({"aggregate", "formula", "closest", "payoff", "sample"})}
# A validator may name a sub-path of its model: "outcome.0.formula: unknown name 'q'".
_SUBPATH = re.compile(r"^(?:Value error, )?([A-Za-z_]\w*(?:\.\w+)*): (.+)$", re.S)


def _is_tag(loc: tuple[Any, ...], i: int) -> bool:
    p = loc[i]
    if not isinstance(p, str):
        return False
    if p in _TAGS or p.startswith("function-"):
        return True
    return i >= 2 and p in _NESTED_TAGS.get(str(loc[i - 2]), ())


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for i, p in enumerate(loc) if not _is_tag(loc, i)]
    return ".".join(parts) or "config"


def _error_location(err: Any) -> tuple[str, str]:
    """(dotted field path, message) of one pydantic error."""
    field, msg = _field_path(err["loc"]), err["msg"]
    if err["type"] in ("union_tag_invalid", "union_tag_not_found") and \
            err.get("ctx", {}).get("discriminator") == "'type'":  # an answer field's type
        field += ".type"
    elif err["type"] == "value_error" and (m := _SUBPATH.match(msg)):
        field, msg = f"{field}.{m[1]}" if field != "config" else m[1], m[2]
    return field, msg


def validate_config(data: dict[str, Any] | ExperimentConfig, where: str = "") -> ExperimentConfig:
    """Validate a config dict; ``ConfigError`` names the first bad field (prefixed by ``where``)."""
    if isinstance(data, ExperimentConfig):
        return data
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        field, msg = _error_location(exc.errors()[0])
        raise ConfigError(f"{where}{field}" if where else field, msg) from None


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Replace fields by dotted name, e.g. ``{"rounds": 2, "population.n": 500}`` (UI/CLI overrides)."""
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ConfigError(dotted, f"cannot override inside {name!r}: it is not a mapping")
        node[leaf] = value
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML file, with optional dotted-name overrides."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError("config", f"file not found: {file}")
    try:
        data = yaml_io.safe_load(file.read_text(encoding="utf-8"))
    except yaml_io.DuplicateKeyError as exc:  # the later value would silently win
        raise ConfigError(exc.dotted("config"), f"duplicate key {str(exc.key)!r} ({file.name} line {exc.line})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("config", f"{file} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError("config", f"{file} does not hold a mapping")
    try:
        return validate_config(apply_overrides(data, overrides))
    except ConfigError as exc:
        line = yaml_line(file.read_text(encoding="utf-8"), exc.field)
        if line is None:
            raise
        raise ConfigError(exc.field, f"{str(exc)[len(exc.field) + 2:]} ({file.name} line {line})") from None


def yaml_line(text: str, field: str) -> int | None:
    """1-based line of the deepest node of a dotted ``field`` path in a YAML text (None if absent)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for key in field.split("."):
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
        elif isinstance(node, yaml.SequenceNode) and key.isdigit() and int(key) < len(node.value):
            node = node.value[int(key)]
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def fresh_replicate(run_id: str | None = None, overrides: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Run id and overrides for a new, independent replicate of an experiment.

    The run id is ``replicate-<UTC time>-<6 random hex digits>`` unless one is given (two
    replicates started in the same second, such as overlapping scheduled runs, must not share an
    id: the second would resume the first), and the run seed is derived from
    it (CRC-32), unless the overrides set ``seed`` explicitly. A re-run under a new run id with
    the same config would otherwise reuse the config's seed and repeat the same decisions; the
    same run id (and so the same seed) resumes. ``crowdlab run --fresh-seed`` calls this; the
    experiment flow's ``fresh_seed`` parameter (the nightly schedule) applies the same rule.
    """
    run_id = run_id or datetime.now(timezone.utc).strftime("replicate-%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
    overrides = dict(overrides or {})
    overrides.setdefault("seed", zlib.crc32(run_id.encode()))
    return run_id, overrides
