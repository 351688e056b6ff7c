"""Inverse-CDF transforms: one uniform draw per row becomes one value.

Using exactly one uniform per row for every distribution (truncation included, via the
inverse CDF rather than rejection) keeps the number of draws fixed, which is what makes the
per-block streams in ``streams.py`` shard-invariant. The same transforms give ``describe`` its
exact target quantiles.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from crowdlab.personas.sampling.spec import Categorical, LogNormal, Normal, Uniform

_EPS = 1e-300


def categorical_codes(dist: Categorical, u: np.ndarray, categories: list[str] | None = None) -> np.ndarray:
    """Category codes (indices into ``categories``, default the dist's own order) for uniforms u."""
    cum = np.cumsum(dist.probabilities)
    cum[-1] = 1.0
    local = np.searchsorted(cum, u, side="right").clip(0, len(cum) - 1)
    if categories is None:
        return local.astype(np.int32)
    lookup = np.array([categories.index(c) for c in dist.categories], dtype=np.int32)
    return lookup[local]


def quota_counts(dist: Categorical, n: int, path: str) -> np.ndarray:
    """Exact counts per category summing to n: given counts, or largest-remainder rounding."""
    from crowdlab.personas.sampling.errors import SpecError

    if dist.counts is not None:
        counts = np.array(list(dist.counts.values()), dtype=np.int64)
        if counts.sum() != n:
            raise SpecError(f"{path}.counts", f"counts sum to {counts.sum()} but n = {n}")
        return counts
    exact = dist.probabilities * n
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")  # ties go to the earlier category
    counts[order[:short]] += 1
    return counts


def _truncated_std_normal(u: np.ndarray, za: float, zb: float) -> np.ndarray:
    """Standard normal restricted to [za, zb] by inverse CDF, accurate in either tail."""
    if za > 0:  # upper tail: work with the reflected variable to keep precision
        return -_reflect(u, -zb, -za)
    pa_, pb_ = ndtr(za), ndtr(zb)
    return ndtri(np.clip(pa_ + u * (pb_ - pa_), _EPS, 1 - 1e-16))


def _reflect(u: np.ndarray, za: float, zb: float) -> np.ndarray:
    pa_, pb_ = ndtr(za), ndtr(zb)
    # u -> 1 - u keeps the transform monotone increasing in u after the sign flip
    return ndtri(np.clip(pb_ - u * (pb_ - pa_), _EPS, 1 - 1e-16))


def numeric_values(dist: Any, u: np.ndarray) -> np.ndarray:
    """Values of a numeric distribution for uniforms u (monotone non-decreasing in u)."""
    low = -math.inf if dist.low is None else dist.low
    high = math.inf if dist.high is None else dist.high
    if isinstance(dist, Uniform):
        if dist.integer:
            lo, hi = math.ceil(low), math.floor(high)
            return np.minimum(lo + np.floor(u * (hi - lo + 1)), hi).astype(np.int64)
        x = low + u * (high - low)
    elif isinstance(dist, Normal):
        z = _truncated_std_normal(u, (low - dist.mean) / dist.std, (high - dist.mean) / dist.std)
        x = dist.mean + dist.std * z
    elif isinstance(dist, LogNormal):
        mu, sigma = dist.log_location, dist.sigma
        log_low = math.log(low) if low > 0 else -math.inf
        log_high = math.log(high) if high < math.inf else math.inf
        x = np.exp(mu + sigma * _truncated_std_normal(u, (log_low - mu) / sigma, (log_high - mu) / sigma))
    else:  # pragma: no cover - the spec union is closed
        raise TypeError(type(dist))
    x = np.clip(x, low, high)
    if dist.integer:
        return np.clip(np.rint(x), math.ceil(low), math.floor(high)).astype(np.int64)
    return x.astype(np.float64)


def truncation_mass(dist: Any) -> float:
    """Probability mass of the untruncated distribution inside [low, high] (for validation)."""
    low = -math.inf if dist.low is None else dist.low
    high = math.inf if dist.high is None else dist.high
    if isinstance(dist, Normal):
        za, zb = (low - dist.mean) / dist.std, (high - dist.mean) / dist.std
    elif isinstance(dist, LogNormal):
        mu, sigma = dist.log_location, dist.sigma
        za = (math.log(low) - mu) / sigma if low > 0 else -math.inf
        zb = (math.log(high) - mu) / sigma if high < math.inf else math.inf
    else:
        return 1.0
    if za > 0:
        return float(ndtr(-za) - ndtr(-zb))
    return float(ndtr(zb) - ndtr(za))
