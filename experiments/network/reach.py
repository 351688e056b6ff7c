"""How far an injected message spread: per round, which agents were shown a post carrying it
(recomputed with the same seeded selection of at most k posts the prompts used, through the CSR
in-neighbour index) and, as an upper bound, which had an in-neighbour who posted it.

A post carries the message when its text contains the injected text (the seeders' own posts at
the intervention round, and any later post that repeats it). Without ``messages`` the seeders'
stance is what spreads: every reader sees all its in-neighbours' stances, so the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from crowdlab.experiments.network.intervention import seeders
from crowdlab.experiments.network.messages import carriers, message_path, readers_reachable, readers_shown
from crowdlab.experiments.storage import decision_path


@dataclass(frozen=True)
class Reach:
    """One condition and replicate: per settled round (``rounds``), the cumulative share of the
    other agents (seeders left out) shown a carrying post by then (``reached``) and the share who
    could have been (``reachable``: a carrier among their in-neighbours, the k cap ignored)."""

    rounds: np.ndarray
    reached: np.ndarray
    reachable: np.ndarray


def reach(ctx: Any, condition_id: str, replicate: int) -> Reach | None:
    """The diffusion of the condition's intervention (None without one)."""
    params = ctx.scenario(condition_id).params
    iv = params.intervention
    if iv is None:
        return None
    seeded = seeders(ctx, condition_id, iv)
    others = ~seeded
    settings = params.messages
    n = seeded.size
    reached, reachable = np.zeros(n, bool), np.zeros(n, bool)
    carried: dict[int, np.ndarray] = {}
    rows: list[tuple[int, float, float]] = []
    for k in range(1, ctx.config.rounds + 1):
        if settings is not None:
            if not message_path(ctx.run_dir, condition_id, replicate, k).exists():
                break  # not settled yet
            shown = readers_shown(ctx, settings, condition_id, replicate, k, carried)
            could = readers_reachable(ctx, settings, k, carried)
            carried[k] = carriers(ctx, condition_id, replicate, k, iv.message[:settings.max_chars])
        else:
            if not decision_path(ctx.run_dir, condition_id, replicate, k, 0).exists():
                break
            shown = could = readers_reachable(ctx, SimpleNamespace(window=1), k, carried)
            if k == iv.round:
                carried[k] = seeded
        reached |= shown
        reachable |= could
        rows.append((k, float(reached[others].mean()) if others.any() else float("nan"),
                     float(reachable[others].mean()) if others.any() else float("nan")))
    if not rows:
        return Reach(np.zeros(0, np.int32), np.zeros(0), np.zeros(0))
    k, a, b = (np.array(c) for c in zip(*rows))
    return Reach(k.astype(np.int32), a, b)
