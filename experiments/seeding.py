"""Per-request seeds and per-agent uniforms, derived by hashing instead of drawing in sequence.

A seed is a pure function of (run seed, condition index, replicate, round, agent_id), so any
single decision can be reproduced alone and results never depend on how agents were sharded or
in which order shards ran. The hash is ``crowdlab.hashing``'s vectorised splitmix64.
"""

from __future__ import annotations

import numpy as np

from crowdlab.hashing import MASK63, combine, splitmix64

_DECISION_SALT = 0x5EED
_TWO_POW_53 = float(1 << 53)


def request_seeds(
    run_seed: int, condition_index: int, replicate: int, round_: int, agent_ids: np.ndarray
) -> np.ndarray:
    """Non-negative int64 seeds (< 2**63), one per agent, for one (condition, replicate, round)."""
    ids = np.asarray(agent_ids, dtype=np.int64)
    h = combine(run_seed, condition_index, replicate, round_, ids, salt=_DECISION_SALT)
    return np.broadcast_to(h & MASK63, ids.shape).astype(np.int64)


def uniforms(seeds: np.ndarray, stream: int) -> np.ndarray:
    """Uniform floats in [0, 1), one per seed, independent across ``stream`` numbers."""
    h = splitmix64(np.asarray(seeds, dtype=np.int64).view(np.uint64) ^ splitmix64(np.uint64(stream)))
    return (h >> np.uint64(11)).astype(np.float64) / _TWO_POW_53
