"""Random streams that make a row's draw independent of how rows are split into shards.

Each attribute gets its own stream per fixed-size block of rows, keyed by
(seed, hash of the attribute name, block index) through numpy's SeedSequence and the
counter-based Philox bit generator. A worker producing rows [a, b) regenerates only the blocks
that overlap its range, so 1 shard, 7 shards or any slice give byte-identical values. Keying by
the attribute *name* (not its position) means adding an unrelated attribute to a spec leaves
every other column unchanged.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

BLOCK_ROWS = 1 << 16
_BLOCK_STREAM = 0
_PERMUTATION_STREAM = 1


def name_key(name: str) -> int:
    """A stable 64-bit key for a stream name (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


def _generator(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(seed, spawn_key=key)))


def uniforms(seed: int, stream: str, start: int, stop: int, n_total: int, width: int = 1) -> np.ndarray:
    """Uniform [0, 1) draws for rows [start, stop) of a population of n_total, shape (rows, width).

    Block b always holds min(BLOCK_ROWS, n_total - b*BLOCK_ROWS) rows, whatever range is asked.
    """
    key = name_key(stream)
    if stop <= start:
        return np.empty((0, width))
    first, last = start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS
    parts = []
    for block in range(first, last + 1):
        block_start = block * BLOCK_ROWS
        block_len = min(BLOCK_ROWS, n_total - block_start)
        draws = _generator(seed, key, _BLOCK_STREAM, block).random((block_len, width))
        lo = max(start, block_start) - block_start
        hi = min(stop, block_start + block_len) - block_start
        parts.append(draws[lo:hi])
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@lru_cache(maxsize=4)
def permutation(seed: int, stream: str, n_total: int) -> np.ndarray:
    """A seeded permutation of range(n_total), the same in every process (O(n), cached)."""
    dtype = np.int32 if n_total < 2**31 else np.int64
    perm = _generator(seed, name_key(stream), _PERMUTATION_STREAM, n_total).permutation(n_total).astype(dtype)
    perm.setflags(write=False)
    return perm
