"""Which agent is played by which model in a mixed-model population.

Exact counts per model come from the shares (largest remainder), and agents are dealt to models
along a permutation drawn from the run seed over the whole population, so the assignment does not
depend on sharding and an agent keeps its model across conditions with the same shares.
"""

from __future__ import annotations

import numpy as np


def model_counts(shares: list[float], n: int) -> np.ndarray:
    """Integer counts summing to ``n``, proportional to ``shares`` (largest remainder)."""
    w = np.asarray(shares, dtype=np.float64)
    exact = w / w.sum() * n
    counts = np.floor(exact).astype(np.int64)
    rest = n - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    return counts


def assign_models(shares: list[float], n: int, seed: int) -> np.ndarray:
    """Model index (int32) for agents 0..n-1."""
    order = np.random.default_rng([seed, 0x6D6F64656C]).permutation(n)
    out = np.empty(n, dtype=np.int32)
    out[order] = np.repeat(np.arange(len(shares), dtype=np.int32), model_counts(shares, n))
    return out
