"""Answer fields against human reference data: means and shares with intervals, and a distance
between distributions where a source gives a whole distribution.

Reference rows live in ``data/reference/answer_fields.csv`` (or ``$CROWDLAB_REFERENCE_DIR``), one
figure per row with its source:

``dataset, game, field, statistic, round, value, value_low, value_high, scale, unit, source, note``

- ``game`` matches the run's ``scenario.name``; ``field`` an answer field, or ``outcome:<name>``
  for a settled outcome (the mean of the rounds table's per-group ``outcome_<name>``, interval
  over groups); ``round`` a round (empty: every round).
- ``statistic``: ``mean`` (of the field divided by ``scale``), ``share_at:<x>`` (share of valid
  answers equal to ``x`` after scaling, e.g. ``share_at:0`` gave nothing), ``share:<option>``
  (share of a choice option or scale point).
- ``scale``: a scenario parameter (``pie``) or a number; empty is 1.
- ``value`` is the human figure; ``value_low``/``value_high`` a published range (either may be
  empty: a source that gives only a range has no ``value``).

Simulated statistics come with 95 % intervals (normal for means, Wilson for shares) over the
valid answers of a condition and round, replicates pooled. When the ``share_at`` (or ``share``)
rows of one dataset, game, field and round add up to 1 they are a distribution, and the
Wasserstein-1 distance and the Kolmogorov-Smirnov statistic to the simulated answers are given,
with a seeded bootstrap 95 % interval (answers resampled, the human distribution held fixed).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from crowdlab.analysis.fields import AnswerField, answer_fields, wilson
from crowdlab.analysis.loading import PathLike, RunData, as_run
from crowdlab.analysis.reference import reference_dir

log = logging.getLogger(__name__)

REFERENCE_FILE = "answer_fields.csv"
#: Bootstrap resamples for the distance intervals.
N_BOOT = 1000
#: Share rows whose values sum to 1 within this tolerance form a distribution.
SUM_TOLERANCE = 0.011

COLUMNS = ["condition_id", "round", "field", "dataset", "statistic", "n_valid", "sim", "sim_ci_low", "sim_ci_high",
           "human", "human_low", "human_high", "diff", "human_in_ci", "source"]
DISTANCE_COLUMNS = ["condition_id", "round", "field", "dataset", "n_valid", "support", "wasserstein",
                    "wasserstein_ci_low", "wasserstein_ci_high", "ks", "ks_ci_low", "ks_ci_high", "source"]


def field_reference() -> pd.DataFrame:
    """The shipped answer-field reference rows (empty frame when the file is absent)."""
    path = reference_dir() / REFERENCE_FILE
    if not path.is_file():
        return pd.DataFrame(columns=["dataset", "game", "field", "statistic", "round", "value", "value_low",
                                     "value_high", "scale", "unit", "source", "note"])
    return pd.read_csv(path, dtype={"statistic": str, "scale": str, "field": str, "game": str})


def _scenario(manifest: dict) -> dict:
    return ((manifest.get("config") or {}).get("scenario")) or {}


def condition_parameters(run: RunData) -> pd.DataFrame:
    """One row per (run, condition): the scenario's name and numeric parameters, with design
    factors named ``scenario.parameters.<x>`` applied."""
    rows = []
    conditions = run.conditions
    for run_id, manifest in run.manifests.items():
        scenario = _scenario(manifest)
        base = {k: v for k, v in (scenario.get("parameters") or {}).items() if isinstance(v, (int, float))}
        for _, cond in conditions[conditions["run_id"].astype(str) == str(run_id)].iterrows():
            params = dict(base)
            for col in cond.index:
                if str(col).startswith("scenario.parameters."):
                    try:
                        params[str(col).split(".", 2)[2]] = float(cond[col])
                    except (TypeError, ValueError):
                        pass
            rows.append({"run_id": str(run_id), "condition_id": str(cond["condition_id"]),
                         "game": scenario.get("name"), "params": params})
    return pd.DataFrame(rows, columns=["run_id", "condition_id", "game", "params"])


def _scale(text: object, params: dict) -> float | None:
    if text is None or (isinstance(text, float) and np.isnan(text)) or str(text).strip() == "":
        return 1.0
    try:
        return float(text)
    except ValueError:
        value = params.get(str(text).strip())
        return None if value is None else float(value)


def _values(run: RunData, af: AnswerField) -> pd.DataFrame:
    """run_id, condition_id, round and the field's valid values (floats for numeric fields,
    option text for choice fields)."""
    table = run.decisions_dataset.to_table(columns=["run_id", "condition_id", "round", af.column])
    col = table.column(af.column)
    if af.kind == "numeric":
        values = pc.cast(col, "float64").to_numpy(zero_copy_only=False)
    else:
        values = pc.cast(col.cast(col.type.value_type) if hasattr(col.type, "value_type") else col, "string")
        values = values.to_pandas().to_numpy(dtype=object)
    frame = pd.DataFrame({"run_id": table.column("run_id").to_pandas().astype(str),
                          "condition_id": table.column("condition_id").to_pandas().astype(str),
                          "round": table.column("round").to_numpy(), "v": values})
    return frame[pd.notna(frame["v"])]


def _answers_reader(run: RunData, fields: dict[str, AnswerField]) -> Callable[[str, pd.Series], pd.DataFrame]:
    """``answers_of(field name, condition row)``: that field's valid answers in one condition of the
    run. Each field is read from the decisions once, however many conditions ask for it."""
    read: dict[str, pd.DataFrame] = {}

    def answers_of(name: str, cond: pd.Series) -> pd.DataFrame:
        if name not in read:
            read[name] = _values(run, fields[name])
        values = read[name]
        return values[(values["run_id"] == cond["run_id"]) & (values["condition_id"] == cond["condition_id"])]

    return answers_of


def _matching(reference: pd.DataFrame, game: str | None, fields: dict[str, AnswerField]) -> pd.DataFrame:
    ref = reference[(reference["game"] == game) & reference["field"].isin(list(fields))]
    return ref.reset_index(drop=True)


def field_fidelity(run: RunData | PathLike, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every reference row of the run's game beside the simulated statistic per condition and
    round: sim with its 95 % interval, human value and range, diff (sim - human) and whether the
    human value (or range) meets the simulated interval. Empty when nothing matches."""
    run = as_run(run)
    reference = field_reference() if reference is None else reference
    fields = {f.name: f for f in answer_fields(run, include_text=False)}
    answers_of = _answers_reader(run, fields)
    rows: list[dict] = []
    for _, cond in condition_parameters(run).iterrows():
        ref = _matching(reference, cond["game"], fields)
        if ref.empty:
            continue
        for name, rows_of_field in ref.groupby("field", sort=False):
            af = fields[name]
            values = answers_of(name, cond)
            for rnd, answers in values.groupby("round", sort=True):
                for _, ref_row in rows_of_field.iterrows():
                    if pd.notna(ref_row["round"]) and int(ref_row["round"]) != int(rnd):
                        continue
                    stat = _simulated(af, answers["v"].to_numpy(), str(ref_row["statistic"]),
                                      _scale(ref_row.get("scale"), cond["params"]))
                    if stat is None:
                        continue
                    rows.append({"condition_id": cond["condition_id"], "round": int(rnd), "field": name,
                                 "dataset": ref_row["dataset"], "statistic": ref_row["statistic"], **stat,
                                 "human": ref_row["value"], "human_low": ref_row["value_low"],
                                 "human_high": ref_row["value_high"], "source": ref_row["source"]})
        rows += _outcome_rows(run, reference, cond)
    out = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("diff", "human_in_ci")])
    for col in ("human", "human_low", "human_high", "sim", "sim_ci_low", "sim_ci_high"):
        out[col] = pd.to_numeric(out[col], errors="coerce")
    out["diff"] = out["sim"] - out["human"]
    lo = out["human_low"].fillna(out["human"])
    hi = out["human_high"].fillna(out["human"])
    meets = ((lo <= out["sim_ci_high"]) & (hi >= out["sim_ci_low"])).astype("boolean")
    out["human_in_ci"] = meets.mask(lo.isna() & hi.isna())
    return out[COLUMNS]


