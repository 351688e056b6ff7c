"""Field-generic analysis: the distribution of every declared answer field of any scenario.

A declarative scenario stores one typed ``answer_<field>`` column per answer field, with the
field's type and declaration in the column's Arrow metadata (``answer_type``, ``declaration``;
see docs/contracts.md). Everything here reads only that: no game is assumed.

- numeric fields (``number``, ``integer``, ``likert``, ``linear_scale``): n, mean with a 95 %
  normal interval over answers, std and quantiles (10/25/50/75/90 %);
- ``choice`` and the scales: the share of valid answers at each option (in declaration order),
  with Wilson 95 % intervals in the long form;
- ``multi_choice``: the share of answers selecting each option; ``ranking``: the share ranking
  each option first;
- ``text`` and ``reasoning``: answered share and mean length.

Every table is one groupby over all rows (no Python loop per agent), keyed by condition and
round, optionally by a persona attribute (or any decision column such as ``model``).
Intervals pool agents and replicates as if independent; agents of a group influence each other,
so the intervals are a lower bound on the uncertainty of a repeated game.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.analysis.loading import PathLike, RunData, as_run

ANSWER_PREFIX = "answer_"
NUMERIC_TYPES = frozenset({"number", "integer", "likert", "linear_scale"})
SCALE_TYPES = frozenset({"likert", "linear_scale"})
Z95 = 1.959963984540054
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
KEYS: tuple[str, ...] = ("condition_id", "round")


@dataclass(frozen=True)
class AnswerField:
    """One declared answer field, read back from the decisions' Arrow metadata."""

    name: str
    type: str
    declaration: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def column(self) -> str:
        return ANSWER_PREFIX + self.name

    @property
    def kind(self) -> str:
        """numeric, choice, multi, ranking or text."""
        if self.type in NUMERIC_TYPES:
            return "numeric"
        return {"choice": "choice", "multi_choice": "multi", "ranking": "ranking"}.get(self.type, "text")

    @property
    def question(self) -> str:
        return str(self.declaration.get("question") or self.name)

    def points(self) -> list[int]:
        """The points of a likert or linear scale (empty for other types)."""
        d = self.declaration
        if self.type == "likert":
            start = int(d.get("start", 1))
            return list(range(start, start + len(d.get("labels", []))))
        if self.type == "linear_scale":
            return list(range(int(d.get("low", 0)), int(d.get("high", 10)) + 1))
        return []

    def point_labels(self) -> dict[int, str]:
        if self.type == "likert":
            return dict(zip(self.points(), self.declaration.get("labels", [])))
        if self.type == "linear_scale":
            return {int(k): str(v) for k, v in (self.declaration.get("end_labels") or {}).items()}
        return {}

    def options(self) -> list[str]:
        """Categories shares are counted over, in declaration order (scale points as text)."""
        if self.type in SCALE_TYPES:
            return [str(p) for p in self.points()]
        return [str(o) for o in self.declaration.get("options", [])]

    def option_names(self) -> list[str]:
        """Column names for the shares: ``2 disagree`` for labelled scale points."""
        labels = self.point_labels()
        if self.type in SCALE_TYPES:
            return [f"{p} {labels[p]}" if p in labels else str(p) for p in self.points()]
        return self.options()

    def bounds(self) -> tuple[float, float] | None:
        """(low, high) of a numeric field when both are declared."""
        if self.type in SCALE_TYPES:
            pts = self.points()
            return (float(pts[0]), float(pts[-1])) if pts else None
        low, high = self.declaration.get("low"), self.declaration.get("high")
        return None if low is None or high is None else (float(low), float(high))


def _field_of(f: pa.Field) -> AnswerField | None:
    meta = f.metadata or {}
    kind = meta.get(b"answer_type")
    if kind is None:
        return None
    try:
        declaration = json.loads(meta.get(b"declaration", b"{}").decode())
    except ValueError:
        declaration = {}
    return AnswerField(f.name[len(ANSWER_PREFIX):], kind.decode(), declaration)


def answer_fields(run: RunData | PathLike, *, include_text: bool = True) -> list[AnswerField]:
    """The run's declared answer fields in declaration order, free-text fields last (empty for
    built-in scenarios)."""
    run = as_run(run)
    out = [a for a in map(_field_of, run.decisions_dataset.schema) if a is not None]
    answers = [a for a in out if a.kind != "text"]
    return answers + [a for a in out if a.kind == "text"] if include_text else answers


def is_beauty_contest(run: RunData | PathLike) -> bool:
    """True when every condition has a game parameter p (the p-beauty contest, built in or declared)."""
    run = as_run(run)
    cond = run.conditions
    return "p" in cond and bool(cond["p"].notna().all()) and not cond.empty


def get_field(run: RunData | PathLike, name: str) -> AnswerField:
    fields = {f.name: f for f in answer_fields(run)}
    if name not in fields:
        raise KeyError(f"no answer field {name!r}; the run has {sorted(fields) or 'none'}")
    return fields[name]


