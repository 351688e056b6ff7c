"""crowdlab.experiments: configs, scenarios, backends, and the round runner.

Public API: ``load_config``, ``run``, and the step functions a Prefect flow wraps
(``prepare_run``, ``run_shard``, ``settle_round``, ``finish_run``).
"""

from crowdlab.experiments.config import ExperimentConfig, load_config, validate_config
from crowdlab.experiments.design import Condition, expand_design
from crowdlab.experiments.errors import ConfigError, ShardFailedError, UserError
from crowdlab.experiments.prepare import RunHandle, preflight, prepare_run
from crowdlab.experiments.run_context import close_backends
from crowdlab.experiments.runner import RunResult, execute, finish_run, run
from crowdlab.experiments.settle_step import RoundSummary, settle_round
from crowdlab.experiments.shard_step import ShardSummary, run_shard

__all__ = [
    "Condition", "ConfigError", "ExperimentConfig", "RoundSummary", "RunHandle", "RunResult",
    "ShardFailedError", "ShardSummary", "close_backends", "execute", "expand_design", "finish_run", "load_config",
    "preflight", "prepare_run", "run", "run_shard", "settle_round", "UserError", "validate_config",
]
