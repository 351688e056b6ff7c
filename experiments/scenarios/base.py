"""What every scenario provides to the runner: rules, prompts, an answer schema, parsing and
settling. The runner knows shards, seeds and storage; the scenario knows only the game.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from crowdlab.experiments.backends.base import Message


@dataclass(frozen=True)
class History:
    """What settled earlier rounds leave for the next round of one shard of agents.

    ``public`` holds the settled rounds rows (every group, rounds before the current one);
    ``own_values`` is (n_agents, rounds so far) with the agents' own parsed answers in shard
    order (NaN where invalid). Both are empty in round 1. ``own_texts`` holds the agents' own
    answer texts, one string array per earlier round in shard order, for scenarios whose
    ``remembers_texts`` is true (empty otherwise).
    """

    round: int
    total_rounds: int
    public: pa.Table | None
    own_values: np.ndarray  # float64, shape (n_agents, round - 1)
    own_texts: tuple[pa.Array, ...] = ()  # round - 1 string arrays of n_agents, or ()
    peers: Any = None  # network scenarios: what the agents read from in-neighbours (network.peers.PeerView)


@runtime_checkable
class Scenario(Protocol):
    """A game the runner can play round by round with any backend.

    Optional hooks, looked up with ``getattr`` by the runner (declarative scenarios have them):
    ``answer_arrow_fields()`` and ``answer_columns(texts, valid, errors)`` (typed ``answer_*``
    decision columns), ``settle_columns()`` and ``outcome_fields()`` (what settling reads and the
    ``outcome_*`` rounds columns), ``public_columns`` (rounds columns the next rounds read),
    ``persona_column_path(column)`` and ``trial_render(columns)`` (preflight checks).
    """

    name: str

    def required_persona_columns(self) -> set[str]:
        """Persona columns the prompts need (checked before a run starts)."""
        ...

    def n_groups(self) -> int: ...

    def assign_groups(self, agent_ids: np.ndarray) -> np.ndarray:
        """Group index (int32) per agent; a pure function of the id, so shard-independent."""
        ...

    def render(
        self, agent_ids: np.ndarray, groups: np.ndarray, personas: pa.Table, history: History,
        group_sizes: np.ndarray,
    ) -> list[list[Message]]:
        """Chats with the shared part first and the agent-specific part last."""
        ...

    def context(self, groups: np.ndarray, history: History) -> dict[str, Any]:
        """Rules and public history as numbers, for backends that do not read prompts."""
        ...

    def answer_schema(self) -> dict[str, Any]: ...

    def answer_regex(self) -> str: ...

    def parse(self, texts: list[str]) -> np.ndarray:
        """One float per answer text, NaN where unparseable."""
        ...

    def check(self, values: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        """(valid mask, error per answer) for parsed values (NaN -> ``unparseable``)."""
        ...

    def settle(self, decisions: pa.Table) -> pa.Table:
        """Outcome rows per group (and ``group`` -1 for all) from one round's decisions
        (columns ``agent_id``, ``group``, ``value``, ``valid``)."""
        ...
