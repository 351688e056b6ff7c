"""Keeping the spec's marginals under constraints: raking on the cell grid, then exact draws.

Plain rejection (redraw the rows that break a constraint) conditions the spec's joint on the
feasible set, and that moves the marginals: if retirees must be 55 or older, the retirees drawn
younger are thrown away and the retired share falls. This module computes, once per spec, the
distribution the sampler should draw instead:

    q(x)  proportional to  P(x) * prod_a W_a(cell_a(x)) * feasible(x)

P is the spec's own distribution (independent attributes, or conditional on a parent), and the
weights W are found by iterative proportional fitting (raking) so that every attribute's marginal
under q equals its marginal under P; conditional attributes keep their (parent, value) joint.
Among all distributions on the feasible set with those marginals, this q is the one closest to P
(minimum Kullback-Leibler divergence), so dependence is added only where constraints force it.

It is exact, not Monte Carlo. Feasibility depends on a numeric attribute only through the side of
each constraint threshold it lies on, so every attribute named in a constraint is reduced to a few
*cells* (its categories, or the intervals between and at the thresholds), and q is computed on the
full grid of cells. The sampler then draws each attribute's cell from q given the cells drawn
before it (and any quota attributes, whose exact counts are fixed), and a numeric value within its
cell from the spec's own distribution restricted to that cell, from the same single uniform per
row and attribute. So every row satisfies every constraint in one pass, the numeric shapes inside
each interval are the spec's, and the plan depends on the spec alone: sampling stays vectorised
and shard-invariant. Resampling passes remain as a safety net and for grids too large to plan.

When the targets cannot all be met on the feasible set (say 40 % retirees, but only 30 % of ages
allowed for them), raking does not converge; the plan then keeps whichever of the raked or the
plain conditioned distribution departs less and records, per attribute, the attainable shares next
to the targets. ``sample`` logs them as a warning; ``describe`` and the report card flag them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.personas.sampling.distributions import numeric_values

if TYPE_CHECKING:
    from crowdlab.personas.sampling.spec import PopulationSpec

log = logging.getLogger(__name__)

MAX_CELLS = 50_000  # grid size beyond which no exact plan is made (rejection alone then)
MAX_SWEEPS = 3000
PATIENCE = 200  # sweeps without a better fit before raking gives up (unreachable targets)
CONVERGED_TVD = 1e-12
DEPARTURE_TVD = 1e-3  # an attainable marginal further than this (TVD) from its target is flagged
_BISECT_STEPS = 64
_ROW_CHUNK = 1 << 16


@dataclass(frozen=True)
class Departure:
    """An attribute whose marginal the constraints keep from its target (shares per cell)."""

    attribute: str
    cells: list[str]
    target: list[float]
    attainable: list[float]
    tvd: float  # over the attribute's cells (given each parent value, for a conditional attribute)

    def largest(self, limit: int = 4) -> list[int]:
        """Indices of the cells furthest from their targets."""
        gap = np.abs(np.array(self.attainable) - np.array(self.target))
        return [int(i) for i in np.argsort(-gap, kind="stable")[:limit] if gap[i] > 0]

    def summary(self, limit: int = 4) -> str:
        return ", ".join(f"{self.cells[i]} {100 * self.target[i]:.1f}% -> {100 * self.attainable[i]:.1f}%" for i in self.largest(limit))


@dataclass(frozen=True)
class CellDraw:
    """How the sampler draws one attribute: its cell given earlier cells, then a value in the cell."""

    name: str
    context: tuple[str, ...]  # grid attributes whose cells index the rows of ``cum``
    radix: tuple[int, ...]  # their cell counts
    cum: np.ndarray  # (contexts, cells) cumulative conditional probabilities, last column 1
    numeric: bool
    edges: np.ndarray | None  # numeric: (parent values or 1, cells + 1) u-edges of each cell

    def cells(self, u: np.ndarray, known: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(cell per row, position of u within its cell's probability, in [0, 1))."""
        ctx = np.zeros(len(u), dtype=np.int64)
        for name, size in zip(self.context, self.radix):
            ctx = ctx * size + known[name]
        cell = np.empty(len(u), dtype=np.int64)
        lo, hi = np.empty(len(u)), np.empty(len(u))
        for a in range(0, len(u), _ROW_CHUNK):  # bounded memory: (chunk, cells) at a time
            part = slice(a, a + _ROW_CHUNK)
            cum = self.cum[ctx[part]]
            k = (u[part, None] >= cum[:, :-1]).sum(axis=1)
            cell[part] = k
            hi[part] = np.take_along_axis(cum, k[:, None], axis=1)[:, 0]
            lo[part] = np.where(k > 0, np.take_along_axis(cum, np.maximum(k - 1, 0)[:, None], axis=1)[:, 0], 0.0)
        frac = np.where(hi > lo, (u - lo) / np.where(hi > lo, hi - lo, 1.0), 0.5)
        return cell, np.clip(frac, 0.0, 1.0)

    def uniforms(self, cell: np.ndarray, frac: np.ndarray, parent_codes: np.ndarray | None) -> np.ndarray:
        """The spec distribution's own uniform for a value inside each row's cell."""
        assert self.edges is not None
        row = np.zeros(len(cell), dtype=np.int64) if parent_codes is None else parent_codes
        lo, hi = self.edges[row, cell], self.edges[row, cell + 1]
        out = lo + frac * (hi - lo)
        return np.minimum(out, np.where(hi > lo, np.nextafter(hi, 0.0), lo))


