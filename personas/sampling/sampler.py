"""Sampling a PopulationSpec into a persona table, vectorised and shard-invariant.

``sample_rows(spec, start, stop, seed, n_total)`` produces rows [start, stop) of the population
of size n_total; ``sample`` stitches shards together. Because every draw comes from a stream
keyed by (seed, attribute, fixed block) and exact quotas use one seeded permutation of n_total,
the rows do not depend on how the range was split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from crowdlab.personas.sampling import identity as ident
from crowdlab.personas.sampling.constraints import infeasible_error, violation_mask
from crowdlab.personas.sampling.distributions import categorical_codes, numeric_values, quota_counts
from crowdlab.personas.sampling.errors import SpecError
from crowdlab.personas.sampling.raking import ConstraintPlan, constraint_plan, realised_shares
from crowdlab.personas.sampling.schema import persona_schema
from crowdlab.personas.sampling.spec import (
    Categorical,
    ConditionalAttribute,
    IdentityAttribute,
    PopulationSpec,
    TemplateAttribute,
    categories_of,
)
from crowdlab.personas.sampling.streams import permutation, uniforms
from crowdlab.personas.sampling.templates import format_column, join_pieces, parse_template

log = logging.getLogger(__name__)


@dataclass
class _Coded:
    """A categorical column kept as codes while sampling, so children index it cheaply."""

    codes: np.ndarray
    categories: list[str]


def check_request(n_total: int, seed: int, start: int = 0, stop: int | None = None) -> None:
    """Validate sizes and seed before anything is sampled or written."""
    if isinstance(n_total, bool) or not isinstance(n_total, (int, np.integer)) or n_total <= 0:
        raise SpecError("n", f"must be a positive integer, got {n_total!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpecError("seed", f"must be a non-negative integer, got {seed!r}")
    stop = n_total if stop is None else stop
    if not 0 <= start <= stop <= n_total:
        raise SpecError("rows", f"need 0 <= start ({start}) <= stop ({stop}) <= n ({n_total})")


def check_quotas(spec: PopulationSpec, n_total: int) -> None:
    """Quota counts must be able to sum to n (given counts are checked against n here)."""
    for index, attr in enumerate(spec.attributes):
        if isinstance(attr, Categorical) and attr.mode == "quota":
            quota_counts(attr, n_total, f"attributes[{index}] ({attr.name})")


def sample_rows(spec: PopulationSpec, start: int, stop: int, seed: int, n_total: int) -> pa.Table:
    """Rows [start, stop) of the population of size n_total drawn with seed.

    With constraints, the attributes they name are drawn from the raked constrained distribution
    (see ``raking.py``), so every row is feasible and the marginals are the spec's where the
    constraints allow; rows that still violate (a grid too large to plan) are redrawn whole (see
    ``constraints.py``). Without constraints, the table is exactly what it was before them.
    """
    check_request(n_total, seed, start, stop)
    check_quotas(spec, n_total)
    quotas: dict[str, np.ndarray] = {}
    for index, attr in enumerate(spec.attributes):
        if isinstance(attr, Categorical) and attr.mode == "quota":
            counts = quota_counts(attr, n_total, f"attributes[{index}] ({attr.name})")
            positions = permutation(seed, attr.name, n_total)[start:stop]
            quotas[attr.name] = np.searchsorted(np.cumsum(counts), positions, side="right").astype(np.int32)

    def first_pass(stream: str, width: int = 1) -> np.ndarray:
        return uniforms(seed, stream, start, stop, n_total, width)

    agent_ids = np.arange(start, stop, dtype=np.int64)
    table = _sample_table(spec, first_pass, quotas, agent_ids, constraint_plan(spec))
    if spec.constraints:
        table = _enforce_constraints(spec, table, seed, start, stop, n_total, quotas)
    return table


Draw = Callable[..., np.ndarray]


def _enforce_constraints(
    spec: PopulationSpec, table: pa.Table, seed: int, start: int, stop: int, n_total: int, quotas: dict[str, np.ndarray]
) -> pa.Table:
    """Redraw violating rows, pass after pass, from streams keyed by (seed, attribute, block, pass).

    A row's draws in pass p sit at the row's own position of that pass's stream, so whether and
    how a row is redrawn depends on nothing but the row: shard-invariant, like the first pass.
    """
    agent_ids = np.arange(start, stop, dtype=np.int64)
    for pass_no in range(1, spec.max_passes + 1):
        mask, _ = violation_mask(spec, table)
        if not mask.any():
            return table
        idx = np.flatnonzero(mask)

        def redraw(stream: str, width: int = 1, _p: int = pass_no, _idx: np.ndarray = idx) -> np.ndarray:
            return uniforms(seed, f"{stream}\x1fpass{_p}", start, stop, n_total, width)[_idx]

        sub = _sample_table(spec, redraw, {k: v[idx] for k, v in quotas.items()}, agent_ids[idx], constraint_plan(spec))
        positions = np.arange(table.num_rows, dtype=np.int64)
        positions[idx] = table.num_rows + np.arange(len(idx), dtype=np.int64)
        table = pa.concat_tables([table, sub]).take(pa.array(positions))
        log.debug("constraints pass %d redrew %d of %d rows", pass_no, len(idx), table.num_rows)
    mask, counts = violation_mask(spec, table)
    if mask.any():
        raise infeasible_error(spec, counts, spec.max_passes, table.num_rows)
    return table


def _sample_table(
    spec: PopulationSpec, draw: Draw, quotas: dict[str, np.ndarray], agent_ids: np.ndarray, plan: ConstraintPlan
) -> pa.Table:
    """One draw of every attribute for the given rows; ``draw(stream, width)`` supplies uniforms.

    Attributes in ``plan.draws`` take their constraint cell from the plan, given the cells drawn
    before them, and a numeric value inside that cell from the spec's own distribution.
    """
    rows = len(agent_ids)
    cells: dict[str, np.ndarray] = {name: quotas[name] for name in plan.quota}
    coded: dict[str, _Coded] = {}
    numeric: dict[str, np.ndarray] = {}
    arrays: dict[str, pa.Array] = {"agent_id": pa.array(agent_ids)}
    identity_draws: np.ndarray | None = None
    for index, attr in enumerate(spec.attributes):
        path = f"attributes[{index}] ({attr.name})"
        if isinstance(attr, IdentityAttribute):
            if identity_draws is None:
                identity_draws = draw(ident.IDENTITY_STREAM, ident.IDENTITY_WIDTH)
            arrays[attr.name] = _identity(attr, identity_draws, coded, rows)
            continue
        if isinstance(attr, TemplateAttribute):
            arrays[attr.name] = _template(attr, path, coded, numeric, arrays, rows)
            continue
        if isinstance(attr, Categorical) and attr.mode == "quota":
            coded[attr.name] = _Coded(quotas[attr.name], attr.categories)
        else:
            u = draw(attr.name)[:, 0]
            cell_draw = plan.draws.get(attr.name)
            if cell_draw is not None:
                cell, within = cell_draw.cells(u, cells)
                cells[attr.name] = cell
                if cell_draw.numeric:  # the spec's own uniform for a value inside the drawn cell
                    parent = coded[attr.on].codes if isinstance(attr, ConditionalAttribute) else None
                    u = cell_draw.uniforms(cell, within, parent)
            if cell_draw is not None and not cell_draw.numeric:  # categorical cells are the categories
                coded[attr.name] = _Coded(cells[attr.name].astype(np.int32), categories_of(attr) or [])
            elif isinstance(attr, Categorical):
                coded[attr.name] = _Coded(categorical_codes(attr, u), attr.categories)
            elif isinstance(attr, ConditionalAttribute):
                _conditional(attr, u, coded, numeric)
            else:
                numeric[attr.name] = numeric_values(attr, u)
        if attr.name in coded:
            c = coded[attr.name]
            arrays[attr.name] = pa.array(c.categories, pa.string()).take(pa.array(c.codes))
        else:
            arrays[attr.name] = pa.array(numeric[attr.name])
    schema = persona_schema(spec)
    return pa.Table.from_arrays([arrays[f.name].cast(f.type) for f in schema], schema=schema)


def _conditional(attr: ConditionalAttribute, u: np.ndarray, coded: dict[str, _Coded], numeric: dict[str, np.ndarray]) -> None:
    parent = coded[attr.on]
    if attr.is_categorical:
        categories = attr.categories
        out = np.zeros(len(u), dtype=np.int32)
    else:
        out = np.zeros(len(u), dtype=np.int64 if attr.distributions[0].integer else np.float64)
    for code, value in enumerate(parent.categories):
        dist = attr.cases.get(value, attr.default)
        mask = parent.codes == code
        if not mask.any():
            continue
        if attr.is_categorical:
            out[mask] = categorical_codes(dist, u[mask], categories)
        else:
            out[mask] = numeric_values(dist, u[mask])
    if attr.is_categorical:
        coded[attr.name] = _Coded(out, categories)
    else:
        numeric[attr.name] = out


def _codes_or_constant(name: str | None, coded: dict[str, _Coded], rows: int) -> tuple[np.ndarray, list[str]]:
    if name is not None and name in coded:
        return coded[name].codes, coded[name].categories
    return np.zeros(rows, dtype=np.int32), [name or ""]


def _identity(attr: IdentityAttribute, draws: np.ndarray, coded: dict[str, _Coded], rows: int) -> pa.Array:
    locale_codes, locales = _codes_or_constant(attr.locale, coded, rows)
    gender_codes = np.zeros(rows, dtype=np.int64)
    if attr.gender is not None:
        values = coded[attr.gender].categories
        lookup = np.array([ident.GENDERS.index(_gender_of(v, attr.gender_map)) for v in values], dtype=np.int64)
        gender_codes = lookup[coded[attr.gender].codes]
    return ident.identity_column(attr.field, draws, tuple(locales), locale_codes, gender_codes)


_MALE = {"male", "m", "man", "men", "boy", "masculine"}
_FEMALE = {"female", "f", "woman", "women", "girl", "feminine"}


def _gender_of(value: str, gender_map: dict[str, str] | None) -> str:
    if gender_map and value in gender_map:
        return gender_map[value]
    lowered = value.strip().lower()
    return "male" if lowered in _MALE else "female" if lowered in _FEMALE else "any"


def _template(
    attr: TemplateAttribute,
    path: str,
    coded: dict[str, _Coded],
    numeric: dict[str, np.ndarray],
    arrays: dict[str, pa.Array],
    rows: int,
) -> pa.Array:
    parts: list[pa.Array | str] = []
    for piece in parse_template(attr.template, f"{path}.template"):
        if piece.field is None:
            parts.append(piece.literal)
        elif piece.field in coded:
            c = coded[piece.field]
            mapping = attr.maps.get(piece.field, {})
            labels = [format(mapping.get(v, v), piece.format_spec) for v in c.categories]
            parts.append(pa.array(labels, pa.string()).take(pa.array(c.codes)))
        elif piece.field in numeric:
            parts.append(format_column(numeric[piece.field], piece.format_spec))
        else:
            parts.append(arrays[piece.field])
    return join_pieces(parts, rows)


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Split range(n) into `shards` contiguous, near-equal ranges."""
    edges = np.linspace(0, n, shards + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def sample(spec: PopulationSpec, n: int, seed: int, shards: int = 1) -> pa.Table:
    """The persona table of n rows for seed; identical for any number of shards."""
    check_request(n, seed)
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise SpecError("shards", f"must be a positive integer, got {shards!r}")
    check_quotas(spec, n)
    log.info("sampling %d personas of %s (seed %d, %d shards)", n, spec.name, seed, shards)
    parts = [sample_rows(spec, a, b, seed, n) for a, b in shard_bounds(n, min(shards, n))]
    table = pa.concat_tables(parts).combine_chunks()
    warn_departures(spec, table)
    return table


def warn_departures(spec: PopulationSpec, table: pa.Table | None = None) -> None:
    """Log a warning per attribute the constraints keep from its target: target, attainable, realised."""
    plan = constraint_plan(spec)
    if plan.note:
        log.warning("constraints of %s: %s", spec.name, plan.note)
    for dep in plan.departures:
        realised = realised_shares(spec, dep, table.column(dep.attribute)) if table is not None else None
        figures = ", ".join(
            f"{dep.cells[i]}: target {100 * dep.target[i]:.1f}%, attainable {100 * dep.attainable[i]:.1f}%"
            + (f", realised {100 * realised[i]:.1f}%" if realised is not None else "")
            for i in dep.largest()
        )
        log.warning(
            "constraints of %s keep %s from its target (TVD %.3f; no feasible population has the target shares): %s",
            spec.name, dep.attribute, dep.tvd, figures,
        )


__all__: list[Any] = ["sample", "sample_rows", "shard_bounds", "check_request"]
