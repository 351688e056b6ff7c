"""Graph generators over agent positions 0..n-1, vectorised with numpy (no per-node loop).

Every generator returns ``(source, target)`` int64 position arrays; undirected graphs come back
canonical (``source < target``, each edge once), directed ones as drawn. All randomness comes from
one ``numpy.random.Generator`` seeded from the run seed, and the population's order is the
persona table's, so the graph does not depend on how agents are later sharded.

Barabási–Albert is the one sequential model: node t picks ``m`` distinct earlier nodes with
probability proportional to their degree. It is vectorised (all nodes at once, not in batches) with the
endpoint-list form of preferential attachment (as networkx's ``repeated_nodes``): the list of
every edge's two endpoints, in edge order, holds each node once per unit of degree, so a uniform
index into the part of the list that exists before node t is a degree-proportional draw. An index
that falls on an earlier edge's *source* is known at once (the node that added that edge); one on
an earlier edge's *target* points to another draw, so all draws are made at once and the pointers
resolved by pointer jumping (about log2 of the longest chain passes). Duplicate picks of one node
are drawn again, as networkx does. One departure from the sequential process: an edge that
copied a target which its own node later redraws (a repeat, a few thousand of 5M edges at
1M x m=5, nearly all among the first nodes) keeps the first value. python-igraph's C
implementation would be the library choice, but it is not a dependency of crowdlab, and this
form runs 1M nodes x m=5 in about 4 s with numpy alone on a loaded 2-core machine
(bench/network.py); its degree tail has the model's exponent (P(k >= x) falls 4x per doubling).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

_MAX_PASSES = 200


def canonical(src: np.ndarray, dst: np.ndarray, directed: bool, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop self-loops and repeated edges; undirected edges as (min, max); sorted by (source, target)."""
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    if not directed:
        src, dst = np.minimum(src, dst), np.maximum(src, dst)
    key = src * np.int64(n) + dst
    key.sort()
    if key.size:
        key = key[np.concatenate([[True], key[1:] != key[:-1]])]
    return key // n, key % n


