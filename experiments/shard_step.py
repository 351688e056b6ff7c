"""Step 2 of a run: one shard of agents plays one round of one (condition, replicate).

Three separable parts, so that the compute can run far from the run folder (a Ray actor holding
a warm engine) while only the driver touches the disk:

* ``shard_inputs`` reads what the shard needs from the run folder (its persona rows, earlier
  rounds' settled outcome, its own earlier answers);
* ``compute_shard`` asks each model's backend for its agents' answers, parses and checks them
  and returns the decision rows as an Arrow table plus small per-model stats (no disk access);
* ``write_shard`` writes the table atomically, the stats in the file's key-value metadata (so
  the manifest's throughput figures can be rebuilt from the files by whoever finishes the run).

``run_shard`` chains the three. An existing file means the shard is done: skip.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crowdlab.experiments.backends import RequestBatch, ResponseBatch
from crowdlab.experiments.errors import ShardFailedError, UserError
from crowdlab.experiments.prompt_audit import merge_prompt_tables, prompt_tables
from crowdlab.experiments.run_context import RunContext, get_backend, load_context
from crowdlab.experiments.scenarios import History, Scenario
from crowdlab.experiments.schema import decisions_schema
from crowdlab.experiments.seeding import request_seeds
from crowdlab.experiments.storage import decision_path, prompt_path, round_part_path
from crowdlab.parquet_io import write_table_atomic

log = logging.getLogger(__name__)

STATS_KEY = b"crowdlab_shard_stats"  # decision files' key-value metadata: per-model shard stats


@dataclass(frozen=True)
class ShardSummary:
    """Counts and timings of one shard-round (small: a Prefect task result)."""

    condition_id: str
    replicate: int
    round: int
    shard: int
    n: int
    n_valid: int
    n_invalid: int
    skipped: bool
    seconds: float
    backend_seconds: float


@dataclass
class ShardInputs:
    """What one shard-round reads from the run folder (small: shipped to a remote worker)."""

    condition_id: str
    replicate: int
    round: int
    shard: int
    personas: pa.Table  # the shard's persona rows, in agent order
    history: History


@dataclass
class ShardOutput:
    """Decision rows computed for (some models of) one shard-round, not yet written.

    ``rows`` are the positions of the table's rows within the shard (all of them unless only
    some models were asked); ``stats`` is per model label: decisions, tokens, backend seconds,
    failures, retries, prefix-cache tokens and the engine that did the work.
    """

    condition_id: str
    replicate: int
    round: int
    shard: int
    table: pa.Table
    rows: np.ndarray
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    backend_seconds: float = 0.0
    prompts: pa.Table | None = None  # the prompt audit trail (None when no backend took prompts)
    prompt_messages: pa.Table | None = None


def load_history(ctx: RunContext, condition_id: str, replicate: int, round_: int, shard: int) -> History:
    """Settled outcomes of rounds before ``round_`` and this shard's own earlier answers."""
    lo, hi = ctx.shard_bounds(shard)
    own = np.full((hi - lo, round_ - 1), np.nan)
    with_texts = bool(getattr(ctx.scenario(condition_id), "remembers_texts", False))
    texts: list[pa.Array] = []
    parts = []
    for k in range(1, round_):
        part = round_part_path(ctx.run_dir, condition_id, replicate, k)
        if not part.is_file():
            raise RuntimeError(f"round {k} of {condition_id}/{replicate} is not settled yet")
        parts.append(pq.read_table(part, columns=getattr(ctx.scenario(condition_id), "public_columns", None)
                                   or ["round", "group", "mean", "target", "winning_value"]))
        mine = pq.read_table(decision_path(ctx.run_dir, condition_id, replicate, k, shard),
                             columns=["value", "valid", "text"] if with_texts else ["value", "valid"])
        if with_texts:
            texts.append(mine["text"].combine_chunks())
        own[:, k - 1] = np.where(mine["valid"].to_numpy(zero_copy_only=False),
                                 mine["value"].to_numpy(zero_copy_only=False).astype(np.float64), np.nan)
    public = pa.concat_tables(parts) if parts else None
    peer_view = getattr(ctx.scenario(condition_id), "peer_view", None)  # network scenarios read in-neighbours
    peers = peer_view(ctx, condition_id, replicate, round_, lo, hi) if peer_view is not None else None
    return History(round=round_, total_rounds=ctx.config.rounds, public=public, own_values=own,
                   own_texts=tuple(texts), peers=peers)


def _subset(history: History, mask: np.ndarray) -> History:
    keep = pa.array(mask)
    return History(history.round, history.total_rounds, history.public, history.own_values[mask],
                   tuple(t.filter(keep) for t in history.own_texts),
                   history.peers.subset(mask) if history.peers is not None else None)


