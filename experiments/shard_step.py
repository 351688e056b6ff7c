"""Step 2 of a run: one shard of agents plays one round of one (condition, replicate).

It reads the settled history from disk (earlier rounds' outcome parts and this shard's own
earlier decisions), asks each model's backend for its agents' answers, parses and checks them,
and writes one decisions file atomically. An existing file means the shard is done: skip.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crowdlab.experiments.backends import RequestBatch, ResponseBatch
from crowdlab.experiments.run_context import RunContext, get_backend, load_context
from crowdlab.experiments.scenarios import History, Scenario
from crowdlab.experiments.schema import decisions_schema
from crowdlab.experiments.seeding import request_seeds
from crowdlab.experiments.storage import decision_path, round_part_path
from crowdlab.parquet_io import write_table_atomic

log = logging.getLogger(__name__)


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


def load_history(ctx: RunContext, condition_id: str, replicate: int, round_: int, shard: int) -> History:
    """Settled outcomes of rounds before ``round_`` and this shard's own earlier answers."""
    lo, hi = ctx.shard_bounds(shard)
    own = np.full((hi - lo, round_ - 1), np.nan)
    parts = []
    for k in range(1, round_):
        part = round_part_path(ctx.run_dir, condition_id, replicate, k)
        if not part.is_file():
            raise RuntimeError(f"round {k} of {condition_id}/{replicate} is not settled yet")
        parts.append(pq.read_table(part, columns=["round", "group", "mean", "target", "winning_value"]))
        mine = pq.read_table(decision_path(ctx.run_dir, condition_id, replicate, k, shard),
                             columns=["value", "valid"])
        own[:, k - 1] = np.where(mine["valid"].to_numpy(zero_copy_only=False),
                                 mine["value"].to_numpy(zero_copy_only=False).astype(np.float64), np.nan)
    public = pa.concat_tables(parts) if parts else None
    return History(round=round_, total_rounds=ctx.config.rounds, public=public, own_values=own)


def _subset(history: History, mask: np.ndarray) -> History:
    return History(history.round, history.total_rounds, history.public, history.own_values[mask])


def _ask(ctx: RunContext, scenario: Scenario, condition_id: str, mask: np.ndarray, ids: np.ndarray,
         groups: np.ndarray, seeds: np.ndarray, personas: pa.Table, history: History,
         backend_config) -> ResponseBatch:  # type: ignore[no-untyped-def]
    """One backend call for the agents of one model."""
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
    except Exception as exc:  # a failed call is a row with an error, never a lost row
        log.exception("backend %s failed on %d requests", backend_config.display_label(), len(batch))
        return ResponseBatch.failed(len(batch), f"backend_error: {type(exc).__name__}: {exc}")
    if len(out) != len(batch):
        return ResponseBatch.failed(len(batch), f"backend_error: {len(out)} responses for {len(batch)} requests")
    return out


def run_shard(run_dir: str | Path, condition_id: str, replicate: int, round: int, shard: int) -> ShardSummary:
    """Play one round for one shard and write its decisions file (skip if it exists)."""
    started = time.perf_counter()
    ctx = load_context(run_dir)
    if condition_id not in ctx.conditions:
        raise ValueError(f"unknown condition {condition_id!r}")
    if not 1 <= round <= ctx.config.rounds:
        raise ValueError(f"round {round} out of range 1..{ctx.config.rounds}")
    path = decision_path(ctx.run_dir, condition_id, replicate, round, shard)
    lo, hi = ctx.shard_bounds(shard)
    if path.is_file():
        return ShardSummary(condition_id, replicate, round, shard, hi - lo, -1, -1, True,
                            time.perf_counter() - started, 0.0)

    cond = ctx.conditions[condition_id]
    scenario = ctx.scenario(condition_id)
    personas = ctx.personas.slice(lo, hi - lo)
    ids = personas["agent_id"].to_numpy().astype(np.int64)
    groups = scenario.assign_groups(ids)
    seeds = request_seeds(ctx.config.seed, cond.index, replicate, round, ids)
    history = load_history(ctx, condition_id, replicate, round, shard)
    models, model_index = ctx.models(condition_id)
    model_index = model_index[lo:hi]

    n = hi - lo
    texts = np.empty(n, dtype=object)
    values = np.full(n, np.nan)
    backend_err = np.full(n, None, dtype=object)
    in_tok = np.zeros(n, np.int64)
    out_tok = np.zeros(n, np.int64)
    latency = np.zeros(n)
    backend_s = 0.0
    for m, (label, backend_config) in enumerate(models):
        mask = model_index == m
        if not mask.any():
            continue
        t0 = time.perf_counter()
        out = _ask(ctx, scenario, condition_id, mask, ids, groups, seeds, personas, history, backend_config)
        backend_s += time.perf_counter() - t0
        texts[mask] = out.texts
        backend_err[mask] = out.errors
        values[mask] = out.values if out.values is not None else scenario.parse(list(out.texts))
        in_tok[mask], out_tok[mask], latency[mask] = out.input_tokens, out.output_tokens, out.latency_s

    failed = np.not_equal(backend_err, None)
    values[failed] = np.nan
    valid, errors = scenario.check(values)
    errors_arr = np.where(failed, backend_err, np.array(errors, dtype=object))
    labels = np.array([label for label, _ in models], dtype=object)[model_index]

    schema = decisions_schema(ctx.factor_names)
    columns = {
        "run_id": pa.array([ctx.run_id] * n, pa.string()),
        "condition_id": pa.array([condition_id] * n, pa.string()),
        "replicate": pa.array(np.full(n, replicate, np.int32)),
        "round": pa.array(np.full(n, round, np.int32)),
        "shard": pa.array(np.full(n, shard, np.int32)),
        "agent_id": pa.array(ids),
        "group": pa.array(groups.astype(np.int32)),
        "model": pa.array(labels, pa.string()),
        "seed": pa.array(seeds),
        "text": pa.array(texts, pa.string()),
        "value": pa.array(values, pa.float64(), from_pandas=True),
        "valid": pa.array(valid),
        "error": pa.array(errors_arr, pa.string()),
        "input_tokens": pc.cast(pa.array(in_tok), pa.int32()),
        "output_tokens": pc.cast(pa.array(out_tok), pa.int32()),
        "latency_s": pa.array(latency),
    }
    for name in ctx.factor_names:
        columns[name] = pa.array([cond.factors[name]] * n, pa.string())
    table = pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
    write_table_atomic(table, path)
    n_valid = int(valid.sum())
    return ShardSummary(condition_id, replicate, round, shard, n, n_valid, n - n_valid, False,
                        time.perf_counter() - started, backend_s)
