"""Uncertainty across replicates and tests between conditions.

The AgentScope paper ran each setting once and reported no intervals; here every comparison
comes with a seeded bootstrap interval across replicates, a Welch t test, a Mann-Whitney U test
and effect sizes (Cohen's d, rank-biserial correlation), all from scipy.stats.

Many conditions mean many tests: 12 conditions over 4 rounds are 264 pairwise tests, and about 13
of them fall under 5 % by chance alone. ``compare_conditions`` therefore adds p-values adjusted
for the whole table it returns (Holm by default; Benjamini-Hochberg on request), and
``single_factor_pairs`` picks the pairs a factorial design is usually read by: conditions that
differ in exactly one factor.
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from crowdlab.analysis.loading import PathLike, RunData, as_run
from crowdlab.analysis.metrics import round_metrics

DEFAULT_CI_BY: tuple[str, ...] = ("condition_id", "round")
Correction = Literal["holm", "bh", "none"]


def adjust_pvalues(pvalues: Sequence[float] | np.ndarray, method: Correction = "holm") -> np.ndarray:
    """p-values adjusted for multiple comparisons over the whole family given; NaN stays NaN
    and does not count as a test.

    ``holm``: Holm's step-down correction (controls the family-wise error rate, no assumption
    about dependence; written out here because scipy has no Holm and it is five lines).
    ``bh``: Benjamini-Hochberg false discovery rate, from ``scipy.stats.false_discovery_control``.
    """
    if method not in ("holm", "bh", "none"):
        raise ValueError(f"method must be 'holm', 'bh' or 'none', not {method!r}")
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if method == "none" or m == 0:
        return p.copy() if method == "none" else out
    if method == "bh":
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
        return out
    order = np.argsort(p[ok], kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[ok][order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    out[ok] = adjusted
    return out


def single_factor_pairs(conditions: pd.DataFrame, factors: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of conditions that differ in exactly one of ``factors`` (every pair when there is at
    most one factor). ``conditions``: one row per condition_id with the factor columns."""
    cond = conditions.drop_duplicates("condition_id")
    ids = cond["condition_id"].astype(str).tolist()
    values = cond[list(factors)].astype(str).to_numpy() if factors else np.empty((len(ids), 0))
    pairs = []
    for i, j in combinations(range(len(ids)), 2):
        if len(factors) <= 1 or int((values[i] != values[j]).sum()) == 1:
            pairs.append((ids[i], ids[j]))
    return pairs


