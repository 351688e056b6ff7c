"""Each model of a mixed-model run beside the human data: the fidelity table, one row per model.

``fidelity`` compares the whole population with the humans; in a run where an LLM and a baseline
play the same game, the question is how each of them compares. Replicates are pooled here (the
model breakdown pools them).
"""

from __future__ import annotations

import pandas as pd

from crowdlab.analysis.breakdown import breakdown
from crowdlab.analysis.loading import PathLike, RunData, as_run

COLUMNS = ["condition_id", "round", "model", "n_valid", "sim_mean", "sim_median", "dataset", "session",
           "human_mean", "human_median", "mean_diff", "median_diff"]


def model_fidelity(run: RunData | PathLike, fidelity_table: pd.DataFrame) -> pd.DataFrame:
    """Per model, condition and round: its mean and median beside every matched human row of
    ``fidelity_table`` (from ``fidelity``), and the differences model - human. Empty when the run
    has one model or no human row matched."""
    run = as_run(run)
    matched = fidelity_table.dropna(subset=["dataset"]) if "dataset" in fidelity_table else fidelity_table
    if matched.empty or "model" not in run.decisions_dataset.schema.names:
        return pd.DataFrame(columns=COLUMNS)
    models = breakdown(run, "model")
    if models["model"].nunique() < 2:
        return pd.DataFrame(columns=COLUMNS)
    human = matched[["condition_id", "round", "dataset", "session", "human_mean", "human_median"]]
    out = models.rename(columns={"mean": "sim_mean", "median": "sim_median"}).astype({"condition_id": str})
    out = out.merge(human.astype({"condition_id": str}), on=["condition_id", "round"], how="inner")
    out["mean_diff"] = out["sim_mean"] - out["human_mean"]
    out["median_diff"] = out["sim_median"] - out["human_median"]
    return out[COLUMNS].sort_values(["condition_id", "round", "dataset", "model"]).reset_index(drop=True)
