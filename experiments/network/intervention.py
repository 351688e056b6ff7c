"""Interventions: which agents post the injected message (the ones most agents hear, or a seeded
random share), chosen over the whole population once per process, so shard-invariant."""

from __future__ import annotations

from typing import Any

import numpy as np

from crowdlab.experiments.network.run_files import network_in_index
from crowdlab.hashing import combine

_SALT = 0x1A7E


def seeders(ctx: Any, condition_id: str, intervention: Any) -> np.ndarray:
    """Boolean mask over persona positions: the intervention's posting agents."""
    def build() -> np.ndarray:
        n = ctx.n_agents
        count = max(1, int(round(intervention.share * n)))
        if intervention.seeders == "top_degree":  # most listeners: how many agents hear each one
            index = network_in_index(ctx)
            listeners = np.bincount(index.senders, minlength=n)
            chosen = np.lexsort((np.arange(n), -listeners))[:count]  # ties: lowest position
        else:
            ids = ctx.personas["agent_id"].to_numpy().astype(np.int64)
            chosen = np.argsort(combine(ctx.config.seed, intervention.seed, ids, salt=_SALT), kind="stable")[:count]
        mask = np.zeros(n, bool)
        mask[chosen] = True
        return mask
    return ctx._memo(f"network/seeders/{condition_id}", build)
