"""Vectorised 64-bit hashing (splitmix64) for per-persona seeds and text shingles.

A seed that is a pure function of (population seed, agent_id, stream, try) lets any one persona's
background be regenerated alone with the text it got in the full run, whatever the sharding.
The same mixer turns token ids into n-gram hashes for the report card. numpy uint64 arithmetic
wraps modulo 2**64, which is what the mixer wants; a million values cost milliseconds.
(The experiments package has its own copy; personas may not import it.)
"""

from __future__ import annotations

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
MASK63 = np.uint64((1 << 63) - 1)


def splitmix64(x: np.ndarray | int) -> np.ndarray:
    """One splitmix64 finalisation on every element (uint64 in, uint64 out)."""
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _u64(part: int | np.ndarray) -> np.ndarray:
    if np.ndim(part):
        arr = np.asarray(part)
        return arr.astype(np.uint64) if arr.dtype.kind == "u" else arr.astype(np.int64).view(np.uint64)
    return np.uint64(int(part) & ((1 << 64) - 1))


def combine(*parts: int | np.ndarray) -> np.ndarray:
    """Hash a sequence of integers (scalars or arrays, broadcast) into one uint64 per element."""
    h = splitmix64(np.uint64(0xB4C6))
    for part in parts:
        h = splitmix64(h ^ _u64(part))
    return np.asarray(h, dtype=np.uint64)


def seeds(*parts: int | np.ndarray) -> np.ndarray:
    """Non-negative int64 seeds (< 2**63) from ``combine(*parts)``."""
    return (combine(*parts) & MASK63).astype(np.int64)