@dataclass(frozen=True)
class ConstraintPlan:
    draws: dict[str, CellDraw]
    departures: list[Departure]
    grid: tuple[str, ...] = ()  # attributes on the grid, quota ones included
    quota: tuple[str, ...] = ()
    note: str = ""  # why there is no exact plan (too many cells, nothing feasible), else ""


@dataclass
class _Axis:
    """One attribute on the grid: its cells and the spec's probabilities over them."""

    name: str
    labels: list[str]
    values: pa.Array  # one representative value per cell, to evaluate conditions on
    parent: int | None  # grid axis of the parent, for a conditional attribute
    proposal: np.ndarray  # P(cell), or P(cell | parent cell) with shape (parent cells, cells)
    edges: np.ndarray | None  # numeric: u-edges per parent value (or one row), shape (., cells + 1)
    quota: bool = False


def constraint_plan(spec: "PopulationSpec") -> ConstraintPlan:
    """The exact constrained distribution of the spec's constrained attributes (cached per spec)."""
    if not spec.constraints:
        return ConstraintPlan({}, [])
    return _plan_for(spec.spec_hash, spec.to_json())


@lru_cache(maxsize=16)
def _plan_for(spec_hash: str, spec_json: str) -> ConstraintPlan:
    from crowdlab.personas.sampling.loading import parse_spec

    return _build_plan(parse_spec(spec_json))


def _build_plan(spec: "PopulationSpec") -> ConstraintPlan:
    axes = _grid_axes(spec)
    names = tuple(a.name for a in axes)
    quota = tuple(a.name for a in axes if a.quota)
    size = math.prod(len(a.labels) for a in axes)
    if size > MAX_CELLS:
        note = f"{size:,} cells on the constraint grid (limit {MAX_CELLS:,}): marginals are not corrected"
        return ConstraintPlan({}, [], names, quota, note)
    prop = _joint(axes)
    q0 = prop * _feasible(spec, axes)
    if _empty_stratum(q0, axes):
        return ConstraintPlan({}, [], names, quota, "no combination of values satisfies every constraint")
    if np.array_equal(q0, prop):  # the constraints never bind: sample exactly as without them
        return ConstraintPlan({}, [], names, quota)
    targets = [_margin(prop, axes, i) for i in range(len(axes))]
    weights, dev = _rake(q0, axes, targets)
    q = _apply(q0, axes, weights)
    q /= q.sum()
    departures = []
    for i, axis in enumerate(axes):
        factor_tvd = _departure_tvd(_margin(q, axes, i), targets[i], axis)
        if factor_tvd > DEPARTURE_TVD:
            own_t, own_a = _own(prop, axes, i), _own(q, axes, i)
            keep = (own_t > 0) | (own_a > 0)
            departures.append(Departure(
                axis.name, [label for label, k in zip(axis.labels, keep) if k],
                own_t[keep].tolist(), own_a[keep].tolist(), factor_tvd,
            ))
    log.debug("constraint plan for %s: %d cells, largest marginal TVD %.3g", spec.name, size, dev)
    return ConstraintPlan(_draws(q, axes), departures, names, quota)