def replicate_ci(metrics: pd.DataFrame, metric: str = "mean", *, by: Sequence[str] = DEFAULT_CI_BY,
                 confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0) -> pd.DataFrame:
    """Bootstrap confidence interval of the across-replicate average of ``metric``.

    Each row of ``metrics`` (from ``round_metrics``) is one replicate; rows are pooled within
    ``by``. With one replicate the interval is NaN (nothing to resample); with identical values
    it collapses to that value. Percentile intervals, because BCa is unstable with the handful
    of replicates experiments usually have.
    """
    if metric not in metrics:
        raise KeyError(f"metrics have no column {metric!r}")
    rows = []
    for key, group in metrics.groupby(list(by), observed=True, sort=True):
        values = group[metric].dropna().to_numpy(dtype=float)
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        low = high = np.nan
        if values.size >= 2 and np.ptp(values) == 0:
            low = high = float(values[0])
        elif values.size >= 2:
            res = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                                  method="percentile", rng=np.random.default_rng(seed))
            low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        row.update({"metric": metric, "n_replicates": int(values.size),
                    "estimate": float(values.mean()) if values.size else np.nan, "ci_low": low,
                    "ci_high": high, "confidence": confidence})
        rows.append(row)
    return pd.DataFrame(rows)


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Mean difference over the pooled standard deviation (positive when a is larger)."""
    na, nb = len(a), len(b)
    pooled = np.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    return float((np.mean(a) - np.mean(b)) / pooled) if pooled > 0 else np.nan


def compare_two(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Welch t, Mann-Whitney U (two-sided) and effect sizes for two samples.

    rank_biserial = 2 U_a / (n_a n_b) - 1: the probability that a random a exceeds a random b
    minus the reverse (positive when a tends to be larger).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = {"n_a": len(a), "n_b": len(b), "mean_a": np.mean(a) if len(a) else np.nan,
           "mean_b": np.mean(b) if len(b) else np.nan, "median_a": np.median(a) if len(a) else np.nan,
           "median_b": np.median(b) if len(b) else np.nan}
    out["diff"] = out["mean_a"] - out["mean_b"]
    if len(a) < 2 or len(b) < 2:
        return out | {"welch_t": np.nan, "welch_p": np.nan, "mannwhitney_u": np.nan,
                      "mannwhitney_p": np.nan, "cohen_d": np.nan, "rank_biserial": np.nan}
    t = stats.ttest_ind(a, b, equal_var=False)
    u = stats.mannwhitneyu(a, b, alternative="two-sided")
    return out | {"welch_t": float(t.statistic), "welch_p": float(t.pvalue), "mannwhitney_u": float(u.statistic),
                  "mannwhitney_p": float(u.pvalue), "cohen_d": cohens_d(a, b),
                  "rank_biserial": float(2.0 * u.statistic / (len(a) * len(b)) - 1.0)}


def compare_conditions(run: RunData | PathLike, a: str | None = None, b: str | None = None, *,
                       rounds: Sequence[int] | None = None,
                       unit: Literal["agent", "replicate"] = "agent",
                       pairs: Sequence[tuple[str, str]] | None = None,
                       correction: Correction = "holm") -> pd.DataFrame:
    """Test condition a against condition b (every pair when both are None, or the given
    ``pairs``), per round.

    ``unit="agent"`` compares all valid guesses pooled over replicates (the question "do these
    populations guess differently"); ``unit="replicate"`` compares replicate means (the
    question "would a rerun give a different mean"), which needs several replicates.

    ``welch_p_adj`` and ``mannwhitney_p_adj`` are the p-values adjusted by ``correction`` over
    every row of the returned table (all pairs and rounds are one family).
    """
    run = as_run(run)
    if (a is None) != (b is None):
        raise ValueError("give both conditions a and b, or neither for every pair")
    if a is not None and pairs is not None:
        raise ValueError("give conditions a and b, or pairs, not both")
    if unit == "agent":
        frame = run.read_decisions(["condition_id", "round", "value", "valid"])
        frame = frame[frame["valid"].fillna(False).astype(bool) & frame["value"].notna()]
        column = "value"
    elif unit == "replicate":
        frame = round_metrics(run).dropna(subset=["mean"])
        column = "mean"
    else:
        raise ValueError(f"unit must be 'agent' or 'replicate', not {unit!r}")
    frame = frame.assign(condition_id=frame["condition_id"].astype(str))
    known = sorted(frame["condition_id"].unique())
    if a is not None:
        pairs = [(a, b)]
    elif pairs is None:
        pairs = list(combinations(known, 2))
    pairs = [(str(x), str(y)) for x, y in pairs]
    for name in {x for pair in pairs for x in pair}:
        if name not in known:
            raise KeyError(f"no condition {name!r}; the run has {known}")
    wanted = sorted(frame["round"].unique()) if rounds is None else list(rounds)
    samples = {key: g[column].to_numpy() for key, g in frame.groupby(["condition_id", "round"], observed=True)}
    empty = np.array([], dtype=float)
    rows = [{"round": int(r), "condition_a": ca, "condition_b": cb, "unit": unit,
             **compare_two(samples.get((ca, r), empty), samples.get((cb, r), empty))}
            for r in wanted for ca, cb in pairs]
    out = pd.DataFrame(rows)
    for test in ("welch", "mannwhitney"):
        column = f"{test}_p"
        out[f"{column}_adj"] = adjust_pvalues(out[column], correction) if len(out) else pd.Series(dtype=float)
    out.attrs["correction"] = correction
    return out
