"""Prompt text of the p-beauty contest, variants P1-P7 in our own words.

Every chat is ``[system, user]``: the system message (rules, variant instructions, answer
format) is identical for every agent of a condition, and the user message starts with the
group's public history, so vLLM's prefix cache covers everything up to the agent's own part
(persona and own past guesses), which comes last.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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


def agent_tails(
    params: BeautyContestParams,
    descriptions: list[str] | None,
    own_values: np.ndarray,
    targets: np.ndarray,
    round_: int,
    total_rounds: int,
) -> list[str]:
    """The agent-specific end of each user message: persona (P5), own past picks, the ask.

    ``own_values`` and ``targets`` are (n_agents, round - 1): own pick and the group's target
    per earlier round. When nothing is agent-specific one string is shared by every agent.
    """
    n = own_values.shape[0]
    ask = f"Round {round_} of {total_rounds}. What is your pick?" if total_rounds > 1 else "What is your pick?"
    if descriptions is None and own_values.shape[1] == 0:
        return [ask] * n
    parts: list[list[str]] = [[] for _ in range(n)]
    if descriptions is not None:
        for i, d in enumerate(descriptions):
            parts[i].append(f"About you: {d}")
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