def _outcome_rows(run: RunData, reference: pd.DataFrame, cond: pd.Series) -> list[dict]:
    """Reference rows on a settled outcome (``field`` = ``outcome:<name>``, statistic ``mean``):
    the mean of the rounds table's per-group ``outcome_<name>`` values (replicates pooled), with
    a 95 % normal interval over groups."""
    ref = reference[(reference["game"] == cond["game"]) & reference["field"].astype(str).str.startswith("outcome:")]
    rounds = run.rounds
    if ref.empty or rounds.empty:
        return []
    rounds = rounds[(rounds["run_id"].astype(str) == cond["run_id"])
                    & (rounds["condition_id"].astype(str) == cond["condition_id"]) & (rounds["group"] >= 0)]
    out = []
    for _, ref_row in ref.iterrows():
        name = str(ref_row["field"]).split(":", 1)[1]
        column = f"outcome_{name}"
        if column not in rounds or not pd.api.types.is_numeric_dtype(rounds[column]):
            continue
        for rnd, groups in rounds.groupby("round", sort=True):
            if pd.notna(ref_row["round"]) and int(ref_row["round"]) != int(rnd):
                continue
            values = groups[column].dropna().to_numpy(float)
            stat = _simulated(AnswerField(name, "number"), values, str(ref_row["statistic"]),
                              _scale(ref_row.get("scale"), cond["params"]))
            if stat is not None:
                out.append({"condition_id": cond["condition_id"], "round": int(rnd), "field": ref_row["field"],
                            "dataset": ref_row["dataset"], "statistic": ref_row["statistic"], **stat,
                            "human": ref_row["value"], "human_low": ref_row["value_low"],
                            "human_high": ref_row["value_high"], "source": ref_row["source"]})
    return out


