"""Guesses broken down by a persona attribute (education, occupation, ...) or a decision column
(model, a design factor), to see whether who an agent is moves how it plays."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from crowdlab.analysis.loading import PathLike, RunData, as_run

DEFAULT_BY: tuple[str, ...] = ("condition_id", "round")


def breakdown(run: RunData | PathLike, attribute: str, *, by: Sequence[str] = DEFAULT_BY) -> pd.DataFrame:
    """n, n_valid, invalid_rate, mean, median, std of guesses per ``by`` x ``attribute`` value.

    Replicates and runs are pooled unless ``by`` names ``replicate`` / ``run_id``.
    """
    run = as_run(run)
    by = list(by)
    decision_cols = run.decisions_dataset.schema.names
    base = [*dict.fromkeys([*by, "value", "valid"])]
    if attribute in decision_cols:
        frame = run.read_decisions([*dict.fromkeys([*base, attribute])])
    elif attribute in run.personas.columns:
        frame = run.decisions_with_personas([*dict.fromkeys([*base, "run_id", "agent_id"])], [attribute])
    else:
        raise KeyError(
            f"attribute {attribute!r} is neither a decision column ({decision_cols}) nor a persona "
            f"column ({list(run.personas.columns)})"
        )
    frame = frame.assign(_ok=frame["valid"].fillna(False).astype(bool) & frame["value"].notna())
    frame["_v"] = frame["value"].where(frame["_ok"])
    grouped = frame.groupby([*by, attribute], observed=True, sort=True)
    out = grouped.agg(n=("_ok", "size"), n_valid=("_ok", "sum"), mean=("_v", "mean"),
                      median=("_v", "median"), std=("_v", "std")).reset_index()
    out["invalid_rate"] = 1.0 - out["n_valid"] / out["n"]
    for col in (*by, attribute):
        if isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].astype(str)
    return out