def _grid_axes(spec: "PopulationSpec") -> list[_Axis]:
    """Attributes named in constraints, plus the parents their conditional values depend on."""
    from crowdlab.personas.sampling.spec import ConditionalAttribute

    needed: set[str] = set()
    for constraint in spec.constraints:
        needed.update(constraint.if_)
        needed.update(constraint.then)
    frontier = list(needed)
    while frontier:
        attr = spec.attribute(frontier.pop())
        if isinstance(attr, ConditionalAttribute) and attr.on not in needed:
            needed.add(attr.on)
            frontier.append(attr.on)
    cuts = constraint_cuts(spec)
    axes: list[_Axis] = []
    index: dict[str, int] = {}
    for attr in spec.attributes:
        if attr.name in needed:
            index[attr.name] = len(axes)
            axes.append(_axis(spec, attr, cuts.get(attr.name, []), index))
    return axes


def constraint_cuts(spec: "PopulationSpec") -> dict[str, list[float]]:
    """The thresholds each numeric attribute is compared with in any constraint, sorted."""
    out: dict[str, set[float]] = {}
    for constraint in spec.constraints:
        for name, cond in list(constraint.if_.items()) + list(constraint.then.items()):
            for op in ("lt", "le", "gt", "ge"):
                value = getattr(cond, op)
                if value is not None:
                    out.setdefault(name, set()).add(float(value))
    return {k: sorted(v) for k, v in out.items()}


def _axis(spec: "PopulationSpec", attr: Any, cuts: list[float], index: dict[str, int]) -> _Axis:
    from crowdlab.personas.sampling.spec import Categorical, ConditionalAttribute, categories_of

    if isinstance(attr, ConditionalAttribute):
        parent_cats = categories_of(spec.attribute(attr.on)) or []
        dists = [attr.cases.get(v, attr.default) for v in parent_cats]
        parent: int | None = index[attr.on]
    else:
        dists, parent = [attr], None
    categories = categories_of(attr)
    rows: list[np.ndarray] = []
    edges: np.ndarray | None = None
    if categories is not None:
        labels, values = categories, pa.array(categories, pa.string())
        for dist in dists:
            mass = np.zeros(len(categories))
            mass[[categories.index(c) for c in dist.categories]] = dist.probabilities
            rows.append(mass)
    else:
        labels, reps = numeric_cells(attr.name, cuts)
        values = pa.array(reps, pa.float64())
        edges = np.array([_numeric_edges(dist, cuts) for dist in dists])
        rows = list(np.diff(edges, axis=1))
    proposal = np.array(rows) if parent is not None else rows[0]
    quota = isinstance(attr, Categorical) and attr.mode == "quota"
    return _Axis(attr.name, labels, values, parent, proposal, edges, quota)


def numeric_cells(name: str, cuts: list[float]) -> tuple[list[str], list[float]]:
    """Cells below, at and between the cut values, with one representative value each."""
    if not cuts:
        return [f"{name} (any)"], [0.0]
    labels, reps = [f"{name} < {cuts[0]:g}"], [cuts[0] - 1.0]
    for k, v in enumerate(cuts):
        labels.append(f"{name} = {v:g}")
        reps.append(v)
        if k + 1 < len(cuts):
            labels.append(f"{v:g} < {name} < {cuts[k + 1]:g}")
            reps.append((v + cuts[k + 1]) / 2)
    labels.append(f"{name} > {cuts[-1]:g}")
    reps.append(cuts[-1] + 1.0)
    return labels, reps


def numeric_cell_codes(values: np.ndarray, cuts: list[float]) -> np.ndarray:
    """Index into ``numeric_cells`` of each value: 2k below cut k, 2k + 1 equal to it."""
    x = np.asarray(values, dtype=float)
    below = np.searchsorted(np.array(cuts, dtype=float), x, side="left")
    return np.where(np.isin(x, cuts), 2 * below + 1, 2 * below)


