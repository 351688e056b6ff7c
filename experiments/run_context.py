"""Per-process caches for the step functions: what a run folder holds, and warm backends.

A Prefect worker calls ``run_shard`` thousands of times for the same run; it reads the config,
persona table and design once, and keeps one backend per backend config (an LLM engine is
expensive to start). The cache key includes the manifest's creation stamp, so an overwritten
run folder is reloaded. The manifest's config has its credentials redacted; the live config
comes from this process's memory (``redaction.unseal``), where ``prepare_run`` left it.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crowdlab.experiments.assignment import assign_models
from crowdlab.experiments.backends import Backend, BackendSettings
from crowdlab.experiments.config import ExperimentConfig, validate_config
from crowdlab.experiments.design import Condition, expand_design
from crowdlab.experiments.errors import ConfigError
from crowdlab.experiments.redaction import has_redactions, unseal
from crowdlab.experiments.scenarios import Scenario, make_scenario
from crowdlab.experiments.storage import PERSONAS, read_manifest

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Everything about a run that every shard needs, loaded once per process."""

    run_dir: Path
    run_id: str
    config: ExperimentConfig
    conditions: dict[str, Condition]
    personas: pa.Table
    factor_names: list[str]
    _cache: dict[str, object] = field(default_factory=dict)

    @property
    def n_agents(self) -> int:
        return self.personas.num_rows

    @property
    def n_shards(self) -> int:
        return -(-self.n_agents // self.config.shard_size)

    def shard_bounds(self, shard: int) -> tuple[int, int]:
        size = self.config.shard_size
        if not 0 <= shard < self.n_shards:
            raise ValueError(f"shard {shard} out of range 0..{self.n_shards - 1}")
        return shard * size, min((shard + 1) * size, self.n_agents)

    def scenario(self, condition_id: str) -> Scenario:
        return self._memo(f"scenario/{condition_id}",
                          lambda: make_scenario(self.conditions[condition_id].config.scenario))

    def models(self, condition_id: str) -> tuple[list[tuple[str, BackendSettings]], np.ndarray]:
        """(label, backend config) per model and the model index of every agent."""
        def build() -> tuple[list[tuple[str, BackendSettings]], np.ndarray]:
            shares = self.conditions[condition_id].config.model_shares()
            index = assign_models([s for _, _, s in shares], self.n_agents, self.config.seed)
            return [(label, cfg) for label, cfg, _ in shares], index
        return self._memo(f"models/{condition_id}", build)

    def group_sizes(self, condition_id: str) -> np.ndarray:
        def build() -> np.ndarray:
            scen = self.scenario(condition_id)
            groups = scen.assign_groups(self.personas["agent_id"].to_numpy())
            return np.bincount(groups, minlength=scen.n_groups())
        return self._memo(f"groups/{condition_id}", build)

    def _memo(self, key: str, build):  # type: ignore[no-untyped-def]
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]  # type: ignore[return-value]


_contexts: dict[tuple[str, str], RunContext] = {}
_ctx_lock = threading.Lock()


def load_context(run_dir: str | Path) -> RunContext:
    """The cached context of ``run_dir`` (reloaded when the folder was re-created)."""
    path = Path(run_dir).resolve()
    manifest = read_manifest(path)
    live = unseal(manifest["config"])
    if has_redactions(live):
        raise ConfigError("config", f"the config of {path} held credentials, which are kept out of the run "
                          "folder: prepare the run in this process (run it again with its config file), "
                          "or pass keys through api_key_env")
    # The whole config is in the key: a resume may change fields outside the hash (dispatch, ...).
    key = (str(path), manifest["created_at"], json.dumps(live, sort_keys=True))
    with _ctx_lock:
        if key not in _contexts:
            config = validate_config(live)
            conditions = {c.condition_id: c for c in expand_design(config)}
            personas = pq.read_table(path / PERSONAS)
            _contexts[key] = RunContext(path, manifest["run_id"], config, conditions, personas,
                                        list(config.design.factors))
        return _contexts[key]


_backends: dict[str, Backend] = {}
_backend_lock = threading.Lock()


def get_backend(config: BackendSettings) -> Backend:
    """A warm backend for ``config``, built once per process."""
    key = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    with _backend_lock:
        if key not in _backends:
            log.info("starting backend %s", config.display_label())
            backend = config.build()
            # LLM backends start their engine lazily; start it here, where a failure (a typo in
            # engine_kwargs, too little GPU memory: a BackendError) stops the run with its own
            # message instead of turning into a shard of failed rows that Prefect would retry.
            getattr(backend, "engine", None)
            _backends[key] = backend
        return _backends[key]


def close_backends() -> None:
    """Release every cached backend (engines, connections, loops)."""
    with _backend_lock:
        for backend in _backends.values():
            backend.close()
        _backends.clear()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_cleanly_on_sigterm() -> None:
    """A process killed by SIGTERM's default action runs no exit handler: its run stays marked
    ``running`` and vLLM's engine processes outlive it, re-parented and keeping a core busy. Where
    nothing else handles SIGTERM, make it a ``SystemExit`` in the main thread, so the run is marked
    failed and the engines shut down on the way out. Only the main thread can set a handler;
    Prefect's, Ray's or the caller's own stay in place."""
    if threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
