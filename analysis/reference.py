"""Human and paper reference data, and how close a simulated run comes to it.

The figures live as CSV files in ``data/reference/`` with the source in every row (never as
constants in code). Set ``CROWDLAB_REFERENCE_DIR`` to read them from elsewhere.

Fidelity: the shipped human data are means and medians only (Nagel 1995 gives no per-subject
distribution in our sources), so a Wasserstein distance is not possible; fidelity is the
difference in mean and in median, raw, and scaled by the human spread where a source documents
one (the ``spread`` column; empty for every shipped row, so the scaled columns are NaN).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from crowdlab.analysis.loading import PathLike, RunData, as_run
from crowdlab.analysis.metrics import round_metrics

_P_TOL = 1e-6


def reference_dir() -> Path:
    """Folder of the reference CSVs: $CROWDLAB_REFERENCE_DIR or the repository's data/reference."""
    env = os.environ.get("CROWDLAB_REFERENCE_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data" / "reference"


def _read(name: str) -> pd.DataFrame:
    path = reference_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"reference data {path} not found (set CROWDLAB_REFERENCE_DIR)")
    return pd.read_csv(path)


def human_reference() -> pd.DataFrame:
    """Nagel (1995) lab sessions: pooled first period per p, and two sessions over 4 periods."""
    return _read("nagel1995.csv")


def field_contests() -> pd.DataFrame:
    """Large field contests (FT 1997, NPR 2011, Wait But Why); plausibility ranges only."""
    return _read("field_contests.csv")


def paper_reference() -> pd.DataFrame:
    """AgentScope paper (arXiv 2407.17789) figures, long format: table, model, prompt, metric."""
    return _read("agentscope_paper.csv")


def _per_condition_round(run_or_metrics: RunData | PathLike | pd.DataFrame) -> pd.DataFrame:
    metrics = run_or_metrics if isinstance(run_or_metrics, pd.DataFrame) else round_metrics(run_or_metrics)
    return metrics.groupby(["condition_id", "round"], observed=True, sort=True).agg(
        p=("p", "first"), offset=("offset", "first"), lo=("lo", "first"), hi=("hi", "first"),
        n_replicates=("mean", "size"), sim_mean=("mean", "mean"), sim_median=("median", "mean"),
    ).reset_index()


def fidelity(run_or_metrics: RunData | PathLike | pd.DataFrame,
             reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Simulated mean/median per condition and round against every human row of the same game.

    A human row matches when p, offset, lo and hi agree and its period equals the round.
    Replicates are averaged first (mean of means, mean of medians). Columns: condition_id,
    round, p, sim_mean, sim_median, dataset, session, subjects, human_mean, human_median,
    mean_diff (sim - human), median_diff, mean_diff_scaled, median_diff_scaled, source.
    """
    sim = _per_condition_round(run_or_metrics)
    ref = human_reference() if reference is None else reference
    rows = []
    for s in sim.itertuples(index=False):
        match = ref[(np.abs(ref["p"] - s.p) < _P_TOL) & (ref["offset"] == s.offset) & (ref["lo"] == s.lo)
                    & (ref["hi"] == s.hi) & (ref["period"] == s.round)]
        for h in match.itertuples(index=False):
            spread = getattr(h, "spread", np.nan)
            rows.append({
                "condition_id": s.condition_id, "round": s.round, "p": s.p, "n_replicates": s.n_replicates,
                "sim_mean": s.sim_mean, "sim_median": s.sim_median, "dataset": h.dataset,
                "session": str(h.session), "subjects": h.subjects, "human_mean": h.mean,
                "human_median": h.median, "mean_diff": s.sim_mean - h.mean,
                "median_diff": s.sim_median - h.median,
                "mean_diff_scaled": (s.sim_mean - h.mean) / spread if spread and spread > 0 else np.nan,
                "median_diff_scaled": (s.sim_median - h.median) / spread if spread and spread > 0 else np.nan,
                "source": h.source,
            })
    columns = ["condition_id", "round", "p", "n_replicates", "sim_mean", "sim_median", "dataset", "session",
               "subjects", "human_mean", "human_median", "mean_diff", "median_diff", "mean_diff_scaled",
               "median_diff_scaled", "source"]
    return pd.DataFrame(rows, columns=columns)


def _norm(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _condition_labels(metrics: pd.DataFrame, run: RunData | None) -> pd.DataFrame:
    """model and prompt per condition: from factor columns when present, else decisions' model."""
    cond = metrics.drop_duplicates("condition_id")
    out = pd.DataFrame({"condition_id": cond["condition_id"].astype(str)})
    for want, names in {"model": ("model",), "prompt": ("prompt", "prompt_id", "variant", "instruction")}.items():
        # factor columns are named after the config path, e.g. ``scenario.variant``
        col = next((c for n in names for c in cond.columns if c == n or c.endswith(f".{n}")), None)
        out[want] = cond[col].astype(str).to_numpy() if col else None
    if out["model"].isna().all() and run is not None:
        models = run.read_decisions(["condition_id", "model"]).drop_duplicates()
        models = models.astype(str).groupby("condition_id")["model"].agg(lambda s: "+".join(sorted(s)))
        out["model"] = out["condition_id"].map(models)
    return out


def paper_comparison(run_or_metrics: RunData | PathLike | pd.DataFrame,
                     run: RunData | None = None) -> pd.DataFrame:
    """The run's per-round mean/std next to the paper's figure for the same model and prompt.

    A paper model matches when its normalised name (lower case, letters and digits) is contained
    in the run's model label, e.g. ``Qwen/Qwen2-72B-Instruct`` matches ``Qwen2-72B``. Empty when
    nothing matches (e.g. the behavioural backend).
    """
    if isinstance(run_or_metrics, pd.DataFrame):
        metrics = run_or_metrics
    else:
        run = as_run(run_or_metrics)
        metrics = round_metrics(run)
    labels = _condition_labels(metrics, run)
    per = metrics.groupby(["condition_id", "round"], observed=True).agg(
        p=("p", "first"), mean=("mean", "mean"), std=("std", "mean")).reset_index()
    per = per.merge(labels, on="condition_id")
    paper = paper_reference()
    paper = paper[paper["metric"].isin(["mean", "std"]) & paper["round"].notna()]
    rows = []
    for s in per.itertuples(index=False):
        model = _norm(s.model)
        hits = paper[(np.abs(paper["p"] - s.p) < _P_TOL) & (paper["round"] == s.round)
                     & paper["model"].map(lambda m: bool(model) and _norm(m) in model)
                     & (paper["prompt"].fillna("").astype(str) == str(s.prompt))]
        for h in hits.itertuples(index=False):
            value = s.mean if h.metric == "mean" else s.std
            rows.append({"condition_id": s.condition_id, "round": s.round, "model": s.model, "prompt": s.prompt,
                         "paper_table": h.table, "paper_model": h.model, "metric": h.metric,
                         "run_value": value, "paper_value": h.value, "diff": value - h.value, "source": h.source})
    return pd.DataFrame(rows, columns=["condition_id", "round", "model", "prompt", "paper_table", "paper_model",
                                       "metric", "run_value", "paper_value", "diff", "source"])
