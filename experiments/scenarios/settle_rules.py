"""Settling a declarative scenario's round: per-group statistics, formulas, payoffs, winners.

Every rule works on whole columns: values are sorted by group once (stable, so each group keeps
the decision order) and statistics come from segment reductions, so a million agents in a
quarter of a million groups settle without a Python loop per group. With at most
``EXACT_GROUPS`` groups, mean, median and standard deviation are instead numpy's own functions
on each group's slice, which is what the built-in beauty contest computes: the declarative form
matches it to the last bit (segment sums differ from numpy's pairwise sums in the last bit).

Output: the rounds table's own columns (``ROUND_OUTCOME_SCHEMA``: the primary field's
statistics, ``target``, winners, ``p``/``offset`` when declared as parameters, ``lo``/``hi``
from the primary field's bounds) plus ``outcome_<name>`` per named rule. Row ``group`` -1 pools
everyone: statistics over all agents; group values (formulas, winners' target) only when
there is one group, winners the union of every group's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.experiments.answers import AnswerField, column_name
from crowdlab.experiments.scenarios.declarative_params import (
    CATEGORY_STATS, LEGACY_OUTCOME_COLUMNS, AggregateRule, ClosestRule, DeclarativeParams, FormulaRule, PayoffRule,
    SampleRule,
)
from crowdlab.experiments.scenarios.formula import Formula
from crowdlab.experiments.schema import ROUND_OUTCOME_SCHEMA

EXACT_GROUPS = 1000
#: A ``sample`` rule's column: the sampled members' ids and answers (as text), per group.
SAMPLE_TYPE = pa.list_(pa.struct([pa.field("agent_id", pa.int64()), pa.field("answer", pa.string())]))
_TIE_TOL = 1e-9
OUTCOME_PREFIX = "outcome_"


@dataclass
class _Groups:
    """Decision rows sorted by group (stable): ``order``, segment ``bounds``, group per row."""

    g: np.ndarray
    order: np.ndarray
    n_groups: int

    @classmethod
    def of(cls, groups: np.ndarray, n_groups: int) -> "_Groups":
        return cls(groups, np.argsort(groups, kind="stable"), n_groups)


def _segment_stats(x: np.ndarray, keep: np.ndarray, grp: _Groups, stats: set[str]) -> dict[str, np.ndarray]:
    """Per-group count, sum, mean and the asked ``stats`` of ``x[keep]`` (NaN for empty groups)."""
    G = grp.n_groups
    k = keep[grp.order]
    xs = x[grp.order][k]
    gs = grp.g[grp.order][k]
    counts = np.bincount(gs, minlength=G)[:G]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    has = counts > 0
    nan = np.full(G, np.nan)
    sums = np.zeros(G)
    if xs.size:
        sums[has] = np.add.reduceat(xs, starts[has])
    out: dict[str, np.ndarray] = {"count": counts.astype(np.float64), "sum": sums, "mean": nan.copy(),
                                  "median": nan.copy(), "std": nan.copy(), "min": nan.copy(), "max": nan.copy()}
    if G <= EXACT_GROUPS:  # numpy's own per-slice results (bit-identical to the built-in game)
        for gi in np.flatnonzero(has):
            seg = xs[starts[gi]:starts[gi] + counts[gi]]
            out["mean"][gi] = float(seg.mean())
            if "median" in stats:
                out["median"][gi] = float(np.median(seg))
            if "std" in stats:
                out["std"][gi] = float(seg.std(ddof=1)) if seg.size > 1 else 0.0
    else:
        out["mean"][has] = sums[has] / counts[has]
        if "median" in stats and xs.size:
            v = xs[np.lexsort((xs, gs))]
            lo, hi = starts + (counts - 1) // 2, starts + counts // 2
            out["median"][has] = (v[lo[has]] + v[hi[has]]) / 2
        if "std" in stats and xs.size:
            ss = np.zeros(G)
            ss[has] = np.add.reduceat((xs - np.repeat(out["mean"][has], counts[has])) ** 2, starts[has])
            out["std"][has] = np.where(counts[has] > 1, np.sqrt(ss[has] / np.maximum(counts[has] - 1, 1)), 0.0)
    if {"min", "max"} & stats and xs.size:
        out["min"][has] = np.minimum.reduceat(xs, starts[has])
        out["max"][has] = np.maximum.reduceat(xs, starts[has])
    return out


def _as_text(column: pa.Array) -> pa.Array:
    """Answers as display text: list answers joined with ', ', numbers without trailing zeros."""
    if isinstance(column.type, pa.ListType):
        return pc.binary_join(column, ", ")
    if isinstance(column.type, pa.DictionaryType):
        return pc.cast(column, pa.string())
    if pa.types.is_floating(column.type):
        text = pc.cast(column, pa.string())
        return pc.replace_substring_regex(text, r"\.0$", "")
    return pc.cast(column, pa.string())


def _sample(decisions: pa.Table, rule: SampleRule, valid: np.ndarray, g: np.ndarray, G: int) -> pa.Array:
    """Per group, the k + 1 valid answers with the smallest seeds (one more than shown, so a
    member that is itself sampled still sees k others); the pooled row gets an empty list."""
    name = column_name(rule.field)
    column = decisions[name].combine_chunks() if name in decisions.column_names else decisions["value"].combine_chunks()
    ok = valid & column.is_valid().to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(ok)
    seeds = decisions["seed"].to_numpy()[rows]
    order = rows[np.lexsort((seeds, g[rows]))]
    gs = g[order]
    starts = np.searchsorted(gs, np.arange(G))
    rank = np.arange(order.size) - starts[gs]
    take = order[rank <= rule.k]
    counts = np.bincount(g[take], minlength=G)[:G]
    offsets = np.concatenate([[0], np.cumsum(counts), [counts.sum()]]).astype(np.int32)
    items = pa.StructArray.from_arrays(
        [pa.array(decisions["agent_id"].to_numpy()[take], pa.int64()), _as_text(column.take(pa.array(take)))],
        names=["agent_id", "answer"])
    return pa.ListArray.from_arrays(pa.array(offsets), items, type=SAMPLE_TYPE)


def _pooled_stats(x: np.ndarray, keep: np.ndarray) -> dict[str, float]:
    v = x[keep]
    if not v.size:
        return {"count": 0.0, "sum": 0.0, "mean": np.nan, "median": np.nan, "std": np.nan, "min": np.nan,
                "max": np.nan}
    return {"count": float(v.size), "sum": float(v.sum()), "mean": float(v.mean()),
            "median": float(np.median(v)), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def _numeric(field: AnswerField, table: pa.Table, name: str, primary: str | None) -> np.ndarray:
    """A numeric field per decision row; the primary field is the ``value`` column itself."""
    if name == primary:
        return table["value"].to_numpy(zero_copy_only=False).astype(np.float64)
    return field.numeric(table[column_name(name)].combine_chunks())  # type: ignore[return-value]


def _category_counts(field: AnswerField, column: pa.Array, keep: np.ndarray, g: np.ndarray,
                     G: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(labels, counts (G + 1, labels) with the pooled row last, respondents per row)."""
    labels = field.option_labels() or []
    L = len(labels)
    index = {label: i for i, label in enumerate(labels)}
    if isinstance(column.type, pa.ListType):
        parents = np.asarray(column.value_parent_indices()) if len(column) else np.zeros(0, np.int64)
        flat = column.flatten().to_numpy(zero_copy_only=False)
        idx = np.array([index[s] for s in flat.tolist()], dtype=np.int64) if flat.size else np.zeros(0, np.int64)
        rows = parents
    elif isinstance(column.type, pa.DictionaryType):
        rows = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False))
        idx = column.indices.to_numpy(zero_copy_only=False)[rows].astype(np.int64)
    else:  # scale points
        points = [int(s) for s in labels]
        rows = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False))
        idx = column.to_numpy(zero_copy_only=False)[rows].astype(np.int64) - points[0]
    ok = keep[rows]
    rows, idx = rows[ok], idx[ok]
    counts = np.zeros((G + 1, L))
    np.add.at(counts, (g[rows], idx), 1)
    counts[G] = counts[:G].sum(axis=0)
    resp = np.bincount(g[keep & column.is_valid().to_numpy(zero_copy_only=False)], minlength=G)[:G].astype(float)
    return labels, counts, np.append(resp, resp.sum())


