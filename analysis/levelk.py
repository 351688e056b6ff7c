"""Level-k reasoning: where iterated best responses land, and how many guesses sit near them.

A level-0 player guesses an anchor (50, the middle, as in Nagel 1995; or 100, the top); a level-k
player best-responds to level k-1, so its guess is ``offset + p x (level k-1 guess)``, clipped
to [lo, hi]. With offset 0 that is ``anchor x p^k``; the offset variant (P7: 5 + 1/2 x mean)
iterates the same map, converging to the equilibrium offset / (1 - p).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from crowdlab.analysis.loading import PathLike, RunData, as_run
from crowdlab.analysis.metrics import KEYS, _valid, equilibrium

DEFAULT_ANCHORS: tuple[float, ...] = (50.0, 100.0)


def level_k_points(p: float, offset: float = 0.0, lo: float = 0.0, hi: float = 100.0,
                   anchors: Sequence[float] = DEFAULT_ANCHORS, max_k: int = 3) -> pd.DataFrame:
    """The level-k guesses for k = 1..max_k from each anchor, plus the equilibrium.

    Columns: label (``L2@50``, ``EQ``), anchor (NaN for EQ), k (-1 for EQ), point.
    """
    rows = []
    for anchor in anchors:
        point = float(anchor)
        for k in range(1, max_k + 1):
            point = float(np.clip(offset + p * point, lo, hi))
            rows.append({"label": f"L{k}@{anchor:g}", "anchor": float(anchor), "k": k, "point": point})
    eq = float(equilibrium(p, offset, lo, hi))
    if np.isfinite(eq):
        rows.append({"label": "EQ", "anchor": np.nan, "k": -1, "point": eq})
    return pd.DataFrame(rows)


def level_k_shares(run: RunData | PathLike, *, tol: float = 1.0, max_k: int = 3,
                   anchors: Sequence[float] = DEFAULT_ANCHORS,
                   keys: Sequence[str] = KEYS) -> pd.DataFrame:
    """Share of valid guesses within ``tol`` of each level-k point and of the equilibrium.

    One row per group of ``keys`` and point. Windows may overlap when points are closer than
    2 x tol (e.g. deep levels near the equilibrium): a guess then counts for each, so shares of
    one group need not sum to at most 1.
    """
    run = as_run(run)
    keys = list(keys)
    frame = _valid(run.read_decisions([*dict.fromkeys([*keys, "condition_id", "run_id", "value", "valid"])]))
    conditions = run.conditions.astype({"run_id": str, "condition_id": str})
    out = []
    for cond in conditions.itertuples(index=False):
        mask = (frame["run_id"] == cond.run_id) & (frame["condition_id"] == cond.condition_id)
        sub = frame.loc[mask, [*keys, "value"]]
        if sub.empty:
            continue
        points = level_k_points(cond.p, cond.offset, cond.lo, cond.hi, anchors, max_k)
        values = sub["value"].to_numpy()[:, None]
        near = pd.DataFrame(np.abs(values - points["point"].to_numpy()[None, :]) <= tol,
                            columns=points["label"], index=sub.index)
        grouped = pd.concat([sub[keys], near], axis=1).groupby(keys, observed=True)
        n_valid = grouped.size().rename("n_valid")
        counts = grouped[list(points["label"])].sum()
        long = counts.reset_index().melt(id_vars=keys, var_name="label", value_name="n_near")
        long = long.merge(n_valid.reset_index(), on=keys).merge(points, on="label")
        long["share"] = long["n_near"] / long["n_valid"]
        out.append(long)
    if not out:
        return pd.DataFrame(columns=[*keys, "label", "n_near", "n_valid", "anchor", "k", "point", "share"])
    result = pd.concat(out, ignore_index=True)
    for k in ("run_id", "condition_id"):
        if k in result:
            result[k] = result[k].astype(str)
    return result.sort_values([*keys, "k", "anchor"]).reset_index(drop=True)