def _simulated(af: AnswerField, values: np.ndarray, statistic: str, scale: float | None) -> dict | None:
    n = int(values.size)
    if statistic == "mean" and af.kind == "numeric":
        if scale is None or n == 0:
            return None
        v = values.astype(float) / scale
        mean, sd = float(v.mean()), float(v.std(ddof=1)) if n > 1 else np.nan
        half = 1.959963984540054 * sd / np.sqrt(n)
        return {"n_valid": n, "sim": mean, "sim_ci_low": mean - half, "sim_ci_high": mean + half}
    if statistic.startswith("share_at:") and af.kind == "numeric":
        if scale is None:
            return None
        at = float(statistic.split(":", 1)[1])
        k = int(np.isclose(values.astype(float) / scale, at, rtol=0, atol=1e-9).sum())
    elif statistic.startswith("share:"):
        option = statistic.split(":", 1)[1]
        k = int((np.asarray(values).astype(str) == option).sum()) if af.kind != "numeric" else \
            int(np.isclose(values.astype(float), float(option)).sum())
    else:
        return None
    low, high = wilson(np.array([k]), np.array([n]))
    return {"n_valid": n, "sim": k / n if n else np.nan, "sim_ci_low": float(low[0]), "sim_ci_high": float(high[0])}


def distribution_distance(sim: np.ndarray, support: np.ndarray, human: np.ndarray, *, n_boot: int = N_BOOT,
                          seed: int = 0) -> dict[str, float]:
    """Wasserstein-1 distance and KS statistic between the simulated values ``sim`` and a
    discrete human distribution (``support`` points with probabilities ``human``), with seeded
    bootstrap 95 % intervals (simulated answers resampled; vectorised over resamples)."""
    support = np.asarray(support, float)
    human = np.asarray(human, float) / np.sum(human)
    sim = np.asarray(sim, float)
    points = np.union1d(support, np.unique(sim))
    sim_counts = np.bincount(np.searchsorted(points, sim), minlength=points.size).astype(float)
    human_mass = np.zeros(points.size)
    human_mass[np.searchsorted(points, support)] = human
    rng = np.random.default_rng(seed)
    boot = rng.multinomial(sim.size, sim_counts / sim_counts.sum(), size=n_boot).astype(float)
    masses = np.vstack([sim_counts, boot]) / sim.size
    gaps = np.cumsum(masses, axis=1) - np.cumsum(human_mass)[None, :]
    widths = np.diff(points)
    w1 = (np.abs(gaps[:, :-1]) * widths[None, :]).sum(axis=1) if points.size > 1 else np.zeros(len(gaps))
    ks = np.abs(gaps).max(axis=1)
    return {"wasserstein": float(w1[0]), "wasserstein_ci_low": float(np.quantile(w1[1:], 0.025)),
            "wasserstein_ci_high": float(np.quantile(w1[1:], 0.975)), "ks": float(ks[0]),
            "ks_ci_low": float(np.quantile(ks[1:], 0.025)), "ks_ci_high": float(np.quantile(ks[1:], 0.975))}


