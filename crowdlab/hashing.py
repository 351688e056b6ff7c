"""Vectorised 64-bit hashing (splitmix64, Steele, Lea & Flood 2014) shared by every package.

Seeds that are pure functions of their keys (run seed, condition, replicate, round, agent_id for
decisions; population seed, agent_id, stream, try for backgrounds) let any one decision or text
be reproduced alone, whatever the sharding. The same mixer turns token ids into n-gram hashes
for the report card. numpy uint64 arithmetic wraps modulo 2**64, which is what the mixer wants;
a million values cost milliseconds.
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


def combine(*parts: int | np.ndarray, salt: int = 0xB4C6) -> np.ndarray:
    """Hash a sequence of integers (scalars or arrays, broadcast) into one uint64 per element;
    different salts give independent families of hashes."""
    h = splitmix64(np.uint64(salt))
    for part in parts:
        h = splitmix64(h ^ _u64(part))
    return np.asarray(h, dtype=np.uint64)


def seeds(*parts: int | np.ndarray) -> np.ndarray:
    """Non-negative int64 seeds (< 2**63) from ``combine(*parts)``."""
    return (combine(*parts) & MASK63).astype(np.int64)
