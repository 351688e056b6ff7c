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
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from crowdlab.analysis.loading import PathLike, RunData, as_run
from crowdlab.analysis.metrics import round_metrics

#: A reference row matches a run's p when they differ by at most half a unit in the 4th decimal:
#: configs write 2/3 as 0.6667 (|difference| 3.3e-5 from the reference's 2/3), which must match,
#: while 0.667 (3.3e-4 away) or 0.51 must not. The shipped reference values (1/2, 2/3, 4/3) are
#: far apart, so no p can match two of them. (A tiny epsilon absorbs float rounding at the edge.)
P_TOLERANCE = 5e-5


def p_matches(reference_p: pd.Series, p: float) -> pd.Series:
    """Which reference p values equal ``p`` to 4 decimals (see ``P_TOLERANCE``)."""
    return np.abs(reference_p.astype(float) - float(p)) <= P_TOLERANCE + 1e-12


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

    A human row matches when p agrees to 4 decimals (``P_TOLERANCE``: 0.6667 is 2/3), offset, lo
    and hi agree, and its period equals the round. Replicates are averaged first (mean of means,
    mean of medians). Columns: condition_id, round, p, n_replicates, sim_mean, sim_median,
    dataset, session, subjects, human_mean, human_median, mean_diff (sim - human), median_diff,
    mean_diff_scaled, median_diff_scaled, source, note.

    A condition that no human row matches gets one row saying why in ``note`` (e.g. "no human
    data for p = 0.55 (have 0.5, 0.6667, 1.333)"), with ``round``, ``dataset`` and the numbers
    empty; ``fid.dropna(subset=["dataset"])`` keeps the comparisons only.
    """
    sim = _per_condition_round(run_or_metrics)
    ref = human_reference() if reference is None else reference
    rows = []
    for s in sim.itertuples(index=False):
        match = ref[p_matches(ref["p"], s.p) & (ref["offset"] == s.offset) & (ref["lo"] == s.lo)
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
                "source": h.source, "note": "",
            })
    matched = {row["condition_id"] for row in rows}
    for cond in sim.drop_duplicates("condition_id").itertuples(index=False):
        if cond.condition_id not in matched:
            rounds = sorted(sim.loc[sim["condition_id"] == cond.condition_id, "round"])
            rows.append({"condition_id": cond.condition_id, "round": pd.NA, "p": cond.p,
                         "n_replicates": cond.n_replicates, "note": why_no_reference(cond, rounds, ref)})
    columns = ["condition_id", "round", "p", "n_replicates", "sim_mean", "sim_median", "dataset", "session",
               "subjects", "human_mean", "human_median", "mean_diff", "median_diff", "mean_diff_scaled",
               "median_diff_scaled", "source", "note"]
    out = pd.DataFrame(rows, columns=columns)
    out["round"] = out["round"].astype("Int64")
    return out


def _fmt(value: float) -> str:
    return f"{float(value):.4g}"


def why_no_reference(game: object, rounds: list[int], reference: pd.DataFrame) -> str:
    """Why no row of ``reference`` matches a condition's game (p, offset, lo, hi) and rounds."""
    p, offset, lo, hi = (float(getattr(game, k)) for k in ("p", "offset", "lo", "hi"))
    have = reference[p_matches(reference["p"], p)]
    if have.empty:
        known = sorted(reference["p"].astype(float).unique())
        values = ", ".join(_fmt(v) for v in known)
        near = min(known, key=lambda v: abs(v - p), default=None)
        hint = ""
        if near is not None and abs(near - p) < 0.01:  # a rounding such as 0.667 for 2/3
            frac = Fraction(near).limit_denominator(100)
            hint = f"; for {frac} write p: {frac} or {near:.4f}"
        return f"no human data for p = {_fmt(p)} (have {values or 'none'}{hint})"
    same = have[have["offset"] == offset]
    if same.empty:
        offsets = ", ".join(_fmt(v) for v in sorted(have["offset"].unique()))
        return f"no human data for p = {_fmt(p)} with offset {_fmt(offset)} (have offset {offsets})"
    ranged = same[(same["lo"] == lo) & (same["hi"] == hi)]
    if ranged.empty:
        ranges = ", ".join(f"[{_fmt(a)}, {_fmt(b)}]" for a, b in sorted(set(zip(same["lo"], same["hi"]))))
        return f"no human data for p = {_fmt(p)} on [{_fmt(lo)}, {_fmt(hi)}] (have {ranges})"
    periods = ", ".join(str(int(v)) for v in sorted(ranged["period"].unique()))
    return (f"no human data for p = {_fmt(p)} in rounds {', '.join(map(str, rounds))} "
            f"(have periods {periods})")


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
        hits = paper[p_matches(paper["p"], s.p) & (paper["round"] == s.round)
                     & paper["model"].map(lambda m: bool(model) and _norm(m) in model)
                     & (paper["prompt"].fillna("").astype(str) == str(s.prompt))]
        for h in hits.itertuples(index=False):
            value = s.mean if h.metric == "mean" else s.std
            rows.append({"condition_id": s.condition_id, "round": s.round, "model": s.model, "prompt": s.prompt,
                         "paper_table": h.table, "paper_model": h.model, "metric": h.metric,
                         "run_value": value, "paper_value": h.value, "diff": value - h.value, "source": h.source})
    return pd.DataFrame(rows, columns=["condition_id", "round", "model", "prompt", "paper_table", "paper_model",
                                       "metric", "run_value", "paper_value", "diff", "source"])