def _ask(ctx: RunContext, scenario: Scenario, condition_id: str, mask: np.ndarray, ids: np.ndarray,
         groups: np.ndarray, seeds: np.ndarray, personas: pa.Table, history: History,
         backend_config) -> tuple[ResponseBatch, list | None]:  # type: ignore[no-untyped-def]
    """One backend call for the agents of one model: its responses and the chats it was sent
    (None when the backend takes no prompts)."""
    backend = get_backend(backend_config)
    sub_personas = personas.filter(pa.array(mask)) if not mask.all() else personas
    sub_hist = _subset(history, mask)
    cond_cfg = ctx.conditions[condition_id].config
    messages = None
    if backend.needs_prompts:
        messages = scenario.render(ids[mask], groups[mask], sub_personas, sub_hist, ctx.group_sizes(condition_id))
    batch = RequestBatch(
        agent_ids=ids[mask], seeds=seeds[mask], messages=messages,
        answer_schema=scenario.answer_schema(), answer_regex=scenario.answer_regex(),
        sampling=cond_cfg.sampling.settings(), personas=sub_personas,
        context=scenario.context(groups[mask], sub_hist),
    )
    try:
        out = backend.generate(batch)
    except UserError:  # the model or config must change (an engine that cannot start): stop, one line
        raise
    except Exception as exc:  # a failed call is a row with an error, never a lost row
        log.exception("backend %s failed on %d requests", backend_config.display_label(), len(batch))
        return ResponseBatch.failed(len(batch), f"backend_error: {type(exc).__name__}: {exc}"), messages
    if len(out) != len(batch):
        return (ResponseBatch.failed(len(batch), f"backend_error: {len(out)} responses for {len(batch)} requests"),
                messages)
    return out, messages


def _check_keys(ctx: RunContext, condition_id: str, round_: int) -> None:
    if condition_id not in ctx.conditions:
        raise ValueError(f"unknown condition {condition_id!r}")
    if not 1 <= round_ <= ctx.config.rounds:
        raise ValueError(f"round {round_} out of range 1..{ctx.config.rounds}")


def shard_inputs(ctx: RunContext, condition_id: str, replicate: int, round: int, shard: int) -> ShardInputs:
    """Read what one shard-round needs from the run folder (the driver's side)."""
    _check_keys(ctx, condition_id, round)
    lo, hi = ctx.shard_bounds(shard)
    history = load_history(ctx, condition_id, replicate, round, shard)
    return ShardInputs(condition_id, replicate, round, shard, ctx.personas.slice(lo, hi - lo), history)