def field_distances(run: RunData | PathLike, reference: pd.DataFrame | None = None, *, seed: int = 0,
                    n_boot: int = N_BOOT) -> pd.DataFrame:
    """Distances to every complete human distribution of the run's game (see module docstring):
    one row per condition, round, field and dataset. Empty when no source gives a distribution."""
    run = as_run(run)
    reference = field_reference() if reference is None else reference
    fields = {f.name: f for f in answer_fields(run, include_text=False)}
    answers_of = _answers_reader(run, fields)
    rows: list[dict] = []
    for _, cond in condition_parameters(run).iterrows():
        ref = _matching(reference, cond["game"], fields)
        ref = ref[ref["statistic"].astype(str).str.match(r"^share(_at)?:")]
        if ref.empty:
            continue
        ref = ref.assign(_round=ref["round"].fillna(-1))
        for (name, dataset, ref_round), dist in ref.groupby(["field", "dataset", "_round"], sort=False):
            if abs(pd.to_numeric(dist["value"], errors="coerce").sum() - 1.0) > SUM_TOLERANCE:
                continue
            af = fields[name]
            if af.kind != "numeric":  # unordered options: no distance along an axis
                continue
            scales = {_scale(s, cond["params"]) for s in dist["scale"]}
            if None in scales or len(scales) != 1:
                continue
            scale = scales.pop()
            support, labels = _support(af, dist["statistic"].astype(str).tolist())
            if support is None:
                continue
            values = answers_of(name, cond)
            for rnd, answers in values.groupby("round", sort=True):
                if ref_round != -1 and int(ref_round) != int(rnd):
                    continue
                sim = _as_points(af, answers["v"].to_numpy(), labels) / (scale if af.kind == "numeric" else 1.0)
                sim = sim[np.isfinite(sim)]
                if sim.size == 0:
                    continue
                dist_stats = distribution_distance(sim, support, dist["value"].to_numpy(float), n_boot=n_boot,
                                                   seed=seed)
                rows.append({"condition_id": cond["condition_id"], "round": int(rnd), "field": name,
                             "dataset": dataset, "n_valid": int(sim.size), "support": len(support), **dist_stats,
                             "source": dist["source"].iloc[0]})
    return pd.DataFrame(rows, columns=DISTANCE_COLUMNS)


def _support(af: AnswerField, statistics: Sequence[str]) -> tuple[np.ndarray | None, list[str] | None]:
    """Numeric points of a reference distribution: ``share_at:x`` values, scale points, or the
    option positions of a choice field (distances then run over the declared option order)."""
    keys = [s.split(":", 1)[1] for s in statistics]
    if af.kind == "numeric":
        try:
            return np.array([float(k) for k in keys]), None
        except ValueError:
            return None, None
    options = af.options()
    if any(k not in options for k in keys):
        return None, None
    return np.array([options.index(k) for k in keys], dtype=float), options


def _as_points(af: AnswerField, values: np.ndarray, options: list[str] | None) -> np.ndarray:
    if options is None:
        return values.astype(float)
    index = {o: i for i, o in enumerate(options)}
    return pd.Series(values).astype(str).map(index).to_numpy(dtype=float, na_value=np.nan)


__all__ = ["distribution_distance", "field_distances", "field_fidelity", "field_reference"]
