"""Step 3 of a run: settle one round of one (condition, replicate) from its shard files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crowdlab.experiments.run_context import load_context
from crowdlab.experiments.schema import INVALID_CAUSES, rounds_schema
from crowdlab.experiments.storage import decision_path, round_part_path
from crowdlab.parquet_io import write_table_atomic


@dataclass(frozen=True)
class RoundSummary:
    """The pooled outcome of one settled round (small: a Prefect task result)."""

    condition_id: str
    replicate: int
    round: int
    n: int
    n_valid: int
    n_invalid: int
    mean: float | None
    target: float | None
    skipped: bool


def _summary(part: pa.Table, condition_id: str, replicate: int, round_: int, skipped: bool) -> RoundSummary:
    row = part.filter(pc.equal(part["group"], -1)).to_pylist()[0]
    return RoundSummary(condition_id, replicate, round_, row["n"], row["n_valid"], row["n_invalid"],
                        row["mean"], row["target"], skipped)


def cause_counts(decisions: pa.Table, groups: np.ndarray) -> dict[str, pa.Array]:
    """``n_<cause>`` per outcome row: invalid decisions by the cause their ``error`` starts with,
    for each entry of ``groups`` (-1 = every group)."""
    group = decisions["group"].to_numpy()
    if "error" in decisions.column_names:  # only the rows with an error: few of millions, as a rule
        at = np.flatnonzero(pc.is_valid(decisions["error"]).to_numpy(zero_copy_only=False))
        error = decisions["error"].take(pa.array(at, pa.int64())).combine_chunks()
    else:
        at, error = np.zeros(0, np.int64), pa.array([], pa.string())
    with_error = group[at]
    out = {}
    for cause in INVALID_CAUSES:
        hit = pc.starts_with(error, cause).to_numpy(zero_copy_only=False).astype(bool)
        per_group = np.bincount(with_error[hit],
                                minlength=int(max(groups.max(initial=0), group.max(initial=0))) + 1)
        out[f"n_{cause}"] = pa.array(np.where(groups < 0, int(hit.sum()), per_group[np.maximum(groups, 0)]),
                                     pa.int64())
    return out


def settle_columns(scenario) -> list[str]:  # type: ignore[no-untyped-def]
    """The decision columns a round's settlement reads."""
    wanted = ["agent_id", "group", "value", "valid", "error"]
    return wanted + [c for c in getattr(scenario, "settle_columns", list)() if c not in wanted]  # typed answers


def settle_round(run_dir: str | Path, condition_id: str, replicate: int, round: int,
                 decisions: pa.Table | None = None) -> RoundSummary:
    """Compute the round's outcome from every shard file and write its rounds part once.

    ``decisions``: the round's ``settle_columns`` rows, all shards in shard order, when the caller
    already holds them (the Ray driver keeps them as it writes the shards, so the barrier does not
    read thousands of files back); otherwise they are read from the shard files.
    """
    ctx = load_context(run_dir)
    part_path = round_part_path(ctx.run_dir, condition_id, replicate, round)
    if part_path.is_file():
        return _summary(pq.read_table(part_path), condition_id, replicate, round, True)
    paths = [decision_path(ctx.run_dir, condition_id, replicate, round, s) for s in range(ctx.n_shards)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise RuntimeError(f"cannot settle {condition_id}/{replicate}/round {round}: "
                           f"{len(missing)} shard file(s) missing, e.g. {missing[:3]}")
    scenario = ctx.scenario(condition_id)
    if decisions is None:
        decisions = pa.concat_tables(pq.read_table(p, columns=settle_columns(scenario)) for p in paths)
    settle_in_run = getattr(scenario, "settle_in_run", None)  # network scenarios read the graph and last round
    outcome = settle_in_run(ctx, condition_id, replicate, round, decisions) if settle_in_run else scenario.settle(decisions)
    causes = cause_counts(decisions, outcome["group"].to_numpy())
    n = outcome.num_rows
    cond = ctx.conditions[condition_id]
    schema = rounds_schema(ctx.factor_names, getattr(scenario, "outcome_fields", list)())
    keys = {
        "run_id": pa.array([ctx.run_id] * n, pa.string()),
        "condition_id": pa.array([condition_id] * n, pa.string()),
        "replicate": pa.array([replicate] * n, pa.int32()),
        "round": pa.array([round] * n, pa.int32()),
    }
    factors = {name: pa.array([cond.factors[name]] * n, pa.string()) for name in ctx.factor_names}
    arrays = [keys.get(f.name) or factors.get(f.name) or causes.get(f.name) or outcome[f.name] for f in schema]
    part = pa.Table.from_arrays(arrays, schema=schema)
    write_table_atomic(part, part_path)
    return _summary(part, condition_id, replicate, round, False)