def barabasi_albert(n: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Edges (new node, earlier node): node m links to 0..m-1, every later node to m distinct
    earlier nodes drawn by degree."""
    n_new = n - m  # nodes m..n-1 add m edges each
    E = n_new * m
    tgt = np.empty(E, np.int64)
    tgt[:m] = np.arange(m)
    ptr = np.full(E, -1, np.int64)  # a draw that fell on an earlier edge's target: that edge

    def draw(rows: np.ndarray) -> None:
        """Draw the endpoint-list index of edges ``rows`` (all after node m's)."""
        nodes = m + rows // m
        j = np.floor(rng.random(rows.size) * (2 * (nodes - m) * m)).astype(np.int64)
        on_source = (j & 1) == 0
        tgt[rows[on_source]] = m + (j[on_source] >> 1) // m
        ptr[rows[~on_source]] = j[~on_source] >> 1

    def resolve(pending: np.ndarray) -> None:
        for _ in range(_MAX_PASSES):
            if pending.size == 0:
                return
            p = ptr[pending]
            pp = ptr[p]
            done = pp < 0  # the pointee is resolved
            tgt[pending[done]] = tgt[p[done]]
            ptr[pending[done]] = -1
            pending = pending[~done]
            ptr[pending] = pp[~done]  # jump over the pointee
        raise RuntimeError("preferential attachment: pointers did not resolve")

    draw(np.arange(m, E, dtype=np.int64))
    resolve(np.flatnonzero(ptr >= 0))
    nodes = np.arange(1, n_new, dtype=np.int64)  # node index - m of the nodes to check
    for _ in range(_MAX_PASSES):  # each new node needs m distinct targets: draw repeats again
        rows = _repeated(tgt, nodes, m)
        if rows.size == 0:
            return m + np.arange(E, dtype=np.int64) // m, tgt
        draw(rows)
        resolve(rows[ptr[rows] >= 0])
        nodes = np.unique(rows // m)
    raise RuntimeError("preferential attachment: repeated targets did not clear")


def _repeated(tgt: np.ndarray, nodes: np.ndarray, m: int) -> np.ndarray:
    """Edge indices (of ``nodes``' m-edge blocks) whose target repeats an earlier one of the block."""
    cols = np.arange(m, dtype=np.int64)
    idx = nodes[:, None] * m + cols
    block = tgt[idx]
    order = np.argsort(block, axis=1, kind="stable")
    srt = np.take_along_axis(block, order, axis=1)
    dup = np.zeros(block.shape, dtype=bool)
    np.put_along_axis(dup, order[:, 1:], srt[:, 1:] == srt[:, :-1], axis=1)
    return idx[dup]


def watts_strogatz(n: int, k: int, p: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ring lattice (each node to its k/2 following nodes), each edge's far end rewired with
    probability p to a uniform node (no self-loop; a repeated edge is drawn again)."""
    half = k // 2
    src = np.repeat(np.arange(n, dtype=np.int64), half)
    dst = (src + np.tile(np.arange(1, half + 1, dtype=np.int64), n)) % n
    rewire = np.flatnonzero(rng.random(src.size) < p)
    for _ in range(_MAX_PASSES):
        if rewire.size == 0:
            break
        new = rng.integers(0, n - 1, rewire.size)
        new += new >= src[rewire]  # skip the node itself
        dst[rewire] = new
        lo, hi = np.minimum(src, dst), np.maximum(src, dst)
        key = lo * np.int64(n) + hi
        order = np.argsort(key, kind="stable")
        repeated = np.zeros(key.size, bool)
        repeated[order[1:]] = key[order[1:]] == key[order[:-1]]
        rewire = np.flatnonzero(repeated)
    return src, dst


def _group_index(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Members sorted by group: (order, start per group, size per group, rank of each node)."""
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return order, starts, sizes, rank


def _ties(n: int, per_node: float, rng: np.random.Generator) -> np.ndarray:
    """Source position of each tie: Poisson(per_node) ties per node."""
    return np.repeat(np.arange(n, dtype=np.int64), rng.poisson(per_node, n))


def _inside(src: np.ndarray, codes: np.ndarray, index, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A uniform other member of each source's group (sources alone in their group drop out)."""
    order, starts, sizes, rank = index
    g = codes[src]
    ok = sizes[g] > 1
    src, g = src[ok], g[ok]
    r = np.floor(rng.random(src.size) * (sizes[g] - 1)).astype(np.int64)
    r += r >= (rank[src] - starts[g])
    return src, order[starts[g] + r]


def _outside(src: np.ndarray, codes: np.ndarray, index, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A uniform node outside each source's group."""
    order, starts, sizes, _ = index
    n = codes.size
    g = codes[src]
    ok = sizes[g] < n
    src, g = src[ok], g[ok]
    r = np.floor(rng.random(src.size) * (n - sizes[g])).astype(np.int64)
    r += np.where(r >= starts[g], sizes[g], 0)
    return src, order[r]


def stochastic_block(codes: np.ndarray, degree_in: float, degree_out: float, directed: bool,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Poisson ties inside the own block (mean ``degree_in`` neighbours) and outside it (``degree_out``)."""
    n = codes.size
    share = 1.0 if directed else 0.5  # an undirected tie counts for both ends
    index = _group_index(codes)
    s1, d1 = _inside(_ties(n, degree_in * share, rng), codes, index, rng)
    s2, d2 = _outside(_ties(n, degree_out * share, rng), codes, index, rng)
    return np.concatenate([s1, s2]), np.concatenate([d1, d2])


def homophily(codes: np.ndarray, degree: float, h: float, directed: bool,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Poisson ties per node; each goes inside the own attribute group with probability h, else
    to a uniform other node."""
    n = codes.size
    src = _ties(n, degree * (1.0 if directed else 0.5), rng)
    same = rng.random(src.size) < h
    s1, d1 = _inside(src[same], codes, _group_index(codes), rng)
    anyone = src[~same]
    d2 = rng.integers(0, n - 1, anyone.size)
    d2 += d2 >= anyone
    return np.concatenate([s1, anyone]), np.concatenate([d1, d2])


def complete_groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair inside each group (i before j in group order)."""
    order, starts, sizes, rank = _group_index(codes)
    g = codes[order]
    r = np.arange(order.size) - starts[g]  # rank inside the group, in group order
    after = sizes[g] - 1 - r  # members after this one
    src = np.repeat(order, after)
    first = np.repeat(np.cumsum(after) - after, after)
    step = np.arange(src.size) - first + 1  # 1..after
    dst = order[np.repeat(np.arange(order.size), after) + step]
    return src, dst


def codes_of(columns: list[np.ndarray]) -> np.ndarray:
    """One int64 group code per row for the combination of value columns."""
    codes = np.zeros(columns[0].shape[0], np.int64)
    for col in columns:
        _, inv = np.unique(col, return_inverse=True)
        codes = codes * (int(inv.max(initial=0)) + 1) + inv
    _, inv = np.unique(codes, return_inverse=True)
    return inv.astype(np.int64)
