"""What one agent saw and answered: a decision row joined with its prompt from the audit trail.

The engine stores each distinct prompt once per shard-round (``prompts/``: ``prompt_hash`` ->
ordered ``message_hashes``) and each distinct message once (``prompt_messages/``: hash, role,
content), at the decisions file's path under those folders, and puts ``prompt_hash`` on every
decision row (docs/contracts.md, schema version 3). This module reads them back without
importing the engine: only the rows of the one shard file are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from crowdlab.analysis.loading import ANSWER_PREFIX, PathLike, RunData, RunFolderError, as_run


@dataclass
class ShownDecision:
    """One agent's decision in one round: the chat it was sent (``messages``: role and content,
    in order; empty when the backend took no prompt) and what it answered."""

    run_id: str
    condition_id: str
    replicate: int
    round: int
    agent_id: int
    model: str
    seed: int
    prompt_hash: str | None
    messages: list[dict[str, str]] = field(default_factory=list)
    text: str | None = None
    valid: bool = False
    error: str | None = None
    value: float | None = None
    answers: dict[str, Any] = field(default_factory=dict)
    answer_errors: dict[str, str] = field(default_factory=dict)
    note: str = ""


def _shard_file(run_dir: Path, table: str, condition_id: str, replicate: int, round_: int, shard: int) -> Path | None:
    name = f"shard-{shard:05d}.parquet"
    for folder in (run_dir / table / condition_id / f"replicate-{replicate}" / f"round-{round_}",
                   run_dir / table / f"condition_id={condition_id}" / f"replicate={replicate}" / f"round={round_}"):
        if (folder / name).is_file():
            return folder / name
    return None


def show_decision(run: RunData | PathLike, agent_id: int, round: int, *, condition_id: str | None = None,
                  replicate: int | None = None) -> ShownDecision:
    """The decision of ``agent_id`` in ``round`` with its prompt. ``condition_id`` and
    ``replicate`` default to the only one (a run with several must name them: ValueError lists
    the choices). KeyError when the run has no such agent or round."""
    run = as_run(run)
    if len(run.run_dirs) != 1:
        raise ValueError(f"show one run folder at a time, not {len(run.run_dirs)}")
    run_dir = run.run_dirs[0]
    dataset = run.decisions_dataset
    expr = (pc.field("agent_id") == int(agent_id)) & (pc.field("round") == int(round))
    if condition_id is not None:
        expr &= pc.field("condition_id") == condition_id
    if replicate is not None:
        expr &= pc.field("replicate") == int(replicate)
    rows = dataset.to_table(filter=expr).to_pylist()
    if not rows:
        raise KeyError(f"no decision of agent {agent_id} in round {round}"
                       + (f" of condition {condition_id}" if condition_id else "")
                       + (f", replicate {replicate}" if replicate is not None else ""))
    if len(rows) > 1:
        choices = ", ".join(sorted({f"{r['condition_id']}/replicate {r['replicate']}" for r in rows}))
        raise ValueError(f"agent {agent_id} answered in round {round} of several conditions or replicates "
                         f"({choices}): name one with --condition and --replicate")
    row = rows[0]
    answers = {k[len(ANSWER_PREFIX):]: v for k, v in row.items()
               if k.startswith(ANSWER_PREFIX) and k != ANSWER_PREFIX + "errors"}
    shown = ShownDecision(
        run_id=str(row["run_id"]), condition_id=str(row["condition_id"]), replicate=int(row["replicate"]),
        round=int(row["round"]), agent_id=int(row["agent_id"]), model=str(row["model"]), seed=int(row["seed"]),
        prompt_hash=row.get("prompt_hash"), text=row.get("text"), valid=bool(row["valid"]), error=row.get("error"),
        value=row.get("value"), answers=answers, answer_errors=dict(row.get("answer_errors") or []),
    )
    if "prompt_hash" not in row:
        shown.note = "no prompt stored: the run was written before the prompt audit trail (schema version < 3)"
        return shown
    if shown.prompt_hash is None:
        shown.note = f"no prompt: model {shown.model} takes no prompt (a non-LLM backend)"
        return shown
    keys = (shown.condition_id, shown.replicate, shown.round, int(row["shard"]))
    prompts_file = _shard_file(run_dir, "prompts", *keys)
    messages_file = _shard_file(run_dir, "prompt_messages", *keys)
    if prompts_file is None or messages_file is None:
        raise RunFolderError(f"{run_dir}: the prompt files of shard {keys[3]} ({'/'.join(map(str, keys[:3]))}) "
                             "are missing")
    prompts = pq.read_table(prompts_file, filters=[("prompt_hash", "=", shown.prompt_hash)])
    if prompts.num_rows == 0:
        raise RunFolderError(f"{prompts_file}: no prompt {shown.prompt_hash}")
    hashes = prompts["message_hashes"][0].as_py()
    found = ds.dataset(messages_file, format="parquet").to_table(
        filter=pc.field("message_hash").isin(hashes)).to_pylist()
    by_hash = {m["message_hash"]: m for m in found}
    missing = [h for h in hashes if h not in by_hash]
    if missing:
        raise RunFolderError(f"{messages_file}: message(s) {missing} of prompt {shown.prompt_hash} are missing")
    shown.messages = [{"role": by_hash[h]["role"], "content": by_hash[h]["content"]} for h in hashes]
    return shown


__all__ = ["ShownDecision", "show_decision"]
