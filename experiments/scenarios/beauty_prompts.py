"""Prompt text of the p-beauty contest, variants P1-P7 in our own words.

Every chat is ``[system, user]``: the system message (rules, variant instructions, answer
format) is identical for every agent of a condition, and the user message starts with the
group's public history, so vLLM's prefix cache covers everything up to the agent's own part
(persona and own past guesses), which comes last.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.experiments.backends.base import Message
from crowdlab.experiments.scenarios.beauty_params import BeautyContestParams


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if np.isfinite(x) else "n/a"


def system_prompt(params: BeautyContestParams, group_size: int, total_rounds: int) -> str:
    """Rules, variant instructions and answer format: the part shared by every agent."""
    target = f"{params.p_text()} of the average"
    if params.offset:
        target = f"{_num(params.offset)} plus {target}"
    kind = "whole number" if params.integer_only else "number"
    lines = [
        f"You are one of {group_size} players in a guessing game.",
        f"Each player privately picks a {kind} between {_num(params.lo)} and {_num(params.hi)}, "
        "inclusive. Once everyone has picked, the average of all picks is computed.",
        f"The target is {target}. The player whose pick is closest to the target wins; "
        "players equally close share the win.",
    ]
    if params.groups > 1:
        lines.append(
            f"Players are divided into {params.groups} separate groups. Only your own group "
            "counts: its average and its target are computed from its members' picks alone."
        )
    if total_rounds > 1:
        lines.append(
            f"The game lasts {total_rounds} rounds. After each round you learn your group's "
            "average, target and winning pick."
        )
    if params.mention_classic:
        lines.append("This is the classic 'guess a fraction of the average' game (the Keynesian beauty contest).")
    if params.variant in ("P3", "P4"):
        lines.append("Every player in this game is fully rational.")
    if params.variant == "P4":
        lines.append("Every player also tries to work out how the other players will pick.")
    if params.reasoning:
        lines.append(
            "Reason about it step by step before you decide, but keep the reasoning short "
            f"(at most {params.max_reasoning_chars} characters)."
        )
        lines.append('Answer with JSON only: {"reasoning": "<your short reasoning>", "guess": <number>}.')
    else:
        lines.append('Answer with the number directly, as JSON only: {"guess": <number>}.')
    return "\n".join(lines)


def public_history(public: pa.Table | None, group: int) -> str:
    """The group's earlier outcomes, one line per round (empty before round 2)."""
    if public is None or public.num_rows == 0:
        return ""
    rows = public.filter(pa.compute.equal(public["group"], group)).sort_by("round").to_pylist()
    lines = ["Results of the earlier rounds in your group:"]
    for r in rows:
        lines.append(
            f"Round {r['round']}: average {_num(r['mean'] or np.nan)}, target "
            f"{_num(r['target'] or np.nan)}, winning pick {_num(r['winning_value'] or np.nan)}."
        )
    return "\n".join(lines) + "\n"


def _nums(x: np.ndarray) -> pa.Array:
    """``_num`` for a whole column: two decimals at most, no trailing zeros, ``n/a`` if not finite."""
    finite = np.isfinite(x)
    text = pc.cast(pa.array(np.round(np.where(finite, x, 0.0), 2)), pa.string())
    return pc.if_else(pa.array(finite), text, "n/a")


def memory_lines(own_values: np.ndarray, targets: np.ndarray, reasoning: list[pa.Array]) -> list[pa.Array]:
    """``memory: reasoning``: one line per earlier round, with the agent's pick, its distance to
    the target and the (already shortened) reasoning it gave; built column-wise, one array per round."""
    lines = []
    for k in range(own_values.shape[1]):
        picked = pc.binary_join_element_wise(
            f"Your round {k + 1} pick: ", _nums(own_values[:, k]), " (distance to target ",
            _nums(np.abs(own_values[:, k] - targets[:, k])), ")", "")
        line = pc.if_else(pa.array(np.isfinite(own_values[:, k])), picked, f"Your round {k + 1} pick: none valid")
        why = reasoning[k] if k < len(reasoning) else pa.nulls(own_values.shape[0], pa.string())
        said = pc.binary_join_element_wise(line, ', your reasoning: "', why, '"', "")
        has_why = pc.fill_null(pc.greater(pc.utf8_length(why), 0), False)
        lines.append(pc.binary_join_element_wise(pc.if_else(has_why, said, line), ".", ""))
    return lines


def agent_tails(
    params: BeautyContestParams,
    descriptions: list[str] | None,
    own_values: np.ndarray,
    targets: np.ndarray,
    round_: int,
    total_rounds: int,
    reasoning: list[pa.Array] | None = None,
) -> list[str]:
    """The agent-specific end of each user message: persona (P5), own past, the ask.

    ``own_values`` and ``targets`` are (n_agents, round - 1): own pick and the group's target
    per earlier round. What is shown of the agent's own past follows ``params.memory``: nothing,
    its picks (one line), or one line per round with pick and ``reasoning`` (per earlier round,
    the shortened reasoning texts). When nothing is agent-specific one string is shared by all.
    """
    n = own_values.shape[0]
    ask = f"Round {round_} of {total_rounds}. What is your pick?" if total_rounds > 1 else "What is your pick?"
    if params.memory == "none":
        own_values = own_values[:, :0]
    if descriptions is None and own_values.shape[1] == 0:
        return [ask] * n
    parts: list[list[str]] = [[] for _ in range(n)]
    if descriptions is not None:
        for i, d in enumerate(descriptions):
            parts[i].append(f"About you: {d}")
    if own_values.shape[1] and params.memory == "reasoning" and params.reasoning:
        columns = ([pa.array(["\n".join(p) for p in parts])] if descriptions is not None else []) \
            + memory_lines(own_values, targets, reasoning or []) \
            + [pa.array([ask] * n)]
        return pc.binary_join_element_wise(*columns, "\n").to_pylist()
    if own_values.shape[1]:
        dist = np.abs(own_values - targets)
        for i in range(n):
            picks = "; ".join(
                f"round {k + 1}: {_num(v)} (distance to target {_num(d)})" if np.isfinite(v)
                else f"round {k + 1}: no valid pick"
                for k, (v, d) in enumerate(zip(own_values[i], dist[i]))
            )
            parts[i].append(f"Your picks so far: {picks}.")
    return ["\n".join(p + [ask]) for p in parts]


def chats(systems: list[str], prefixes: list[str], groups: np.ndarray, tails: list[str]) -> list[list[Message]]:
    """Assemble ``[system, user]`` chats from strings built once per group (index = group)."""
    sys_msgs = [{"role": "system", "content": s} for s in systems]
    return [
        [sys_msgs[g], {"role": "user", "content": prefixes[g] + tail}]
        for g, tail in zip(groups.tolist(), tails)
    ]
