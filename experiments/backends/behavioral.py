"""A non-LLM baseline: the Poisson cognitive-hierarchy model (Camerer, Ho & Chong 2004).

Round 1: a step-0 player picks uniformly on [lo, hi]; a step-k player best-responds to a
Poisson(tau) mix of steps 0..k-1 (normalised), believing the others' average is that mix's
mean, so its pick is ``offset + p * mean(lower steps)``. Steps are drawn per agent from
Poisson(tau), and steps >= 1 add Gaussian noise.

Later rounds: the same reasoning starts from last round's group mean instead of the midpoint
(step-0 picks spread uniformly around it), and the pick moves a ``target_weight`` of the way
toward last round's target (partial adjustment, Nagel's learning-direction pattern).

Persona attributes can shift tau (``tau_by``). Every random draw is a hash of the request seed,
so a decision depends only on its seed, never on the shard it was computed in.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from crowdlab.experiments.backends.base import RequestBatch, ResponseBatch
from crowdlab.experiments.backends.settings import BackendSettings
from crowdlab.experiments.seeding import uniforms

_STREAM_LEVEL, _STREAM_NOISE, _STREAM_STEP0 = 1, 2, 3


class BehavioralConfig(BackendSettings):
    """Cognitive-hierarchy baseline; ``tau_by: {education: {doctoral: 2.5}}`` shifts tau for
    agents whose persona attribute has that value (later attributes override earlier ones)."""

    kind: Literal["behavioral"] = "behavioral"
    tau: float = Field(1.5, gt=0, description="mean thinking steps of the Poisson hierarchy")
    tau_by: dict[str, dict[str, float]] = Field(default_factory=dict)
    noise_sd: float = Field(2.0, ge=0, description="sd of the Gaussian noise on steps >= 1")
    target_weight: float = Field(0.3, ge=0, le=1, description="pull toward last round's target")
    max_level: int = Field(10, ge=1, le=50)

    def default_label(self) -> str:
        return f"ch-tau{self.tau:g}"

    def required_persona_columns(self) -> set[str]:
        return set(self.tau_by)

    def build(self) -> "BehavioralBackend":
        return BehavioralBackend(self)


def ch_level_choices(tau: float, anchor: float, p: float, offset: float, lo: float, hi: float,
                     max_level: int = 10) -> np.ndarray:
    """CH picks of steps 0..max_level for one tau; step 0 is the anchor (its mean pick)."""
    return _level_table(np.array([tau]), np.array([anchor]), p, offset, lo, hi, max_level)[:, 0]


def _level_table(tau: np.ndarray, anchor: np.ndarray, p: float, offset: float, lo: float,
                 hi: float, max_level: int) -> np.ndarray:
    """(max_level + 1, n) picks per step for per-agent tau and anchor arrays."""
    from scipy import stats  # here, not at import: scipy.stats costs every CLI start 0.3 s

    unique_tau, inverse = np.unique(tau, return_inverse=True)
    f = stats.poisson.pmf(np.arange(max_level + 1)[:, None], unique_tau[None, :])[:, inverse]
    x = np.empty((max_level + 1, tau.shape[0]))
    x[0] = anchor
    cum_fx = np.zeros(tau.shape[0])
    cum_f = np.zeros(tau.shape[0])
    for k in range(1, max_level + 1):
        cum_fx += f[k - 1] * x[k - 1]
        cum_f += f[k - 1]
        x[k] = np.clip(offset + p * cum_fx / cum_f, lo, hi)
    return x


def _poisson_levels(u: np.ndarray, tau: np.ndarray, max_level: int) -> np.ndarray:
    """Inverse-CDF Poisson draws capped at ``max_level``, one CDF per distinct tau."""
    from scipy import stats

    level = np.empty(u.shape[0], dtype=np.int64)
    unique_tau, inverse = np.unique(tau, return_inverse=True)
    for i, t in enumerate(unique_tau):
        mask = inverse == i
        cdf = stats.poisson.cdf(np.arange(max_level), t)
        level[mask] = np.searchsorted(cdf, u[mask], side="right")
    return level


class BehavioralBackend:
    """Vectorised CH decisions from ``RequestBatch.context`` and ``personas``."""

    name = "behavioral"
    needs_prompts = False

    def __init__(self, config: BehavioralConfig) -> None:
        self.config = config

    def _taus(self, personas: pa.Table | None, n: int) -> np.ndarray:
        tau = np.full(n, self.config.tau)
        for column, mapping in self.config.tau_by.items():
            if personas is None or column not in personas.column_names:
                raise ValueError(f"tau_by: persona column {column!r} is missing")
            keys = pa.array(list(mapping), type=pa.string())
            idx = pc.index_in(pc.cast(personas[column], pa.string()), value_set=keys)
            idx_np = idx.to_numpy(zero_copy_only=False)
            hit = ~np.isnan(idx_np.astype(np.float64))
            tau[hit] = np.array(list(mapping.values()))[idx_np[hit].astype(np.int64)]
        return tau

    def generate(self, batch: RequestBatch) -> ResponseBatch:
        start = time.perf_counter()
        ctx = batch.context
        n = len(batch)
        p, offset, lo, hi = float(ctx["p"]), float(ctx.get("offset", 0.0)), float(ctx["lo"]), float(ctx["hi"])
        tau = self._taus(batch.personas, n)
        last_mean = np.asarray(ctx.get("last_mean", np.full(n, np.nan)), dtype=np.float64)
        last_target = np.asarray(ctx.get("last_target", np.full(n, np.nan)), dtype=np.float64)
        later = np.isfinite(last_mean) & np.isfinite(last_target)
        anchor = np.where(later, last_mean, (lo + hi) / 2)

        u_level = uniforms(batch.seeds, _STREAM_LEVEL)
        level = _poisson_levels(u_level, tau, self.config.max_level)
        table = _level_table(tau, anchor, p, offset, lo, hi, self.config.max_level)
        choice = np.take_along_axis(table, level[None, :], axis=0)[0]
        from scipy import special

        noise = special.ndtri(np.clip(uniforms(batch.seeds, _STREAM_NOISE), 1e-12, 1 - 1e-12))
        choice = choice + self.config.noise_sd * noise
        half = np.minimum(anchor - lo, hi - anchor)
        step0 = anchor - half + 2 * half * uniforms(batch.seeds, _STREAM_STEP0)
        choice = np.where(level == 0, step0, choice)
        w = self.config.target_weight
        choice = np.where(later, (1 - w) * choice + w * last_target, choice)
        choice = np.clip(choice, lo, hi)
        choice = np.round(choice) if ctx.get("integer_only") else np.round(choice, 2)

        texts = pc.cast(pa.array(choice), pa.string()).to_pylist()
        elapsed = time.perf_counter() - start
        return ResponseBatch(
            texts=texts,
            input_tokens=np.zeros(n, dtype=np.int64),
            output_tokens=np.zeros(n, dtype=np.int64),
            latency_s=np.full(n, elapsed / max(n, 1)),
            errors=[None] * n,
            values=choice,
        )

    def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self.config.model_dump(mode="json")}