class Settler:
    """Applies a declarative scenario's rules to one round's decisions."""

    def __init__(self, params: DeclarativeParams) -> None:
        self.params = params
        self.fields = params.fields
        self.primary = params.primary_field()
        self.formulas = {i: Formula(r.formula) for i, r in enumerate(params.outcome)
                         if isinstance(r, (FormulaRule, PayoffRule))}

    def columns_needed(self) -> list[str]:
        """Decision columns settle() reads."""
        names = {r.field for r in self.params.outcome if isinstance(r, (AggregateRule, ClosestRule, SampleRule))}
        for i, f in self.formulas.items():
            names |= f.names() & set(self.fields)
        sampled = {r.field for r in self.params.outcome if isinstance(r, SampleRule)}
        names.discard(self.primary) if self.primary not in sampled else None
        seed = ["seed"] if sampled else []
        return ["agent_id", "group", "value", "valid", *seed] + [column_name(n) for n in self.fields if n in names]

    def extra_fields(self) -> list[pa.Field]:
        """The ``outcome_<name>`` columns of the rounds table, in rule order."""
        out = []
        for rule in self.params.outcome:
            if isinstance(rule, ClosestRule) or rule.name in LEGACY_OUTCOME_COLUMNS:
                continue
            if isinstance(rule, SampleRule):
                out.append(pa.field(OUTCOME_PREFIX + rule.name, SAMPLE_TYPE, metadata={"rule": rule.model_dump_json()}))
            elif isinstance(rule, AggregateRule) and rule.stat in CATEGORY_STATS:
                labels = self.fields[rule.field].option_labels() or []
                inner = pa.float64() if rule.stat == "share" else pa.int64()
                out.append(pa.field(OUTCOME_PREFIX + rule.name, pa.struct([pa.field(lb, inner) for lb in labels]),
                                    metadata={"rule": rule.model_dump_json()}))
            else:
                out.append(pa.field(OUTCOME_PREFIX + rule.name, pa.float64(),
                                    metadata={"rule": rule.model_dump_json()}))
        return out

    def bounds(self) -> tuple[float | None, float | None]:
        if self.primary is None:
            return None, None
        f = self.fields[self.primary]
        if hasattr(f, "points"):
            pts = f.points()  # type: ignore[attr-defined]
            return float(pts[0]), float(pts[-1])
        return getattr(f, "low", None), getattr(f, "high", None)

    def settle(self, decisions: pa.Table, n_groups: int) -> tuple[pa.Table, dict[str, np.ndarray]]:
        """(outcome rows: groups 0..G-1 then -1; per-agent payoffs by rule name)."""
        ids = decisions["agent_id"].to_numpy()
        g = decisions["group"].to_numpy().astype(np.int64)
        G = max(n_groups, int(g.max(initial=-1)) + 1)
        grp = _Groups.of(g, G)
        valid = decisions["valid"].to_numpy(zero_copy_only=False).astype(bool)
        value = decisions["value"].to_numpy(zero_copy_only=False).astype(np.float64)
        keep = valid & np.isfinite(value)
        n_rows = np.bincount(g, minlength=G)[:G].astype(np.float64)
        prim = _segment_stats(value, keep, grp, {"median", "std"})
        pooled = _pooled_stats(value, keep)
        cols: dict[str, np.ndarray | list[Any] | pa.Array] = {
            "n": np.append(n_rows, g.size), "n_valid": np.append(prim["count"], pooled["count"]),
        }
        cols["n_invalid"] = cols["n"] - cols["n_valid"]  # type: ignore[operator]
        for s in ("mean", "median", "std"):
            cols[s] = np.append(prim[s], pooled[s])
        env: dict[str, Any] = dict(self.params.numeric_parameters())
        env.update({"n": n_rows, "n_valid": prim["count"], "n_invalid": n_rows - prim["count"],
                    "mean": prim["mean"], "median": prim["median"], "std": prim["std"]})
        payoffs: dict[str, np.ndarray] = {}
        winners: dict[str, Any] | None = None
        for i, rule in enumerate(self.params.outcome):
            if isinstance(rule, AggregateRule):
                if rule.stat in CATEGORY_STATS:
                    column = decisions[column_name(rule.field)].combine_chunks()
                    labels, counts, resp = _category_counts(self.fields[rule.field], column, valid, g, G)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        data = counts / resp[:, None] if rule.stat == "share" else counts.astype(np.int64)
                    cols[OUTCOME_PREFIX + rule.name] = pa.StructArray.from_arrays(
                        [pa.array(data[:, j], from_pandas=True) for j in range(len(labels))], names=labels)
                    continue
                x = _numeric(self.fields[rule.field], decisions, rule.field, self.primary)
                fkeep = valid & np.isfinite(x)
                stats = _segment_stats(x, fkeep, grp, {rule.stat})
                env[rule.name] = stats[rule.stat]
                cols[rule.name] = np.append(stats[rule.stat], _pooled_stats(x, fkeep)[rule.stat])
            elif isinstance(rule, FormulaRule):
                out = np.broadcast_to(np.asarray(self.formulas[i](env), dtype=np.float64), (G,)).copy()
                env[rule.name] = out
                cols[rule.name] = np.append(out, out[0] if G == 1 else np.nan)
            elif isinstance(rule, PayoffRule):
                agent_env = {k: (v[g] if isinstance(v, np.ndarray) else v) for k, v in env.items()}
                for name in self.formulas[i].names() & set(self.fields):
                    agent_env[name] = _numeric(self.fields[name], decisions, name, self.primary)
                pay = np.broadcast_to(np.asarray(self.formulas[i](agent_env), dtype=np.float64), g.shape).copy()
                payoffs[rule.name] = pay
                pkeep = np.isfinite(pay)
                mean = _segment_stats(pay, pkeep, grp, set())["mean"]
                env[rule.name] = mean
                cols[rule.name] = np.append(mean, _pooled_stats(pay, pkeep)["mean"])
            elif isinstance(rule, SampleRule):
                cols[OUTCOME_PREFIX + rule.name] = _sample(decisions, rule, valid, g, G)
            else:
                x = _numeric(self.fields[rule.field], decisions, rule.field, self.primary)
                winners = self._winners(ids, g, G, x, valid & np.isfinite(x), np.asarray(env[rule.to], np.float64))
        return self._table(cols, winners, G), payoffs

    @staticmethod
    def _winners(ids: np.ndarray, g: np.ndarray, G: int, x: np.ndarray, ok: np.ndarray,
                 target: np.ndarray) -> dict[str, Any]:
        target = np.broadcast_to(target, (G,))
        dist = np.abs(x - target[g])
        ok = ok & np.isfinite(dist)
        best = np.full(G, np.inf)
        np.minimum.at(best, g[ok], dist[ok])
        win = ok & (dist <= best[g] + _TIE_TOL)
        idx = np.flatnonzero(win)
        n_win = np.bincount(g[idx], minlength=G)[:G]
        by_group = idx[np.argsort(g[idx], kind="stable")]  # decision order inside each group
        first_group, first_pos = np.unique(g[by_group], return_index=True)
        winning = np.full(G, np.nan)
        winning[first_group] = x[by_group[first_pos]]
        sorted_ids = idx[np.lexsort((ids[idx], g[idx]))]
        lists = [ids[sorted_ids[a:b]].tolist() for a, b in
                 zip(np.concatenate([[0], np.cumsum(n_win)[:-1]]), np.cumsum(n_win))] if G <= 100_000 else None
        if lists is None:  # many groups: offsets straight into a list array
            offsets = np.concatenate([[0], np.cumsum(n_win)]).astype(np.int32)
            list_arr = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids[sorted_ids], pa.int64()))
            lists = list_arr.to_pylist()
        pooled_ids = np.sort(ids[idx]).tolist()
        return {"target": target, "winning_value": winning, "n_winners": n_win, "winner_ids": lists,
                "pooled_ids": pooled_ids}

    def _table(self, cols: dict[str, Any], winners: dict[str, Any] | None, G: int) -> pa.Table:
        lo, hi = self.bounds()
        params = self.params.numeric_parameters()
        n = G + 1
        data: dict[str, Any] = {"group": pa.array(np.append(np.arange(G), -1).astype(np.int32))}
        for name in ("n", "n_valid", "n_invalid"):
            data[name] = pa.array(np.asarray(cols[name]).astype(np.int64))
        for name in ("mean", "median", "std"):
            data[name] = pa.array(cols[name], pa.float64(), from_pandas=True)
        target = cols.get("target")
        if winners is not None:
            w = winners
            one = G == 1
            data["winning_value"] = pa.array(np.append(w["winning_value"], w["winning_value"][0] if one else np.nan),
                                             pa.float64(), from_pandas=True)
            data["n_winners"] = pa.array(np.append(w["n_winners"], w["n_winners"].sum()).astype(np.int64))
            data["winner_ids"] = pa.array(w["winner_ids"] + [w["pooled_ids"]], pa.list_(pa.int64()))
        else:
            data["winning_value"] = pa.nulls(n, pa.float64())
            data["n_winners"] = pa.array(np.zeros(n, np.int64))
            data["winner_ids"] = pa.array([[]] * n, pa.list_(pa.int64()))
        data["target"] = pa.array(target, pa.float64(), from_pandas=True) if target is not None else pa.nulls(n, pa.float64())
        for name, val in (("p", params.get("p")), ("offset", params.get("offset")), ("lo", lo), ("hi", hi)):
            data[name] = pa.array([None if val is None else float(val)] * n, pa.float64())
        arrays = [data[f.name] for f in ROUND_OUTCOME_SCHEMA]
        fields = list(ROUND_OUTCOME_SCHEMA)
        for f in self.extra_fields():
            name = f.name[len(OUTCOME_PREFIX):]
            raw = cols[f.name] if f.name in cols else cols[name]
            arrays.append(raw if isinstance(raw, pa.Array) else pa.array(raw, pa.float64(), from_pandas=True))
            fields.append(f)
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