def _numeric_edges(dist: Any, cuts: list[float]) -> np.ndarray:
    """u-edges of the cells, P(x < v) and P(x <= v) per cut v, bisected on the sampler's own map."""
    if not cuts:
        return np.array([0.0, 1.0])
    v = np.repeat(np.array(cuts, dtype=float), 2)
    strict = np.tile([True, False], len(cuts))
    lo, hi = np.zeros(len(v)), np.ones(len(v))
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        x = numeric_values(dist, mid).astype(float)
        inside = np.where(strict, x < v, x <= v)
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    return np.concatenate([[0.0], np.maximum.accumulate(hi), [1.0]])


def _shape(axes: list[_Axis], dims: tuple[int, ...]) -> list[int]:
    shape = [1] * len(axes)
    for d in dims:
        shape[d] = len(axes[d].labels)
    return shape


def _dims(axes: list[_Axis], i: int) -> tuple[int, ...]:
    parent = axes[i].parent
    return (i,) if parent is None else (parent, i)


def _broadcast(axes: list[_Axis], i: int, factor: np.ndarray) -> np.ndarray:
    return factor.reshape(_shape(axes, _dims(axes, i)))  # a parent always precedes its child


def _joint(axes: list[_Axis]) -> np.ndarray:
    out = np.ones([len(a.labels) for a in axes])
    for i, axis in enumerate(axes):
        out = out * _broadcast(axes, i, axis.proposal)
    return out


def _feasible(spec: "PopulationSpec", axes: list[_Axis]) -> np.ndarray:
    """Boolean grid: does each combination of cells satisfy every constraint (same tests as rows)?"""
    where = {a.name: i for i, a in enumerate(axes)}
    ok = np.ones([len(a.labels) for a in axes], dtype=bool)

    def holds(name: str, cond: Any) -> np.ndarray:
        i = where[name]
        mask = np.asarray(pc.fill_null(cond.holds(axes[i].values), False).to_numpy(zero_copy_only=False), dtype=bool)
        return mask.reshape(_shape(axes, (i,)))

    for constraint in spec.constraints:
        applies = np.ones_like(ok)
        for name, cond in constraint.if_.items():
            applies = applies & holds(name, cond)
        satisfied = np.ones_like(ok)
        for name, cond in constraint.then.items():
            satisfied = satisfied & holds(name, cond)
        ok &= ~(applies & ~satisfied)
    return ok


def _empty_stratum(q0: np.ndarray, axes: list[_Axis]) -> bool:
    """Nothing feasible at all, or a quota value (fixed count) that no feasible row can carry."""
    if q0.sum() <= 0:
        return True
    for i, axis in enumerate(axes):
        if axis.quota:
            m = q0.sum(axis=tuple(d for d in range(q0.ndim) if d != i))
            if ((m <= 0) & (axis.proposal > 0)).any():
                return True
    return False


def _margin(q: np.ndarray, axes: list[_Axis], i: int) -> np.ndarray:
    """q summed over every axis but attribute i's factor axes, normalised."""
    dims = _dims(axes, i)
    m = q.sum(axis=tuple(d for d in range(q.ndim) if d not in dims))
    total = q.sum()
    return m / total if total > 0 else m


def _own(q: np.ndarray, axes: list[_Axis], i: int) -> np.ndarray:
    m = _margin(q, axes, i)
    return m.sum(axis=0) if axes[i].parent is not None else m


def _departure_tvd(m: np.ndarray, target: np.ndarray, axis: _Axis) -> float:
    """TVD of an attribute's marginal; for a conditional one, of its distribution given each parent
    value (weighted by the parent's attainable shares), so a parent's shift is flagged on the parent."""
    if axis.parent is None:
        return _tvd(m, target)
    weight = m.sum(axis=1)
    given = m / np.where(weight > 0, weight, 1.0)[:, None]
    return float((weight * 0.5 * np.abs(given - axis.proposal).sum(axis=1)).sum())


