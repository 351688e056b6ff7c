"""Interviews: follow-up questions after a round of a declarative scenario (``scenario.interview``).

Every agent, or a seeded sample, is asked the interview's questions with its whole history in
context (the game's system prompt and persona part, every round up to ``after_round`` with its
own answers, reasoning and payoffs, and what it saw of its group). One chat and one JSON answer
per agent; the answers are typed like decisions (``experiments/answers``).

Interviews never feed back into play, so they are a step of the run done at ``finish_run`` (for
the local runner, the Prefect flows and Ray, which all finish through it): per (condition,
replicate, shard) one file ``interviews/<condition>/replicate-<r>/shard-<s>.parquet``
(``schema.interviews_schema``), written atomically after its prompt audit files
(``interview_prompts/``, ``interview_prompt_messages/``, same shard path). An existing file means
that shard is done, so a killed run resumes where it stopped.

A shard splits like a decision shard (``shard_step``): ``interview_inputs`` reads the sampled
agents and their histories (the driver), ``compute_interview`` asks each model's backend with no
disk access (only some models' agents when given: a Ray engine actor of one model pool, which
the Ray executor uses to answer interviews on its warm engines), ``merge_interviews`` joins the
per-model parts and ``write_interview`` writes them; ``run_interview_shard`` chains them.

Seeds: ``combine(run seed, condition index, replicate, agent, salt=interview)``; the sample draws
from the same hash, so who is asked does not depend on the sharding.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.experiments.answers import answer_arrow_fields, answer_schema, column_name, parse_answers
from crowdlab.experiments.backends import RequestBatch, ResponseBatch
from crowdlab.experiments.errors import UserError
from crowdlab.experiments.prompt_audit import merge_prompt_tables, prompt_tables
from crowdlab.experiments.run_context import RunContext, get_backend, load_context
from crowdlab.experiments.scenarios import History
from crowdlab.experiments.schema import interviews_schema
from crowdlab.experiments.seeding import uniforms
from crowdlab.experiments.storage import read_manifest
from crowdlab.experiments.shard_step import _subset, key_columns, load_history, rows_of_models
from crowdlab.hashing import MASK63, combine
from crowdlab.parquet_io import write_table_atomic

log = logging.getLogger(__name__)

_INTERVIEW_SALT = 0x1A7E  # 'interview'
_SAMPLE_STREAM = 21
NO_PROMPTS = "no_prompts"


def interview_path(run_dir: Path, condition_id: str, replicate: int, shard: int,
                   table: str = "interviews") -> Path:
    return Path(run_dir) / table / condition_id / f"replicate-{replicate}" / f"shard-{shard:05d}.parquet"


def interview_seeds(run_seed: int, condition_index: int, replicate: int, agent_ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(agent_ids, dtype=np.int64)
    h = combine(run_seed, condition_index, replicate, ids, salt=_INTERVIEW_SALT)
    return np.broadcast_to(h & MASK63, ids.shape).astype(np.int64)


def sample_mask(ctx: RunContext, condition_id: str, replicate: int, ids: np.ndarray) -> np.ndarray:
    """Which of ``ids`` are interviewed: a share draws each agent alone, ``{n: k}`` takes the k
    agents of the whole population with the smallest draws; either way shard-invariant."""
    interview = ctx.scenario(condition_id).params.interview  # type: ignore[attr-defined]
    share, n = interview.sample_share_or_n()
    index = ctx.conditions[condition_id].index
    if share is not None:
        if share >= 1.0:
            return np.ones(ids.shape[0], dtype=bool)
        return uniforms(interview_seeds(ctx.config.seed, index, replicate, ids), _SAMPLE_STREAM) < share
    all_ids = ctx.personas["agent_id"].to_numpy().astype(np.int64)
    if n >= all_ids.shape[0]:
        return np.ones(ids.shape[0], dtype=bool)
    u = uniforms(interview_seeds(ctx.config.seed, index, replicate, all_ids), _SAMPLE_STREAM)
    chosen = all_ids[np.argsort(u, kind="stable")[: int(n)]]
    return np.isin(ids, chosen)


@dataclass
class InterviewInputs:
    """What one interview shard reads from the run folder (small: shipped to a remote engine):
    the sampled agents' persona rows and histories, ``keep`` the sample within the shard."""

    condition_id: str
    replicate: int
    shard: int
    after_round: int
    keep: np.ndarray
    personas: pa.Table
    history: History