def local_engine_name() -> str:
    """Which engine did the work, for the per-engine throughput figures (host:pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _model_stats(out: ResponseBatch, seconds: float, engine: str) -> dict[str, Any]:
    prompt = float(out.stats.get("prompt_tokens", out.input_tokens.sum()))
    hit = out.stats.get("prefix_cache_hit_rate")
    return {
        "decisions": len(out), "input_tokens": int(out.input_tokens.sum()),
        "output_tokens": int(out.output_tokens.sum()), "backend_s": seconds,
        "failures": sum(e is not None for e in out.errors), "retries": float(out.stats.get("retries", 0.0)),
        "first_error": next((e for e in out.errors if e is not None), None),
        "prompt_tokens": prompt, "cached_tokens": None if hit is None else float(hit) * prompt,
        "engine": engine,
    }


def compute_shard(ctx: RunContext, inputs: ShardInputs, models: Sequence[int] | None = None,
                  engine: str | None = None) -> ShardOutput:
    """The decision rows of one shard-round (only the agents of ``models`` when given); no disk."""
    condition_id, replicate, round_, shard = inputs.condition_id, inputs.replicate, inputs.round, inputs.shard
    _check_keys(ctx, condition_id, round_)
    engine = engine or local_engine_name()
    cond = ctx.conditions[condition_id]
    scenario = ctx.scenario(condition_id)
    lo, hi = ctx.shard_bounds(shard)
    personas, history = inputs.personas, inputs.history
    ids = personas["agent_id"].to_numpy().astype(np.int64)
    groups = scenario.assign_groups(ids)
    seeds = request_seeds(ctx.config.seed, cond.index, replicate, round_, ids)
    all_models, model_index = ctx.models(condition_id)
    model_index = model_index[lo:hi]
    wanted = range(len(all_models)) if models is None else models

    n = hi - lo
    texts = np.empty(n, dtype=object)
    values = np.full(n, np.nan)
    backend_err = np.full(n, None, dtype=object)
    truncated = np.zeros(n, dtype=bool)
    in_tok = np.zeros(n, np.int64)
    out_tok = np.zeros(n, np.int64)
    latency = np.zeros(n)
    backend_s = 0.0
    stats: dict[str, dict[str, Any]] = {}
    prompt_hash = pa.nulls(n, pa.string())
    audit: list[tuple[pa.Table, pa.Table]] = []
    for m in wanted:
        label, backend_config = all_models[m]
        mask = model_index == m
        if not mask.any():
            continue
        t0 = time.perf_counter()
        out, messages = _ask(ctx, scenario, condition_id, mask, ids, groups, seeds, personas, history, backend_config)
        # not the time it queued behind another shard on the same engine (overlapped shards)
        seconds = time.perf_counter() - t0 - float(out.stats.get("engine_wait_s", 0.0))
        if messages is not None:  # the audit trail: each distinct prompt and message once
            hashes, prompts, prompt_messages = prompt_tables(messages)
            prompt_hash = pc.replace_with_mask(prompt_hash, pa.array(mask), hashes) if not mask.all() else hashes
            audit.append((prompts, prompt_messages))
        backend_s += seconds
        stats[label] = _model_stats(out, seconds, engine)
        texts[mask] = out.texts
        backend_err[mask] = out.errors
        if out.truncated is not None:
            truncated[mask] = out.truncated
        values[mask] = out.values if out.values is not None else scenario.parse(list(out.texts))
        in_tok[mask], out_tok[mask], latency[mask] = out.input_tokens, out.output_tokens, out.latency_s

    failed = np.not_equal(backend_err, None)
    values[failed] = np.nan
    valid, errors = scenario.check(values)
    # One cause per invalid row (schema.INVALID_CAUSES): a backend error, else an answer cut off
    # at max_tokens (invalid even where a number could be read from its start), else the check's.
    truncated &= ~failed
    valid = valid & ~truncated
    errors_arr = np.array(errors, dtype=object)
    errors_arr[truncated] = "truncated"
    errors_arr[failed] = [_backend_error(e) for e in backend_err[failed].tolist()]
    labels = np.array([label for label, _ in all_models], dtype=object)[model_index]
    typed: dict[str, pa.Array] = {}
    if hasattr(scenario, "answer_columns"):  # declarative scenarios: one typed column per answer field
        typed, valid, errors_arr = scenario.answer_columns(texts, valid, errors_arr)

    schema = decisions_schema(ctx.factor_names, getattr(scenario, "answer_arrow_fields", list)(), prompt_hash=True)
    columns = {
        **key_columns(ctx.run_id, condition_id, replicate, "round", round_, shard, ids, groups, labels, seeds),
        "text": pa.array(texts, pa.string()),
        "value": pa.array(values, pa.float64(), from_pandas=True),
        "valid": pa.array(valid),
        "error": pa.array(errors_arr, pa.string()),
        "input_tokens": pc.cast(pa.array(in_tok), pa.int32()),
        "output_tokens": pc.cast(pa.array(out_tok), pa.int32()),
        "latency_s": pa.array(latency),
        "prompt_hash": prompt_hash,
    }
    columns.update(typed)
    for name in ctx.factor_names:
        columns[name] = pa.array([cond.factors[name]] * n, pa.string())
    table, rows = rows_of_models(pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema),
                                 model_index, models)
    prompts, prompt_messages = merge_prompt_tables(audit)
    return ShardOutput(condition_id, replicate, round_, shard, table, rows, stats, backend_s, prompts, prompt_messages)


def rows_of_models(table: pa.Table, model_index: np.ndarray, models: Sequence[int] | None
                   ) -> tuple[pa.Table, np.ndarray]:
    """The rows of a shard's table that ``models`` answered (all when None) and their positions in
    the shard: what one engine pool sends back for the driver to merge."""
    if models is None:
        return table, np.arange(table.num_rows, dtype=np.int64)
    rows = np.flatnonzero(np.isin(model_index, list(models)))
    return table.take(pa.array(rows)), rows


def key_columns(run_id: str, condition_id: str, replicate: int, step: str, step_value: int, shard: int,
                ids: np.ndarray, groups: np.ndarray, labels: np.ndarray, seeds: np.ndarray) -> dict[str, pa.Array]:
    """The key columns every per-agent row starts with (decisions: ``step`` "round"; interviews:
    "after_round"): run, condition, replicate, step, shard, agent, group, model, seed."""
    n = ids.shape[0]
    return {
        "run_id": pa.array([run_id] * n, pa.string()),
        "condition_id": pa.array([condition_id] * n, pa.string()),
        "replicate": pa.array(np.full(n, replicate, np.int32)),
        step: pa.array(np.full(n, step_value, np.int32)),
        "shard": pa.array(np.full(n, shard, np.int32)),
        "agent_id": pa.array(ids),
        "group": pa.array(groups.astype(np.int32)),
        "model": pa.array(labels, pa.string()),
        "seed": pa.array(seeds),
    }


def _backend_error(message: str) -> str:
    """The ``error`` value of a failed call: cause ``backend_error`` then the backend's message."""
    return message if message.startswith("backend_error") else f"backend_error: {message}"


