"""The canonical pyarrow schemas of the run folder's tables (see docs/contracts.md).

Factor columns (one string column per design factor, named after the factor) are appended per
run, so the schemas are built by functions that take the factor names.
"""

from __future__ import annotations

import pyarrow as pa

# 2: declarative scenarios add typed ``answer_<field>`` + ``answer_errors`` decision columns and
# ``outcome_<name>`` rounds columns (absent in version-1 runs; loading reads them as null).
# 3: ``prompt_hash`` on each decision row and the ``prompts/`` + ``prompt_messages/`` tables
# (the prompt audit trail; null in older runs and for backends that take no prompts).
SCHEMA_VERSION = 3


def _key_fields(step: pa.Field, seed: pa.Field) -> list[pa.Field]:
    """The key columns every per-agent row starts with (``shard_step.key_columns`` builds their
    values): run, condition, replicate, ``step`` (the round, or the round an interview follows),
    shard, agent, group, model, ``seed``."""
    return [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("condition_id", pa.string(), nullable=False),
        pa.field("replicate", pa.int32(), nullable=False),
        step,
        pa.field("shard", pa.int32(), nullable=False),
        pa.field("agent_id", pa.int64(), nullable=False),
        pa.field("group", pa.int32(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        seed,
    ]


DECISIONS_FIELDS: list[pa.Field] = [
    *_key_fields(pa.field("round", pa.int32(), nullable=False, metadata={"meaning": "1-based"}),
                 pa.field("seed", pa.int64(), nullable=False)),
    pa.field("text", pa.string(), metadata={"meaning": "raw answer text as returned"}),
    pa.field("value", pa.float64(), metadata={"meaning": "parsed answer; null when unparseable"}),
    pa.field("valid", pa.bool_(), nullable=False),
    pa.field("error", pa.string(), metadata={
        "meaning": "null when valid; else the cause: unparseable, out_of_range, truncated, or "
                   "'backend_error: <message>'"}),
    pa.field("input_tokens", pa.int32()),
    pa.field("output_tokens", pa.int32()),
    pa.field("latency_s", pa.float64(), metadata={"unit": "seconds"}),
]

# What a scenario's settle() returns: the outcome part of a rounds row.
ROUND_OUTCOME_SCHEMA = pa.schema([
    pa.field("group", pa.int32(), nullable=False, metadata={"meaning": "-1 = all groups"}),
    pa.field("n", pa.int64()),
    pa.field("n_valid", pa.int64()),
    pa.field("n_invalid", pa.int64()),
    pa.field("mean", pa.float64()),
    pa.field("median", pa.float64()),
    pa.field("std", pa.float64(), metadata={"meaning": "sample standard deviation (ddof=1)"}),
    pa.field("target", pa.float64()),
    pa.field("winning_value", pa.float64()),
    pa.field("n_winners", pa.int64()),
    pa.field("winner_ids", pa.list_(pa.int64())),
    pa.field("p", pa.float64()),
    pa.field("offset", pa.float64()),
    pa.field("lo", pa.float64()),
    pa.field("hi", pa.float64()),
])

#: Why a decision is invalid: the ``error`` column starts with one of these (a backend error
#: carries its message after ``backend_error: ``). Each has a count column in the rounds table.
INVALID_CAUSES: tuple[str, ...] = ("unparseable", "out_of_range", "truncated", "backend_error")

#: Per-cause invalid counts of a rounds row (they add up to ``n_invalid``).
ROUND_CAUSE_FIELDS: list[pa.Field] = [pa.field(f"n_{cause}", pa.int64()) for cause in INVALID_CAUSES]

ROUND_KEY_FIELDS: list[pa.Field] = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("condition_id", pa.string(), nullable=False),
    pa.field("replicate", pa.int32(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
]


def _factor_fields(factor_names: list[str]) -> list[pa.Field]:
    return [pa.field(name, pa.string()) for name in factor_names]


#: The prompt a decision answered (``prompts/``; null when the backend took no prompt).
PROMPT_HASH_FIELD = pa.field("prompt_hash", pa.string(), metadata={
    "meaning": "key of the prompt in prompts/ (same shard path); null when the backend takes no prompts"})


def decisions_schema(factor_names: list[str], answer_fields: list[pa.Field] | None = None, *,
                     prompt_hash: bool = False) -> pa.Schema:
    """Decision rows of a run whose design crosses ``factor_names``; ``prompt_hash`` (the
    engine always writes it; schema version 3) follows ``latency_s``, then a declarative
    scenario's typed answer columns (``answer_fields``), then the factor columns."""
    audit = [PROMPT_HASH_FIELD] if prompt_hash else []
    return pa.schema(DECISIONS_FIELDS + audit + list(answer_fields or []) + _factor_fields(factor_names),
                     metadata={"crowdlab_schema": f"decisions/{SCHEMA_VERSION}"})


# The prompt audit trail (experiments/prompt_audit.py), one file each per shard-round beside the
# decisions: each distinct prompt once (its ordered message hashes), each distinct message once.
PROMPTS_FIELDS: list[pa.Field] = [
    pa.field("prompt_hash", pa.string(), nullable=False, metadata={"meaning": "sha256 of the message hashes, 32 hex"}),
    pa.field("message_hashes", pa.list_(pa.string()), nullable=False,
             metadata={"meaning": "the chat's messages in order (keys of prompt_messages/)"}),
]
PROMPT_MESSAGES_FIELDS: list[pa.Field] = [
    pa.field("message_hash", pa.string(), nullable=False,
             metadata={"meaning": "sha256 of role + NUL + content, 32 hex"}),
    pa.field("role", pa.string(), nullable=False),
    pa.field("content", pa.string(), nullable=False),
]


def prompts_schema() -> pa.Schema:
    return pa.schema(PROMPTS_FIELDS, metadata={"crowdlab_schema": "prompts/1"})


def prompt_messages_schema() -> pa.Schema:
    return pa.schema(PROMPT_MESSAGES_FIELDS, metadata={"crowdlab_schema": "prompt_messages/1"})


def rounds_schema(factor_names: list[str], outcome_fields: list[pa.Field] | None = None) -> pa.Schema:
    """Rounds rows: keys, the scenario outcome, invalid counts per cause, a declarative
    scenario's ``outcome_<name>`` columns, then the factor columns."""
    return pa.schema(ROUND_KEY_FIELDS + list(ROUND_OUTCOME_SCHEMA) + ROUND_CAUSE_FIELDS
                     + list(outcome_fields or []) + _factor_fields(factor_names),
                     metadata={"crowdlab_schema": f"rounds/{SCHEMA_VERSION}"})


# The run's social network (``network.parquet``): one row per edge, agent ids, sorted by
# (source, target). Undirected graphs store each edge once with source < target.
NETWORK_FIELDS: list[pa.Field] = [
    pa.field("source", pa.int64(), nullable=False, metadata={"meaning": "agent id the edge starts at (who is heard)"}),
    pa.field("target", pa.int64(), nullable=False, metadata={"meaning": "agent id the edge ends at (who hears)"}),
    pa.field("weight", pa.float64(), nullable=False, metadata={"meaning": "tie strength, >= 0; 1 unless given"}),
]


def network_schema(directed: bool) -> pa.Schema:
    """``network.parquet``; the ``directed`` metadata says whether an edge is read one way or both."""
    return pa.schema(NETWORK_FIELDS, metadata={"crowdlab_schema": "network/1", "directed": str(directed).lower()})


# Posts agents wrote (``messages/<condition>/replicate-<r>/round-<k>.parquet``): each stored once,
# read by the sender's out-neighbours next round(s) through the CSR index, never copied per reader.
MESSAGES_FIELDS: list[pa.Field] = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("condition_id", pa.string(), nullable=False),
    pa.field("replicate", pa.int32(), nullable=False),
    pa.field("round", pa.int32(), nullable=False, metadata={"meaning": "1-based round the post was written in"}),
    pa.field("sender", pa.int64(), nullable=False, metadata={"meaning": "agent id of the author"}),
    pa.field("text", pa.string(), nullable=False, metadata={"meaning": "the post, capped at the scenario's max_chars"}),
]


def messages_schema() -> pa.Schema:
    return pa.schema(MESSAGES_FIELDS, metadata={"crowdlab_schema": "messages/1"})


# Interviews (experiments/interviews.py): one row per interviewed agent, per (condition,
# replicate, shard), in interviews/<condition>/replicate-<r>/shard-<s>.parquet; the typed
# ``answer_<field>`` columns of the interview's fields and ``answer_errors`` follow ``prompt_hash``.
INTERVIEW_FIELDS: list[pa.Field] = [
    *_key_fields(pa.field("after_round", pa.int32(), nullable=False,
                          metadata={"meaning": "the interview follows this round"}),
                 pa.field("seed", pa.int64(), nullable=False,
                          metadata={"meaning": "from (run seed, condition, replicate, agent, 'interview')"})),
    pa.field("text", pa.string(), metadata={"meaning": "raw answer text as returned"}),
    pa.field("valid", pa.bool_(), nullable=False),
    pa.field("error", pa.string(), metadata={"meaning": "null when valid; else the first cause (as decisions), "
                                                        "or 'no_prompts' when the backend takes no prompts"}),
    pa.field("input_tokens", pa.int32()),
    pa.field("output_tokens", pa.int32()),
    pa.field("prompt_hash", pa.string(), metadata={
        "meaning": "key of the chat in interview_prompts/ (same shard path); null when not asked"}),
]


def interviews_schema(answer_fields: list[pa.Field]) -> pa.Schema:
    """``answer_fields``: ``answers.answer_arrow_fields`` of the interview (``answer_errors`` included)."""
    return pa.schema(INTERVIEW_FIELDS + list(answer_fields), metadata={"crowdlab_schema": "interviews/1"})