def _read(run: RunData, columns: Sequence[str], attribute: str | None) -> pa.Table:
    """The decision columns (keys, field, valid) as Arrow, with ``attribute`` joined from the
    personas when it is not a decision column; condition ids and the attribute as strings."""
    names = run.decisions_dataset.schema.names
    cols = list(dict.fromkeys(c for c in columns if c in names))
    if attribute is not None and attribute in names:
        cols.append(attribute)
    table = run.decisions_dataset.to_table(columns=list(dict.fromkeys([*cols, "run_id", "agent_id"])))
    if attribute is not None and attribute not in names:
        personas = run.personas
        if attribute not in personas.columns:
            raise KeyError(f"attribute {attribute!r} is neither a decision column nor a persona column "
                           f"({[c for c in personas.columns if c not in ('run_id', 'agent_id')]})")
        left = pd.DataFrame({"run_id": table.column("run_id").to_pandas().astype(str),
                             "agent_id": table.column("agent_id").to_numpy()})
        people = personas[["run_id", "agent_id", attribute]].astype({"run_id": str})
        values = left.merge(people, on=["run_id", "agent_id"], how="left")[attribute]  # keeps row order
        table = table.append_column(attribute, pa.array(values.astype(str).where(values.notna()), pa.string()))
    return table


def _key_frame(table: pa.Table, keys: list[str]) -> pd.DataFrame:
    """The grouping keys as pandas columns: strings as categoricals (ten million repeated
    condition ids would be ten million Python strings), numbers as they are."""
    data = {}
    for k in keys:
        col = table.column(k)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            data[k] = col.dictionary_encode().to_pandas()
        else:
            data[k] = col.to_pandas()
    return pd.DataFrame(data)


def _plain(out: pd.DataFrame) -> pd.DataFrame:
    """Categorical key columns of a (small) result back to strings."""
    for k in out.columns:
        if isinstance(out[k].dtype, pd.CategoricalDtype):
            out[k] = out[k].astype(str)
    return out


def _valid_mask(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).is_valid().to_numpy(zero_copy_only=False)