def merge_outputs(parts: Sequence[ShardOutput]) -> ShardOutput:
    """One shard's output from per-model parts (mixed-model pools), rows back in agent order."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    rows = np.concatenate([p.rows for p in parts])
    order = np.argsort(rows, kind="stable")
    table = pa.concat_tables([p.table for p in parts]).take(pa.array(order))
    stats = {label: s for p in parts for label, s in p.stats.items()}
    prompts, prompt_messages = merge_prompt_tables([(p.prompts, p.prompt_messages) for p in parts])
    return ShardOutput(first.condition_id, first.replicate, first.round, first.shard, table, rows[order],
                       stats, sum(p.backend_seconds for p in parts), prompts, prompt_messages)


def _check_failures(ctx: RunContext, output: ShardOutput) -> None:
    """Refuse to store a shard whose backend failed too often: resume must ask those agents again."""
    n = output.table.num_rows
    failed = sum(int(s.get("failures", 0)) for s in output.stats.values())
    if n == 0 or failed <= ctx.config.max_failed_share * n:
        return
    first = next((s["first_error"] for s in output.stats.values() if s.get("first_error")), "")
    raise ShardFailedError(
        f"{failed} of {n} requests of shard {output.shard} ({output.condition_id}, replicate {output.replicate}, "
        f"round {output.round}) failed in the backend (max_failed_share {ctx.config.max_failed_share}); "
        f"the shard was not written, re-run the same run id to resume. First error: {first}")


def write_shard(ctx: RunContext, output: ShardOutput, started: float | None = None) -> ShardSummary:
    """Write a complete shard's decisions atomically (the driver's side); stats go in metadata."""
    lo, hi = ctx.shard_bounds(output.shard)
    n_expected = hi - lo
    if output.table.num_rows != n_expected:
        raise RuntimeError(f"shard {output.shard} of {output.condition_id}/{output.replicate}/round "
                           f"{output.round} has {output.table.num_rows} rows, expected {n_expected}")
    _check_failures(ctx, output)
    path = decision_path(ctx.run_dir, output.condition_id, output.replicate, output.round, output.shard)
    if output.prompts is not None:  # before the decisions: their file marks the shard done
        keys = (ctx.run_dir, output.condition_id, output.replicate, output.round, output.shard)
        write_table_atomic(output.prompts, prompt_path(*keys))
        write_table_atomic(output.prompt_messages, prompt_path(*keys, table="prompt_messages"))
    meta = dict(output.table.schema.metadata or {})
    meta[STATS_KEY] = json.dumps({"models": output.stats}).encode()
    write_table_atomic(output.table.replace_schema_metadata(meta), path)
    n = output.table.num_rows
    n_valid = int(pc.sum(output.table["valid"]).as_py() or 0)
    seconds = time.perf_counter() - started if started is not None else output.backend_seconds
    return ShardSummary(output.condition_id, output.replicate, output.round, output.shard, n, n_valid,
                        n - n_valid, False, seconds, output.backend_seconds)


def read_shard_stats(path: str | Path) -> dict[str, dict[str, Any]]:
    """Per-model stats stored in a decision file's metadata ({} for files written without them)."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(STATS_KEY)
    return json.loads(raw)["models"] if raw else {}


def run_shard(run_dir: str | Path, condition_id: str, replicate: int, round: int, shard: int) -> ShardSummary:
    """Play one round for one shard and write its decisions file (skip if it exists)."""
    started = time.perf_counter()
    ctx = load_context(run_dir)
    _check_keys(ctx, condition_id, round)
    path = decision_path(ctx.run_dir, condition_id, replicate, round, shard)
    lo, hi = ctx.shard_bounds(shard)
    if path.is_file():
        return ShardSummary(condition_id, replicate, round, shard, hi - lo, -1, -1, True,
                            time.perf_counter() - started, 0.0)
    output = compute_shard(ctx, shard_inputs(ctx, condition_id, replicate, round, shard))
    return write_shard(ctx, output, started)
