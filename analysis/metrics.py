"""Per-round metrics of the p-beauty contest, computed with groupby over all agents at once.

Everything here is vectorised over agents (no Python loop touches a row): a million agents over
five rounds is a handful of groupby passes. Loops only ever run over conditions or level-k
points, which number in the tens.

Definitions (valid answers only; invalid ones are counted, never averaged):
- ``target`` = offset + p x mean, as the game settles it.
- ``winning_value``: the valid guess closest to the target (the lower one if two tie from both
  sides); ``n_winners`` counts every guess at that distance.
- ``equilibrium``: the fixed point offset / (1 - p) clipped to [lo, hi] when p < 1; ``hi`` when
  p > 1 (the top is the stable equilibrium, as in Nagel's p = 4/3 sessions); NaN when p = 1.
- ``std`` is the sample standard deviation (ddof = 1); ``mode`` is the most frequent exact value
  (ties go to the smallest).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from crowdlab.analysis.loading import PathLike, RunData, as_run

KEYS: tuple[str, ...] = ("run_id", "condition_id", "replicate", "round")
_WIN_TOL = 1e-9


def equilibrium(p: float | np.ndarray, offset: float | np.ndarray = 0.0, lo: float | np.ndarray = 0.0,
                hi: float | np.ndarray = 100.0) -> np.ndarray:
    """Nash equilibrium of 'guess offset + p x mean' on [lo, hi] (see module docstring)."""
    p, offset, lo, hi = (np.asarray(x, dtype=float) for x in (p, offset, lo, hi))
    with np.errstate(divide="ignore", invalid="ignore"):
        below = np.clip(offset / (1.0 - p), lo, hi)
    return np.where(p < 1.0, below, np.where(p > 1.0, hi, np.nan))


def _valid(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["valid"].fillna(False).astype(bool) & frame["value"].notna()]


def _mode(valid: pd.DataFrame, keys: list[str]) -> pd.Series:
    counts = valid.groupby([*keys, "value"], observed=True).size().rename("count").reset_index()
    counts = counts.sort_values([*keys, "count", "value"], ascending=[True] * len(keys) + [False, True])
    return counts.drop_duplicates(keys).set_index(keys)["value"].rename("mode")


def _winners(valid: pd.DataFrame, keys: list[str], target: np.ndarray) -> pd.DataFrame:
    """Winning value and winner count per group (``target`` in sorted group order)."""
    gid = valid.groupby(keys, observed=True, sort=True).ngroup().to_numpy()
    values = valid["value"].to_numpy()
    dist = np.abs(values - target[gid])
    best = pd.Series(dist).groupby(gid).transform("min").to_numpy()
    is_winner = dist <= best + _WIN_TOL
    win = pd.DataFrame({"gid": gid[is_winner], "value": values[is_winner]})
    return win.groupby("gid").agg(winning_value=("value", "min"), n_winners=("value", "size"))


def _counts(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    flags = frame[keys].copy()
    flags["_valid"] = frame["valid"].fillna(False).astype(bool) & frame["value"].notna()
    counts = flags.groupby(keys, observed=True, sort=True)["_valid"].agg(["size", "sum"])
    counts.columns = ["n", "n_valid"]
    counts["n_invalid"] = counts["n"] - counts["n_valid"]
    counts["invalid_rate"] = counts["n_invalid"] / counts["n"]
    return counts


def _with_params(run: RunData, frame: pd.DataFrame) -> pd.DataFrame:
    """Attach p, offset, lo, hi and the factor columns from the run's conditions table."""
    cond = run.conditions.astype({"run_id": str, "condition_id": str})
    frame = frame.astype({"run_id": str, "condition_id": str})
    merged = frame.merge(cond, on=["run_id", "condition_id"], how="left", validate="many_to_one")
    unknown = merged["p"].isna()
    if unknown.any():
        bad = merged.loc[unknown, ["run_id", "condition_id"]].drop_duplicates().values.tolist()
        raise ValueError(f"no game parameters (p, offset, lo, hi) in rounds for {bad}")
    return merged


def round_metrics(run: RunData | PathLike, *, by_group: bool = False) -> pd.DataFrame:
    """One row per run, condition, replicate and round (and group when ``by_group``).

    Columns: keys, n, n_valid, n_invalid, invalid_rate, mean, median, std, mode, p, offset, lo,
    hi, the design factors, target, winning_value, n_winners, equilibrium,
    distance_to_equilibrium, mean_ratio (mean over the previous round's mean), distance_ratio.
    """
    run = as_run(run)
    keys = [*KEYS, "group"] if by_group else list(KEYS)
    frame = run.read_decisions([*keys, "value", "valid"])
    valid = _valid(frame)
    stats = valid.groupby(keys, observed=True, sort=True)["value"].agg(["mean", "median", "std"])
    stats = stats.join(_mode(valid, keys)).reset_index().astype({"run_id": str, "condition_id": str})
    p = _with_params(run, stats[["run_id", "condition_id"]])
    target = (p["offset"] + p["p"] * stats["mean"]).to_numpy()
    stats["target"] = target
    stats = stats.join(_winners(valid, keys, target).reset_index(drop=True))
    counts = _counts(frame, keys).reset_index().astype({"run_id": str, "condition_id": str})
    out = _with_params(run, counts.merge(stats, on=keys, how="left"))
    out["n_winners"] = out["n_winners"].fillna(0).astype("int64")
    out["equilibrium"] = equilibrium(out["p"], out["offset"], out["lo"], out["hi"])
    out["distance_to_equilibrium"] = (out["mean"] - out["equilibrium"]).abs()
    out = out.sort_values(keys).reset_index(drop=True)
    series_keys = [k for k in keys if k != "round"]
    previous = out.groupby(series_keys, observed=True)[["mean", "distance_to_equilibrium"]].shift(1)
    out["mean_ratio"] = out["mean"] / previous["mean"]
    out["distance_ratio"] = out["distance_to_equilibrium"] / previous["distance_to_equilibrium"]
    return out


def convergence(metrics: pd.DataFrame, threshold: float = 1.0,
                keys: Sequence[str] = ("run_id", "condition_id", "replicate")) -> pd.DataFrame:
    """How fast each replicate approaches equilibrium.

    ``rounds_to_threshold``: first round whose mean lies within ``threshold`` of the equilibrium
    (NaN if none does); ``mean_ratio_geo`` / ``distance_ratio_geo``: geometric mean of the
    round-over-round ratios (about p for a population that iterates one step per round).
    """
    keys = list(keys)
    frame = metrics.sort_values([*keys, "round"])
    below = frame[frame["distance_to_equilibrium"] < threshold]
    first = below.groupby(keys, observed=True)["round"].min().rename("rounds_to_threshold")

    def geo(col: str) -> pd.Series:
        ratios = frame[[*keys, col]].copy()
        ratios = ratios[(ratios[col] > 0) & np.isfinite(ratios[col])]
        ratios["log"] = np.log(ratios[col])
        return np.exp(ratios.groupby(keys, observed=True)["log"].mean()).rename(f"{col}_geo")

    base = frame.groupby(keys, observed=True).agg(
        n_rounds=("round", "size"), first_mean=("mean", "first"), last_mean=("mean", "last"),
        equilibrium=("equilibrium", "first"),
    )
    return base.join(first).join(geo("mean_ratio")).join(geo("distance_ratio")).reset_index()