def _tvd(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(p - q).sum())


def _apply(q0: np.ndarray, axes: list[_Axis], weights: list[np.ndarray]) -> np.ndarray:
    q = q0.copy()
    for i, w in enumerate(weights):
        q = q * _broadcast(axes, i, w)
    return q


def _rake(q0: np.ndarray, axes: list[_Axis], targets: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Iterative proportional fitting of the factor margins of q0 * prod(W) to the targets.

    Returns the weights of the sweep whose largest marginal TVD was smallest (no weights at all,
    plain conditioning, counts as sweep 0): when the targets are unreachable, raking cycles
    instead of converging, and the best compromise seen is kept.
    """
    weights = [np.ones_like(t) for t in targets]
    q = q0 / q0.sum()
    best = ([w.copy() for w in weights], max(_tvd(_margin(q, axes, i), t) for i, t in enumerate(targets)))
    best_sweep = -1
    for sweep in range(MAX_SWEEPS):
        if best[1] < CONVERGED_TVD:
            log.debug("raking converged after %d sweeps", sweep)
            break
        for i, target in enumerate(targets):
            m = _margin(q, axes, i)
            ratio = np.where(m > 0, target / np.where(m > 0, m, 1.0), 1.0)
            weights[i] = weights[i] * ratio
            # the scale is free; cells without feasible mass never count, so leave them alone
            weights[i] = np.where(m > 0, weights[i] / weights[i][m > 0].max(), 1.0)
            q = q * _broadcast(axes, i, ratio)
            q /= q.sum()
        worst = max(_tvd(_margin(q, axes, i), t) for i, t in enumerate(targets))
        if worst < best[1] * (1 - 1e-9):
            best, best_sweep = ([w.copy() for w in weights], worst), sweep
        elif sweep - best_sweep >= PATIENCE:
            break
    return best


def _draws(q: np.ndarray, axes: list[_Axis]) -> dict[str, CellDraw]:
    """Per non-quota attribute: q of its cell given the quota cells and the cells drawn before it."""
    quota = [i for i, a in enumerate(axes) if a.quota]
    draws: dict[str, CellDraw] = {}
    for i, axis in enumerate(axes):
        if axis.quota:
            continue
        context = sorted(set(quota) | {d for d in range(i) if not axes[d].quota})
        keep = context + [i]
        table = q.sum(axis=tuple(d for d in range(q.ndim) if d not in keep))  # kept axes stay in order
        table = np.moveaxis(table, sorted(keep).index(i), -1).reshape(-1, len(axis.labels))
        totals = table.sum(axis=1, keepdims=True)
        uniform = np.full_like(table, 1.0 / table.shape[1])  # an unreachable context: any row will do
        cond = np.where(totals > 0, table / np.where(totals > 0, totals, 1.0), uniform)
        cum = np.cumsum(cond, axis=1)
        cum[:, -1] = 1.0
        draws[axis.name] = CellDraw(
            axis.name, tuple(axes[d].name for d in context), tuple(len(axes[d].labels) for d in context),
            cum, axis.edges is not None, axis.edges,
        )
    return draws


def realised_shares(spec: "PopulationSpec", departure: Departure, column: Any) -> list[float]:
    """The shares of a departure's cells in a sampled column."""
    from crowdlab.personas.sampling.spec import categories_of

    attr = spec.attribute(departure.attribute)
    if categories_of(attr) is not None:
        codes = pc.fill_null(pc.index_in(column, value_set=pa.array(departure.cells, pa.string())), -1)
        idx = np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64)
    else:
        cuts = constraint_cuts(spec).get(attr.name, [])
        labels, _ = numeric_cells(attr.name, cuts)
        lookup = np.array([departure.cells.index(c) if c in departure.cells else -1 for c in labels], dtype=np.int64)
        values = column.to_numpy(zero_copy_only=False) if hasattr(column, "to_numpy") else np.asarray(column)
        idx = lookup[numeric_cell_codes(values, cuts)]
    counts = np.bincount(idx[idx >= 0], minlength=len(departure.cells))
    return (counts / max(len(idx), 1)).tolist()
