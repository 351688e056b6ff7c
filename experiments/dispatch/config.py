"""Where shards run: ``dispatch: {kind: local}`` (threads in this process, the default) or
``dispatch: {kind: ray, ...}`` (Ray actors, each holding one warm engine on its own GPU(s)).

Dispatch never changes results (decisions depend only on seeds), so it is left out of the
config hash: a run started locally can be resumed on a fleet and the other way round.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LocalDispatch(BaseModel):
    """Shards of a round run on a thread pool of ``max_concurrent_shards`` in this process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local"] = "local"


class RayDispatch(BaseModel):
    """Shards run on Ray actors: one pool of engines per distinct backend (model), each engine
    an actor started once per run and reused for every shard, round, condition and replicate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["ray"] = "ray"
    address: str | None = Field(
        None, description="null: start a local Ray cluster; 'auto': the cluster this host joined; "
                          "'host:port' or 'ray://host:port': a remote cluster")
    gpus_per_engine: float = Field(1.0, ge=0, description="GPUs per actor (the tensor-parallel size)")
    engines_per_model: int | None = Field(
        None, ge=1, description="actors per model; null: share the cluster's GPUs evenly between models")
    num_cpus_per_engine: float = Field(0.0, ge=0, description="CPUs each actor reserves")
    in_flight_per_engine: int = Field(2, ge=1, description="shards queued on each actor at once")
    max_restarts: int = Field(3, ge=0, description="times Ray restarts a dead engine actor")
    max_shard_attempts: int = Field(4, ge=1, description="tries per shard before the run fails")
    start_timeout_s: float = Field(1800.0, gt=0, description="seconds to wait for every engine to load")

    @model_validator(mode="after")
    def _engines_known(self) -> "RayDispatch":
        if self.gpus_per_engine == 0 and self.engines_per_model is None:
            raise ValueError("give engines_per_model when gpus_per_engine is 0")
        return self


DispatchConfig = Annotated[Union[LocalDispatch, RayDispatch], Field(discriminator="kind")]