def wilson(k: np.ndarray, n: np.ndarray, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of k successes in n (NaN where n is 0)."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


def numeric_summary(run: RunData | PathLike, name: str, *, by: Sequence[str] = KEYS,
                    attribute: str | None = None) -> pd.DataFrame:
    """Per ``by`` (and ``attribute``) group: n (rows), n_valid, mean, ci_low, ci_high (95 %
    normal interval of the mean), std, and the 10/25/50/75/90 % quantiles of the valid values."""
    run = as_run(run)
    af = get_field(run, name)
    keys = [*by, *([attribute] if attribute else [])]
    table = _read(run, [*by, af.column], attribute)
    frame = _key_frame(table, keys)
    frame["_v"] = pc.cast(table.column(af.column), pa.float64()).to_numpy(zero_copy_only=False)
    grouped = frame.groupby(keys, observed=True, sort=True)
    out = grouped["_v"].agg(n="size", n_valid="count", mean="mean", std="std")
    q = grouped["_v"].quantile(list(QUANTILES)).unstack()
    q.columns = [f"q{int(round(x * 100)):02d}" for x in q.columns]
    out = _plain(out.join(q).reset_index())
    half = Z95 * out["std"] / np.sqrt(out["n_valid"].where(out["n_valid"] > 0))
    out.insert(out.columns.get_loc("mean") + 1, "ci_low", out["mean"] - half)
    out.insert(out.columns.get_loc("ci_low") + 1, "ci_high", out["mean"] + half)
    out = out.rename(columns={"q50": "median"})
    out.insert(len(keys), "field", name)
    return out


def _option_counts(table: pa.Table, af: AnswerField) -> tuple[np.ndarray, np.ndarray]:
    """(row index, option index) of every counted selection: one per valid answer for choice and
    scales, one per selected option for multi_choice, the first-ranked option for ranking."""
    col = table.column(af.column).combine_chunks()
    options = af.options()
    if af.kind == "multi":
        rows = pc.list_parent_indices(col).to_numpy()
        values = pc.list_flatten(col)
    elif af.kind == "ranking":
        first = pc.list_element(pc.if_else(pc.greater(pc.list_value_length(col), 0), col, None), 0) \
            if len(col) else pa.array([], pa.string())
        ok = first.is_valid().to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(ok)
        values = first.filter(pa.array(ok))
    else:
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        ok = col.is_valid().to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(ok)
        values = col.filter(pa.array(ok))
    values = pc.cast(values, pa.string())
    idx = pc.index_in(values, value_set=pa.array(options, pa.string())).to_numpy(zero_copy_only=False)
    idx = np.asarray(idx, dtype=float)
    keep = ~np.isnan(idx)
    return rows[keep], idx[keep].astype(np.int64)


def option_shares(run: RunData | PathLike, name: str, *, by: Sequence[str] = KEYS,
                  attribute: str | None = None, long: bool = False) -> pd.DataFrame:
    """Shares of valid answers at each option of a choice, multi-choice, ranking (first place)
    or scale field, per ``by`` (and ``attribute``) group.

    Wide (default): keys, field, n, n_valid, then one column per option (``option_names``).
    ``long``: one row per group and option with count, share, ci_low, ci_high (Wilson 95 %).
    """
    run = as_run(run)
    af = get_field(run, name)
    if af.kind not in ("choice", "multi", "ranking") and af.type not in SCALE_TYPES:
        raise ValueError(f"field {name!r} ({af.type}) has no options to share out")
    keys = [*by, *([attribute] if attribute else [])]
    table = _read(run, [*by, af.column], attribute)
    frame = _key_frame(table, keys)
    frame["_ok"] = _valid_mask(table, af.column)
    groups = frame.groupby(keys, observed=True, sort=True)
    totals = _plain(groups["_ok"].agg(n="size", n_valid="sum").reset_index())
    gid = groups.ngroup().to_numpy()
    rows, idx = _option_counts(table, af)
    n_opt = len(af.options())
    counts = np.zeros((len(totals), n_opt), dtype=np.int64)
    np.add.at(counts, (gid[rows], idx), 1)
    names = af.option_names()
    denom = totals["n_valid"].to_numpy(float)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counts / denom
    if not long:
        out = totals.copy()
        out.insert(len(keys), "field", name)
        for j, option in enumerate(names):
            out[option] = shares[:, j]
        return out
    rep = np.repeat(np.arange(len(totals)), n_opt)
    out = totals.iloc[rep].reset_index(drop=True)
    out.insert(len(keys), "field", name)
    out["option"] = np.tile(np.array(names, dtype=object), len(totals))
    out["count"] = counts.ravel()
    out["share"] = shares.ravel()
    low, high = wilson(out["count"].to_numpy(), np.repeat(totals["n_valid"].to_numpy(), n_opt))
    out["ci_low"], out["ci_high"] = low, high
    return out


def text_summary(run: RunData | PathLike, name: str, *, by: Sequence[str] = KEYS,
                 attribute: str | None = None) -> pd.DataFrame:
    """Free-text fields: n, n_answered (valid and non-empty), mean and max length in characters."""
    run = as_run(run)
    af = get_field(run, name)
    keys = [*by, *([attribute] if attribute else [])]
    table = _read(run, [*by, af.column], attribute)
    frame = _key_frame(table, keys)
    length = pc.utf8_length(table.column(af.column)).to_numpy(zero_copy_only=False)
    frame["_len"] = pd.array(length, dtype="Float64").astype(float)
    frame.loc[frame["_len"] == 0, "_len"] = np.nan
    out = _plain(frame.groupby(keys, observed=True, sort=True)["_len"].agg(
        n="size", n_answered="count", mean_chars="mean", max_chars="max").reset_index())
    out.insert(len(keys), "field", name)
    return out


def field_summary(run: RunData | PathLike, name: str, *, by: Sequence[str] = KEYS,
                  attribute: str | None = None) -> pd.DataFrame:
    """The natural summary of one field: numeric (with option shares added for scales), option
    shares for choice/multi-choice/ranking, lengths for text."""
    run = as_run(run)
    af = get_field(run, name)
    if af.kind == "numeric":
        out = numeric_summary(run, name, by=by, attribute=attribute)
        if af.type in SCALE_TYPES:
            keys = [*by, *([attribute] if attribute else [])]
            shares = option_shares(run, name, by=by, attribute=attribute)
            out = out.merge(shares.drop(columns=["n", "n_valid", "field"]), on=keys, how="left")
        return out
    if af.kind == "text":
        return text_summary(run, name, by=by, attribute=attribute)
    return option_shares(run, name, by=by, attribute=attribute)


def breakdown_attributes(run: RunData | PathLike, wanted: Sequence[str] | None = None,
                         max_levels: int = 12) -> list[str]:
    """Persona attributes (or decision columns) worth breaking answers down by: ``wanted`` when
    given (unknown names raise KeyError), else the categorical persona columns with 2 to
    ``max_levels`` values, plus ``model`` when the run mixes models."""
    run = as_run(run)
    personas = run.personas.drop(columns=["run_id", "agent_id"], errors="ignore")
    names = run.decisions_dataset.schema.names
    if wanted is not None:
        missing = [a for a in wanted if a not in personas.columns and a not in names]
        if missing:
            raise KeyError(f"breakdown attribute(s) {missing} are not in the run")
        return list(wanted)
    out = []
    for col in personas.columns:
        kind = personas[col].dtype
        if kind.kind in "iufb" and not isinstance(kind, pd.CategoricalDtype):
            continue
        levels = personas[col].nunique()
        if 2 <= levels <= max_levels:
            out.append(col)
    if "model" in names and run.read_decisions(["model"])["model"].nunique() > 1:
        out.append("model")
    return out


__all__ = ["AnswerField", "answer_fields", "breakdown_attributes", "field_summary", "get_field",
           "is_beauty_contest", "numeric_summary", "option_shares", "text_summary", "wilson"]
