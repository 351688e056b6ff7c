"""Per-request seeds and per-agent uniforms, derived by hashing instead of drawing in sequence.

A seed is a pure function of (run seed, condition index, replicate, round, agent_id), so any
single decision can be reproduced alone and results never depend on how agents were sharded or
in which order shards ran. The hash is splitmix64 (Steele, Lea & Flood 2014), written with numpy
uint64 arithmetic so a million seeds cost a few milliseconds.
"""

from __future__ import annotations

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK63 = np.uint64((1 << 63) - 1)
_TWO_POW_53 = float(1 << 53)


def splitmix64(x: np.ndarray | int) -> np.ndarray:
    """One splitmix64 step on every element (uint64 in, uint64 out; wraps modulo 2**64)."""
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _as_u64(value: int | np.ndarray) -> np.ndarray:
    return np.asarray(value).astype(np.int64).view(np.uint64) if np.ndim(value) else np.uint64(int(value) & ((1 << 64) - 1))


def combine(*parts: int | np.ndarray) -> np.ndarray:
    """Hash a sequence of integers (scalars or arrays, broadcast) into one uint64 per element."""
    h = splitmix64(np.uint64(0x5EED))
    for part in parts:
        h = splitmix64(h ^ _as_u64(part))
    return np.asarray(h, dtype=np.uint64)


def request_seeds(
    run_seed: int, condition_index: int, replicate: int, round_: int, agent_ids: np.ndarray
) -> np.ndarray:
    """Non-negative int64 seeds (< 2**63), one per agent, for one (condition, replicate, round)."""
    ids = np.asarray(agent_ids, dtype=np.int64)
    h = combine(run_seed, condition_index, replicate, round_, ids)
    return np.broadcast_to(h & _MASK63, ids.shape).astype(np.int64)


def uniforms(seeds: np.ndarray, stream: int) -> np.ndarray:
    """Uniform floats in [0, 1), one per seed, independent across ``stream`` numbers."""
    h = splitmix64(np.asarray(seeds, dtype=np.int64).view(np.uint64) ^ splitmix64(np.uint64(stream)))
    return (h >> np.uint64(11)).astype(np.float64) / _TWO_POW_53
