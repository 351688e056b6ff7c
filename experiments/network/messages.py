"""Posts on the network: written once per round into ``messages/`` (at settlement, before the
round's outcome, so a settled round always has its posts), read next round by each agent through
the CSR in-neighbour index, at most ``k`` per agent with a count of the rest.

Selection is vectorised over all (reader, post) pairs of a shard: ``recent`` keeps the newest
rounds first, then the lowest sender ids; ``sample`` keeps a seeded random k (a hash of run seed,
condition, replicate, round, reader and sender, so it does not depend on the shard layout).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crowdlab.experiments.schema import messages_schema
from crowdlab.hashing import combine
from crowdlab.parquet_io import write_table_atomic

_MESSAGE = r'"message"\s*:\s*"(?P<m>(?:[^"\\]|\\.)*)"'
_LEADING = r'^\s*\{\s*' + _MESSAGE  # the usual layout: message as the first key (3x faster in RE2)
_SAMPLE_SALT = 0x3E55


def message_path(run_dir: Path, condition_id: str, replicate: int, round_: int) -> Path:
    return Path(run_dir) / "messages" / condition_id / f"replicate-{replicate}" / f"round-{round_}.parquet"


def extract(texts: pa.Array, max_chars: int) -> pa.Array:
    """The ``message`` field of each answer (null where there is none), unescaped and capped.

    An anchored pattern finds the post where it is the answer's first key; only the answers it
    misses are searched anywhere (an unanchored search over a million answers costs ~3x more)."""
    texts = pc.fill_null(texts, "")
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    raw = pc.struct_field(pc.extract_regex(texts, _LEADING), "m")
    missed = pc.is_null(raw)
    if pc.any(missed).as_py():
        rows = pc.indices_nonzero(missed)
        again = pc.struct_field(pc.extract_regex(texts.take(rows), _MESSAGE), "m")
        pos = np.full(len(texts), -1, np.int64)
        pos[rows.to_numpy()] = np.arange(len(rows))
        raw = pc.if_else(missed, again.take(pa.array(np.maximum(pos, 0))), raw)
    if pc.any(pc.match_substring(raw, "\\")).as_py():  # JSON escapes: only when some post has one
        for escaped, plain in (('\\"', '"'), ("\\n", "\n"), ("\\\\", "\\")):
            raw = pc.replace_substring(raw, escaped, plain)
    if (pc.max(pc.binary_length(raw)).as_py() or 0) <= max_chars:  # bytes >= characters: nothing to cut
        return raw
    return pc.utf8_slice_codeunits(raw, 0, max_chars)


def write_round(ctx: Any, condition_id: str, replicate: int, round_: int, decisions: pa.Table,
                max_chars: int, injected: tuple[np.ndarray, str] | None = None) -> int:
    """Store the round's posts (rows in agent order); returns how many. ``injected``: (mask over
    agents, text) of an intervention, whose agents post that text instead of their own."""
    text = extract(decisions["text"], max_chars)
    if injected is not None:
        mask, message = injected
        text = pc.if_else(pa.array(mask), pa.scalar(message[:max_chars], pa.string()), text)
    keep = pc.and_(pc.is_valid(text), pc.greater(pc.utf8_length(pc.fill_null(text, "")), 0))
    senders = decisions["agent_id"].filter(keep)
    n = len(senders)
    table = pa.Table.from_arrays([
        pa.repeat(pa.scalar(ctx.run_id, pa.string()), n), pa.repeat(pa.scalar(condition_id, pa.string()), n),
        pa.array(np.full(n, replicate, np.int32)), pa.array(np.full(n, round_, np.int32)),
        senders.combine_chunks() if isinstance(senders, pa.ChunkedArray) else senders,
        text.filter(keep).combine_chunks() if isinstance(text, pa.ChunkedArray) else text.filter(keep),
    ], schema=messages_schema())
    write_table_atomic(table, message_path(ctx.run_dir, condition_id, replicate, round_))
    return n


@dataclass(frozen=True)
class RoundPosts:
    """One round's posts indexed by author position: ``at[p]`` is the row of p's post or -1."""

    round: int
    at: np.ndarray
    texts: pa.Array


def round_posts(ctx: Any, condition_id: str, replicate: int, round_: int) -> RoundPosts:
    def build() -> RoundPosts:
        t = pq.read_table(message_path(ctx.run_dir, condition_id, replicate, round_), columns=["sender", "text"])
        ids = ctx.personas["agent_id"].to_numpy().astype(np.int64)
        sender = t["sender"].to_numpy().astype(np.int64)
        if ids.size and ids[0] == 0 and ids[-1] == ids.size - 1 and np.all(np.diff(ids) == 1):
            pos = sender  # ids are positions
        else:
            order = np.argsort(ids, kind="stable")
            pos = order[np.searchsorted(ids[order], sender)]
        at = np.full(ids.size, -1, np.int64)
        at[pos] = np.arange(t.num_rows)
        return RoundPosts(round_, at, t["text"].combine_chunks())
    return ctx._memo(f"network/posts/{condition_id}/{replicate}/{round_}", build)


@dataclass(frozen=True)
class Inbox:
    """The posts each agent of a batch reads: agent i's are ``indptr[i]:indptr[i+1]`` (at most
    k, in display order); ``more[i]`` counts the posts it could have read but is not shown.

    The texts are gathered on first use (a prompt-free baseline never reads them; at 1M readers
    the gather is ~0.5 s a round) and always before pickling, so a remote worker gets them."""

    indptr: np.ndarray
    senders: np.ndarray  # agent ids
    rounds: np.ndarray
    source: Any  # pa.Array of the texts, or a zero-argument function that gathers them
    more: np.ndarray

    @property
    def texts(self) -> pa.Array:
        if callable(self.source):
            object.__setattr__(self, "source", self.source())
        return self.source

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "source": self.texts}

    def lines(self, i: int) -> list[str]:
        a, b = int(self.indptr[i]), int(self.indptr[i + 1])
        if a == b:
            return []
        shown = b - a
        head = f"Posts from people you follow ({shown} of {shown + int(self.more[i])}):"
        body = [f"- agent {int(s)} (round {int(r)}): {t}"
                for s, r, t in zip(self.senders[a:b], self.rounds[a:b], self.texts.slice(a, b - a).to_pylist())]
        tail = [f"({int(self.more[i])} more posts not shown)"] if self.more[i] else []
        return [head, *body, *tail]

    def subset(self, mask: np.ndarray) -> "Inbox":
        if mask.all():
            return self
        keep = np.flatnonzero(mask)
        lengths = self.indptr[keep + 1] - self.indptr[keep]
        idx = np.repeat(self.indptr[keep] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) \
            + np.arange(lengths.sum())
        return Inbox(np.concatenate([[0], np.cumsum(lengths)]), self.senders[idx], self.rounds[idx],
                     lambda: self.texts.take(pa.array(idx)), self.more[keep])


@dataclass(frozen=True)
class _Shown:
    """The posts a batch reads, one entry per (reader, post) in display order: reader row ``r``,
    sender position ``s``, round ``rnd``, row ``ref`` in ``parts[part]``'s posts; ``total``: how
    many each reader could have read."""

    r: np.ndarray
    s: np.ndarray
    rnd: np.ndarray
    ref: np.ndarray
    part: np.ndarray
    total: np.ndarray
    parts: list


def inbox(ctx: Any, settings: Any, condition_id: str, replicate: int, round_: int, lo: int, hi: int,
          indptr: np.ndarray, senders: np.ndarray) -> Inbox:
    """Posts of the in-neighbours (``indptr``/``senders``: the batch's CSR slice, positions) from
    the last ``settings.window`` rounds, at most ``settings.k`` per reader."""
    n = hi - lo
    shown = _shown(ctx, settings, condition_id, replicate, round_, lo, hi, indptr, senders)
    if shown is None:
        empty = np.zeros(0, np.int64)
        return Inbox(np.zeros(n + 1, np.int64), empty, np.zeros(0, np.int32), pa.array([], pa.string()), np.zeros(n, np.int64))
    parts, ref, part = shown.parts, shown.ref, shown.part

    def gather() -> pa.Array:
        if len(parts) == 1:
            return parts[0][-1].texts.take(pa.array(ref))
        texts = [parts[j][-1].texts.take(pa.array(ref[part == j])) for j in range(len(parts))]
        # back into display order across rounds
        return pa.concat_arrays(texts).take(pa.array(np.argsort(np.argsort(part, kind="stable"), kind="stable")))
    count = np.bincount(shown.r, minlength=n)
    ids = ctx.personas["agent_id"].to_numpy().astype(np.int64)
    return Inbox(np.concatenate([[0], np.cumsum(count)]), ids[shown.s], shown.rnd, gather, shown.total - count)


def readers_shown(ctx: Any, settings: Any, condition_id: str, replicate: int, round_: int,
                  carried: Mapping[int, np.ndarray]) -> np.ndarray:
    """Boolean mask over all agents: who reads, in ``round_``, among the at most k posts it is
    shown (the selection its prompt uses), a post written in round ``r`` by a sender ``s`` with
    ``carried[r][s]`` (masks over agent positions)."""
    from crowdlab.experiments.network.run_files import network_in_index

    index = network_in_index(ctx)
    live = {r: m for r, m in carried.items() if round_ - settings.window <= r < round_ and m.any()}
    if not live:
        return np.zeros(index.n, bool)
    shown = _shown(ctx, settings, condition_id, replicate, round_, 0, index.n, index.indptr, index.senders)
    if shown is None:
        return np.zeros(index.n, bool)
    hit = np.zeros(shown.s.size, bool)
    for r, mask in live.items():
        at = shown.rnd == r
        hit[at] = mask[shown.s[at]]
    return np.bincount(shown.r[hit], minlength=index.n) > 0


def readers_reachable(ctx: Any, settings: Any, round_: int, carried: Mapping[int, np.ndarray]) -> np.ndarray:
    """Boolean mask over all agents: who has, in ``round_``, an in-neighbour whose post of a round
    within the window carries the message (``carried`` as for ``readers_shown``): the readers who
    could have been shown it, an upper bound of ``readers_shown`` when some have more than k posts."""
    from crowdlab.experiments.network.run_files import network_in_index

    index = network_in_index(ctx)
    live = [m for r, m in carried.items() if round_ - settings.window <= r < round_ and m.any()]
    if not live:
        return np.zeros(index.n, bool)
    any_round = np.logical_or.reduce(live) if len(live) > 1 else live[0]
    heard = any_round[index.senders]
    return np.bincount(np.repeat(np.arange(index.n), index.in_degree())[heard], minlength=index.n) > 0


def carriers(ctx: Any, condition_id: str, replicate: int, round_: int, text: str) -> np.ndarray:
    """Boolean mask over agent positions: whose post of ``round_`` contains ``text``."""
    posts = round_posts(ctx, condition_id, replicate, round_)
    has = pc.fill_null(pc.match_substring(posts.texts, text), False).to_numpy(zero_copy_only=False)
    out = np.zeros(posts.at.size, bool)
    wrote = posts.at >= 0
    out[wrote] = has[posts.at[wrote]]
    return out


def _shown(ctx: Any, settings: Any, condition_id: str, replicate: int, round_: int, lo: int, hi: int,
           indptr: np.ndarray, senders: np.ndarray) -> _Shown | None:
    """Which posts each reader of ``lo:hi`` is shown (None when no earlier round has posts)."""
    n = hi - lo
    rows = np.repeat(np.arange(n), np.diff(indptr))
    parts = []
    for k in range(round_ - 1, max(0, round_ - 1 - settings.window), -1):  # newest round first
        posts = round_posts(ctx, condition_id, replicate, k)
        at = posts.at[senders]
        has = at >= 0
        if has.all():  # everyone posted: no copies
            parts.append((rows, senders, at, posts))
        else:
            parts.append((rows[has], senders[has], at[has], posts))
    if not parts:
        return None
    if len(parts) == 1:
        r, s, ref = parts[0][:3]
        rnd = np.full(r.size, round_ - 1, np.int32)
        part = np.zeros(r.size, np.int32)
    else:
        r = np.concatenate([p[0] for p in parts])
        s = np.concatenate([p[1] for p in parts])
        ref = np.concatenate([p[2] for p in parts])
        rnd = np.concatenate([np.full(p[0].size, round_ - 1 - j, np.int32) for j, p in enumerate(parts)])
        part = np.concatenate([np.full(p[0].size, j, np.int32) for j, p in enumerate(parts)])
    order = None
    if settings.select == "sample":
        ids = ctx.personas["agent_id"].to_numpy().astype(np.int64)
        cond = ctx.conditions[condition_id].index
        h = combine(ctx.config.seed, cond, replicate, round_, ids[lo + r], ids[s], rnd, salt=_SAMPLE_SALT)
        order = np.lexsort((h, r))
    elif len(parts) > 1:  # one round: the CSR is already sorted by reader then sender
        order = np.lexsort((s, -rnd.astype(np.int64), r))
    if order is not None:
        r, s, rnd, ref, part = r[order], s[order], rnd[order], ref[order], part[order]
    total = np.bincount(r, minlength=n)
    if total.max(initial=0) <= settings.k:  # nobody has more than k: everything is shown
        return _Shown(r, s, rnd, ref, part, total, parts)
    starts = np.cumsum(total) - total
    keep = np.arange(r.size) - starts[r] < settings.k
    return _Shown(r[keep], s[keep], rnd[keep], ref[keep], part[keep], total, parts)
