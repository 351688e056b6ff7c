"""The Ray actor that holds one warm engine and computes shards for one run.

It is built from the run's config (shipped once, through the object store) and starts its
backend in ``__init__``, so a vLLM engine loads once per actor, not per shard or round; a
restarted actor (``max_restarts``) runs ``__init__`` again with the same arguments. It never
touches the run folder: inputs come from the driver and the decision table goes back to it.
After a (condition, replicate)'s last round the same actors answer its interviews
(``interview``), with the engine that played those agents, warm in this process's backend cache.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from crowdlab.experiments.backends import backend_config
from crowdlab.experiments.config import validate_config
from crowdlab.experiments.design import expand_design
from crowdlab.experiments.interviews import InterviewInputs, InterviewOutput, compute_interview
from crowdlab.experiments.run_context import RunContext, get_backend
from crowdlab.experiments.shard_step import ShardInputs, ShardOutput, compute_shard

log = logging.getLogger(__name__)


def run_spec(run_dir: str, run_id: str, config: dict[str, Any], agent_ids: pa.Table) -> dict[str, Any]:
    """What an engine actor needs to know about the run (``agent_ids``: the persona ids only)."""
    return {"run_dir": run_dir, "run_id": run_id, "config": config, "agent_ids": agent_ids}


class EngineWorker:
    """One engine (one GPU or tensor-parallel group) serving the shards of one model pool."""

    def __init__(self, spec: dict[str, Any], backend: dict[str, Any], name: str) -> None:
        config = validate_config(spec["config"])
        conditions = {c.condition_id: c for c in expand_design(config)}
        self.ctx = RunContext(Path(spec["run_dir"]), spec["run_id"], config, conditions, spec["agent_ids"],
                              list(config.design.factors))
        self.name = name
        # A simulated node serves several shards at once on threads that share this context: fill
        # its per-condition caches now, once, rather than racing to build them in every thread
        for cid in conditions:
            self.ctx.models(cid)
            self.ctx.scenario(cid)
        warm = get_backend(backend_config(backend))
        getattr(warm, "engine", None)  # LLM backends start their engine lazily: start it now
        if getattr(warm, "needs_prompts", False):
            for cid in conditions:
                self.ctx.group_sizes(cid)
        log.info("engine %s ready on %s (pid %d)", name, socket.gethostname(), os.getpid())

    def ready(self) -> str:
        return f"{self.name}@{socket.gethostname()}:{os.getpid()}"

    def compute(self, inputs: ShardInputs, models: Sequence[int]) -> ShardOutput:
        return compute_shard(self.ctx, inputs, models, engine=self.name)

    def interview(self, inputs: InterviewInputs, models: Sequence[int]) -> InterviewOutput:
        return compute_interview(self.ctx, inputs, models)