@dataclass
class InterviewOutput:
    """Interview rows of (some models of) one shard, not yet written; ``rows``: their positions
    among the shard's sampled agents."""

    condition_id: str
    replicate: int
    shard: int
    table: pa.Table
    rows: np.ndarray
    prompts: pa.Table | None = None
    prompt_messages: pa.Table | None = None


def has_interview(ctx: RunContext, condition_id: str) -> bool:
    return getattr(getattr(ctx.scenario(condition_id), "params", None), "interview", None) is not None


def interview_inputs(ctx: RunContext, condition_id: str, replicate: int, shard: int) -> InterviewInputs:
    """Read one shard's sampled agents and their histories up to ``after_round`` (the driver's side)."""
    interview = ctx.scenario(condition_id).params.interview  # type: ignore[attr-defined]
    after = interview.round_after(ctx.config.rounds)
    lo, hi = ctx.shard_bounds(shard)
    history = load_history(ctx, condition_id, replicate, after + 1, shard)
    personas = ctx.personas.slice(lo, hi - lo)
    keep = sample_mask(ctx, condition_id, replicate, personas["agent_id"].to_numpy().astype(np.int64))
    return InterviewInputs(condition_id, replicate, shard, after, keep, personas.filter(pa.array(keep)),
                           _subset(history, keep))


def interview_models(ctx: RunContext, condition_id: str, replicate: int, shard: int) -> list[int]:
    """The model indices of a shard's sampled agents (no history read): who must be asked."""
    lo, hi = ctx.shard_bounds(shard)
    keep = sample_mask(ctx, condition_id, replicate, ctx.personas["agent_id"].to_numpy()[lo:hi].astype(np.int64))
    return sorted(set(ctx.models(condition_id)[1][lo:hi][keep].tolist()))


def compute_interview(ctx: RunContext, inputs: InterviewInputs, models: Sequence[int] | None = None) -> InterviewOutput:
    """The interview rows of one shard (only the agents of ``models`` when given), each agent
    asked by the model that played it; no disk access, so an engine actor can run it."""
    condition_id, replicate, shard = inputs.condition_id, inputs.replicate, inputs.shard
    scenario = ctx.scenario(condition_id)
    interview = scenario.params.interview  # type: ignore[attr-defined]
    after = inputs.after_round
    lo, hi = ctx.shard_bounds(shard)
    personas, history = inputs.personas, inputs.history
    ids = personas["agent_id"].to_numpy().astype(np.int64)
    groups = scenario.assign_groups(ids)
    cond = ctx.conditions[condition_id]
    seeds = interview_seeds(ctx.config.seed, cond.index, replicate, ids)
    all_models, model_index = ctx.models(condition_id)
    model_index = model_index[lo:hi][inputs.keep]
    wanted = range(len(all_models)) if models is None else models
    fields = interview.fields
    n = ids.shape[0]
    texts = np.full(n, "", dtype=object)
    backend_err = np.full(n, None, dtype=object)
    in_tok = np.zeros(n, np.int64)
    out_tok = np.zeros(n, np.int64)
    prompt_hash = pa.nulls(n, pa.string())
    audit = []
    for m in wanted:
        label, backend_config = all_models[m]
        mask = model_index == m
        if not mask.any():
            continue
        backend = get_backend(backend_config)
        if not backend.needs_prompts:  # a rule-based baseline has nothing to say in an interview
            backend_err[mask] = NO_PROMPTS
            continue
        sub_hist = _subset(history, mask)
        sub_personas = personas.filter(pa.array(mask))
        messages = scenario.render_interview(ids[mask], groups[mask], sub_personas, sub_hist,  # type: ignore[attr-defined]
                                             ctx.group_sizes(condition_id))
        hashes, prompts, prompt_messages = prompt_tables(messages)
        prompt_hash = pc.replace_with_mask(prompt_hash, pa.array(mask), hashes) if not mask.all() else hashes
        audit.append((prompts, prompt_messages))
        batch = RequestBatch(agent_ids=ids[mask], seeds=seeds[mask], messages=messages,
                             answer_schema=answer_schema(fields), answer_regex=None,
                             sampling=cond.config.sampling.settings(), personas=sub_personas,
                             context={**scenario.context(groups[mask], sub_hist), "interview": True})
        try:
            out = backend.generate(batch)
        except UserError:
            raise
        except Exception as exc:  # a failed call is a row with an error, never a lost row
            log.exception("backend %s failed on %d interview requests", label, len(batch))
            out = ResponseBatch.failed(len(batch), f"backend_error: {type(exc).__name__}: {exc}")
        if len(out) != len(batch):
            out = ResponseBatch.failed(len(batch), f"backend_error: {len(out)} responses for {len(batch)} requests")
        texts[mask] = out.texts
        backend_err[mask] = [None if e is None else (e if e.startswith("backend_error") else f"backend_error: {e}")
                             for e in out.errors]
        in_tok[mask], out_tok[mask] = out.input_tokens, out.output_tokens

    failed = np.not_equal(backend_err, None)
    texts[failed] = np.where(backend_err[failed] == NO_PROMPTS, None, texts[failed])
    parsed = parse_answers(pa.array(list(texts), pa.string()).fill_null(""), fields)
    valid = parsed.valid & ~failed
    errors = np.where(failed, backend_err, np.asarray(parsed.error, dtype=object))
    labels = np.array([label for label, _ in all_models], dtype=object)[model_index]
    columns = {
        **key_columns(ctx.run_id, condition_id, replicate, "after_round", after, shard, ids, groups, labels, seeds),
        "text": pa.array(texts, pa.string()),
        "valid": pa.array(valid, pa.bool_()),
        "error": pa.array(errors, pa.string()),
        "input_tokens": pc.cast(pa.array(in_tok), pa.int32()),
        "output_tokens": pc.cast(pa.array(out_tok), pa.int32()),
        "prompt_hash": prompt_hash,
    }
    columns.update({column_name(name): arr for name, arr in parsed.columns.items()})
    columns["answer_errors"] = parsed.errors_column()
    schema = interviews_schema(answer_arrow_fields(fields))
    table, rows = rows_of_models(pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema),
                                 model_index, models)
    prompts, prompt_messages = merge_prompt_tables(audit)
    return InterviewOutput(condition_id, replicate, shard, table, rows, prompts, prompt_messages)


