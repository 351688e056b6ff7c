"""Realised distributions next to their targets, with a fit figure per attribute.

Categorical attributes are compared share by share with total variation distance (TVD, half the
sum of absolute differences; 0 is a perfect fit, 1 disjoint). Conditional categorical attributes
are compared within each parent value and the TVDs averaged with the realised parent shares as
weights. Numeric attributes compare mean, std and quantiles, and a binned TVD over the target's
deciles. Targets are computed from the same inverse-CDF transforms the sampler uses, evaluated on
a fine grid of probabilities, so truncation and integer rounding are accounted for exactly.
Identity and template columns have no target; their distinct count and top values are listed.
Attributes that the spec's constraints keep from their targets (no feasible population has the
target shares; see ``raking.py``) carry a ``flag`` and, per cell, the target, the best attainable
share and the realised share.
Library code only: the CLI and the report card print the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.personas.sampling.distributions import numeric_values
from crowdlab.personas.sampling.spec import (
    Categorical,
    ConditionalAttribute,
    IdentityAttribute,
    PopulationSpec,
    TemplateAttribute,
    categories_of,
)

GRID = 20_001
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class FitRow:
    """One compared figure: a category share or a statistic (target None when there is none)."""

    label: str
    target: float | None
    realised: float
    share: bool = True  # a proportion (printed as %) rather than a statistic of values


@dataclass(frozen=True)
class CellShare:
    """One cell of a constraint departure: what the spec asks, what constraints allow, what came out."""

    label: str
    target: float
    attainable: float
    realised: float


@dataclass(frozen=True)
class AttributeFit:
    name: str
    kind: str
    tvd: float | None
    rows: list[FitRow] = field(default_factory=list)
    note: str = ""
    flag: str = ""  # non-empty when the constraints keep this attribute from its target
    departure: list[CellShare] = field(default_factory=list)


@dataclass(frozen=True)
class PopulationFit:
    spec_name: str
    n: int
    attributes: list[AttributeFit]

    @property
    def flagged(self) -> list[AttributeFit]:
        return [a for a in self.attributes if a.flag]

    @property
    def max_tvd(self) -> float:
        values = [a.tvd for a in self.attributes if a.tvd is not None]
        return max(values) if values else 0.0

    def to_table(self) -> pa.Table:
        """Long form (attribute, kind, label, target, realised, tvd) for reports."""
        rows = [(a.name, a.kind, r.label, r.target, r.realised, a.tvd) for a in self.attributes for r in a.rows]
        names = ["attribute", "kind", "label", "target", "realised", "tvd"]
        return pa.table(list(map(list, zip(*rows))) if rows else [[]] * 6, names=names)


def tvd(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(np.asarray(p, float) - np.asarray(q, float)).sum())


def describe(table: pa.Table, spec: PopulationSpec | None = None) -> PopulationFit:
    """Compare every attribute column of a persona table with its spec (default: the file's)."""
    if spec is None:
        from crowdlab.personas.sampling.io import spec_info

        spec = spec_info(table.schema).spec
        if spec is None:
            raise ValueError("the table carries no spec in its metadata; pass spec=")
    fits = []
    for attr in spec.attributes:
        if attr.name not in table.column_names:
            fits.append(AttributeFit(attr.name, attr.kind, None, note="column missing"))
            continue
        column = table.column(attr.name)
        if isinstance(attr, Categorical):
            fits.append(_categorical_fit(attr.name, attr.kind, attr.categories, attr.probabilities, column))
        elif isinstance(attr, ConditionalAttribute):
            fits.append(_conditional_fit(attr, table, categories_of(spec.attribute(attr.on)) or []))
        elif isinstance(attr, (IdentityAttribute, TemplateAttribute)):
            fits.append(_text_fit(attr.name, attr.kind, column))
        else:
            fits.append(_numeric_fit(attr.name, attr.kind, attr, column.to_numpy()))
    return PopulationFit(spec.name, table.num_rows, _flag_departures(spec, table, fits))


def _flag_departures(spec: PopulationSpec, table: pa.Table, fits: list[AttributeFit]) -> list[AttributeFit]:
    """Mark the attributes whose targets the constraints make unreachable (or could not correct)."""
    from crowdlab.personas.sampling.raking import constraint_plan, realised_shares

    plan = constraint_plan(spec)
    by_name = {f.name: i for i, f in enumerate(fits)}
    for dep in plan.departures:
        i = by_name[dep.attribute]
        if dep.attribute not in table.column_names:
            continue
        realised = realised_shares(spec, dep, table.column(dep.attribute))
        cells = [CellShare(*values) for values in zip(dep.cells, dep.target, dep.attainable, realised)]
        flag = f"constraints keep it from its target: attainable TVD {dep.tvd:.3f} ({dep.summary(3)})"
        fits[i] = replace(fits[i], flag=flag, departure=cells)
    if plan.note:
        for name in plan.grid:
            i = by_name[name]
            fits[i] = replace(fits[i], flag=f"constrained by rejection only; {plan.note}")
    return fits


def _shares(column: Any, categories: list[str]) -> tuple[np.ndarray, float]:
    """Realised shares in category order, plus the share of values outside the categories."""
    counts = pc.value_counts(column).to_pylist() if len(column) else []
    by_value = {c["values"]: c["counts"] for c in counts}
    total = max(len(column), 1)
    shares = np.array([by_value.get(c, 0) for c in categories], dtype=float) / total
    return shares, 1.0 - shares.sum() if len(column) else 0.0


def _categorical_fit(name: str, kind: str, categories: list[str], target: np.ndarray, column: Any, prefix: str = "") -> AttributeFit:
    realised, other = _shares(column, categories)
    rows = [FitRow(prefix + c, float(t), float(r)) for c, t, r in zip(categories, target, realised)]
    if other > 1e-12:
        rows.append(FitRow(prefix + "(other)", 0.0, float(other)))
    return AttributeFit(name, kind, tvd(np.append(target, 0.0), np.append(realised, other)), rows)


def _conditional_fit(attr: ConditionalAttribute, table: pa.Table, parent_categories: list[str]) -> AttributeFit:
    parent = table.column(attr.on)
    child = table.column(attr.name)
    rows: list[FitRow] = []
    weighted, weight_total = 0.0, 0
    for value in parent_categories:
        dist = attr.cases.get(value, attr.default)
        if dist is None:
            continue
        mask = pc.equal(parent, value)
        subset = pc.filter(child, mask)
        if attr.is_categorical:
            cats = attr.categories
            target = np.array([dict(zip(dist.categories, dist.probabilities)).get(c, 0.0) for c in cats])
            fit = _categorical_fit(attr.name, attr.kind, cats, target, subset, prefix=f"{attr.on}={value}: ")
        else:
            fit = _numeric_fit(attr.name, attr.kind, dist, subset.to_numpy(), prefix=f"{attr.on}={value}: ")
        rows.extend(fit.rows)
        weighted += (fit.tvd or 0.0) * len(subset)
        weight_total += len(subset)
    return AttributeFit(attr.name, attr.kind, weighted / weight_total if weight_total else None, rows, note=f"given {attr.on}")


def numeric_target(dist: Any) -> tuple[np.ndarray, dict[str, float]]:
    """A fine grid of the target's values (equal probability each) and its summary stats."""
    grid = numeric_values(dist, (np.arange(GRID) + 0.5) / GRID).astype(float)
    stats = {"mean": float(grid.mean()), "std": float(grid.std())}
    for q in QUANTILES:
        stats[f"q{int(q * 100):02d}"] = float(numeric_values(dist, np.array([q]))[0])
    return grid, stats


def _numeric_fit(name: str, kind: str, dist: Any, values: np.ndarray, prefix: str = "") -> AttributeFit:
    grid, target = numeric_target(dist)
    values = values.astype(float)
    realised = {"mean": float(values.mean()) if len(values) else float("nan"), "std": float(values.std()) if len(values) else float("nan")}
    for q in QUANTILES:
        realised[f"q{int(q * 100):02d}"] = float(np.quantile(values, q)) if len(values) else float("nan")
    edges = np.unique(np.quantile(grid, np.linspace(0.1, 0.9, 9)))
    target_bins = np.bincount(np.searchsorted(edges, grid, side="right"), minlength=len(edges) + 1) / len(grid)
    real_bins = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1) / max(len(values), 1)
    rows = [FitRow(prefix + k, target[k], realised[k], share=False) for k in target]
    return AttributeFit(name, kind, tvd(target_bins, real_bins), rows, note="binned TVD over target deciles")


def _text_fit(name: str, kind: str, column: Any) -> AttributeFit:
    counts = pc.value_counts(column)
    top = sorted(counts.to_pylist(), key=lambda c: -c["counts"])[:5]
    total = max(len(column), 1)
    rows = [FitRow(str(c["values"]), None, c["counts"] / total) for c in top]
    return AttributeFit(name, kind, None, rows, note=f"{len(counts)} distinct values; no target")
