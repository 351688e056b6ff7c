"""What one shard of agents reads from its in-neighbours: their last stances (and posts),
gathered through the CSR in-neighbour index. Small and self-contained, so it travels with the
shard's inputs to a remote worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crowdlab.experiments.network.intervention import seeders
from crowdlab.experiments.network.messages import inbox
from crowdlab.experiments.network.run_files import network_in_index
from crowdlab.experiments.storage import decision_path


@dataclass(frozen=True)
class PeerView:
    """In-neighbours of a batch of agents, CSR over the batch: agent i's entries are
    ``indptr[i]:indptr[i+1]``. ``values``: each neighbour's stance last round (NaN where it gave
    none). ``messages``: per agent, the posts it reads (at most k) and how many more there were."""

    indptr: np.ndarray
    senders: np.ndarray  # agent positions
    weights: np.ndarray
    values: np.ndarray
    messages: Any = None  # messages.Inbox or None
    seeded: np.ndarray | None = None  # intervention: which agents of the batch are its seeders

    def rows(self) -> np.ndarray:
        """The batch row of every entry."""
        return np.repeat(np.arange(self.indptr.size - 1), np.diff(self.indptr))

    def subset(self, mask: np.ndarray) -> "PeerView":
        if mask.all():
            return self
        keep = np.flatnonzero(mask)
        starts, ends = self.indptr[keep], self.indptr[keep + 1]
        lengths = ends - starts
        idx = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        inbox = self.messages.subset(mask) if self.messages is not None else None
        seeded = self.seeded[keep] if self.seeded is not None else None
        return PeerView(indptr, self.senders[idx], self.weights[idx], self.values[idx], inbox, seeded)


def stances(ctx: Any, condition_id: str, replicate: int, round_: int) -> np.ndarray:
    """Every agent's stance (``value``; NaN where invalid) in a finished round, in persona order;
    read once per process from the round's shard files."""
    def build() -> np.ndarray:
        out = np.full(ctx.n_agents, np.nan)
        for s in range(ctx.n_shards):
            lo, hi = ctx.shard_bounds(s)
            t = pq.read_table(decision_path(ctx.run_dir, condition_id, replicate, round_, s), columns=["value", "valid"])
            v = pc.if_else(t["valid"], t["value"], None)
            out[lo:hi] = v.to_numpy(zero_copy_only=False).astype(np.float64)
        return out
    return ctx._memo(f"network/stances/{condition_id}/{replicate}/{round_}", build)


def peer_view(ctx: Any, condition_id: str, replicate: int, round_: int, lo: int, hi: int,
              messages: Any = None, intervention: Any = None) -> PeerView:
    """The in-neighbours of agents ``lo:hi`` with their stances in round ``round_ - 1`` (and,
    with ``messages`` settings, the posts each reads)."""
    index = network_in_index(ctx)
    a, b = index.indptr[lo], index.indptr[hi]
    senders = index.senders[a:b]
    indptr = index.indptr[lo:hi + 1] - a
    values = stances(ctx, condition_id, replicate, round_ - 1)[senders] if round_ > 1 else np.full(senders.size, np.nan)
    box = inbox(ctx, messages, condition_id, replicate, round_, lo, hi, indptr, senders) if messages is not None else None
    seeded = seeders(ctx, condition_id, intervention)[lo:hi] if intervention is not None else None
    return PeerView(indptr, senders, index.weights[a:b], values, box, seeded)