def merge_interviews(parts: Sequence[InterviewOutput]) -> InterviewOutput:
    """One shard's interview rows from per-model parts, back in agent order."""
    if len(parts) == 1:
        return parts[0]
    rows = np.concatenate([p.rows for p in parts])
    order = np.argsort(rows, kind="stable")
    table = pa.concat_tables([p.table for p in parts]).take(pa.array(order))
    prompts, prompt_messages = merge_prompt_tables([(p.prompts, p.prompt_messages) for p in parts])
    first = parts[0]
    return InterviewOutput(first.condition_id, first.replicate, first.shard, table, rows[order], prompts,
                           prompt_messages)


def write_interview(ctx: RunContext, output: InterviewOutput) -> int:
    """Write one complete interview shard atomically, its prompt audit files first; rows written."""
    keys = (ctx.run_dir, output.condition_id, output.replicate, output.shard)
    if output.prompts is not None:  # the audit trail first: an interviews file always has its prompts
        write_table_atomic(output.prompts, interview_path(*keys, "interview_prompts"))
        write_table_atomic(output.prompt_messages, interview_path(*keys, "interview_prompt_messages"))
    write_table_atomic(output.table, interview_path(*keys))
    n = output.table.num_rows
    n_valid = int(pc.sum(output.table["valid"]).as_py() or 0)
    log.info("interviews %s/%d shard %d: %d agents, %d valid", output.condition_id, output.replicate,
             output.shard, n, n_valid)
    return n


def run_interview_shard(run_dir: str | Path, condition_id: str, replicate: int, shard: int) -> int:
    """Interview one shard's sampled agents of one (condition, replicate); returns the rows
    written (0 when the file already exists or the scenario has no interview)."""
    ctx = load_context(run_dir)
    if not has_interview(ctx, condition_id):
        return 0
    if interview_path(ctx.run_dir, condition_id, replicate, shard).is_file():
        return 0
    return write_interview(ctx, compute_interview(ctx, interview_inputs(ctx, condition_id, replicate, shard)))


def run_interviews(run_dir: str | Path) -> int:
    """Every missing interview file of a run whose rounds are settled; rows written."""
    if '"interview"' not in json.dumps(read_manifest(Path(run_dir)).get("config", {})):
        return 0  # no interview declared: nothing to load
    ctx = load_context(run_dir)
    total = 0
    for cid in ctx.conditions:
        if not has_interview(ctx, cid):
            continue
        for rep in range(ctx.config.design.replicates):
            for shard in range(ctx.n_shards):
                total += run_interview_shard(ctx.run_dir, cid, rep, shard)
    return total
