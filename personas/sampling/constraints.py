"""Feasibility rules between attributes: declarative ``if``/``then`` constraints.

A constraint says: for every row where all ``if`` conditions hold, all ``then`` conditions must
hold too (no ``if`` means every row). For example::

    constraints:
      - name: young_not_retired
        if: {age: {lt: 22}}
        then: {occupation: {not_in: [retired]}, education: {not_in: [doctorate]}}
      - name: professor_needs_masters
        if: {occupation: {in: [professor]}}
        then: {education: {in: [master's degree, doctorate]}}

The sampler enforces them by rejection: rows that violate any constraint are redrawn whole
(quota attributes keep their exact counts and are not redrawn) from streams keyed by
(seed, attribute, row block, pass), so the result is the spec's distribution conditioned on the
feasible set, and it does not depend on sharding. Evaluation is column-wise with pyarrow.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crowdlab.personas.sampling.errors import SpecError

if TYPE_CHECKING:
    from crowdlab.personas.sampling.spec import PopulationSpec

DEFAULT_MAX_PASSES = 50
_NUMERIC_OPS = ("lt", "le", "gt", "ge")


class Condition(BaseModel):
    """Tests on one attribute's value; several given tests must all hold."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    in_: list[str] | None = Field(None, alias="in")
    not_in: list[str] | None = None
    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None

    @field_validator("in_", "not_in", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, list):
            return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> "Condition":
        if all(getattr(self, f) is None for f in ("in_", "not_in") + _NUMERIC_OPS):
            raise SpecError("", "give at least one of in, not_in, lt, le, gt, ge")
        for op in _NUMERIC_OPS:
            value = getattr(self, op)
            if value is not None and math.isnan(value):
                raise SpecError(op, "is NaN")
        return self

    @property
    def is_numeric(self) -> bool:
        return any(getattr(self, op) is not None for op in _NUMERIC_OPS)

    @property
    def is_categorical(self) -> bool:
        return self.in_ is not None or self.not_in is not None

    def holds(self, column: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Boolean array: does each value pass every test of this condition?"""
        tests: list[Any] = []
        if self.in_ is not None:
            tests.append(pc.is_in(column, value_set=pa.array(self.in_, pa.string())))
        if self.not_in is not None:
            tests.append(pc.invert(pc.is_in(column, value_set=pa.array(self.not_in, pa.string()))))
        for op, fn in (("lt", pc.less), ("le", pc.less_equal), ("gt", pc.greater), ("ge", pc.greater_equal)):
            value = getattr(self, op)
            if value is not None:
                tests.append(fn(column, pa.scalar(value, pa.float64())))
        out = tests[0]
        for test in tests[1:]:
            out = pc.and_(out, test)
        return out


class Constraint(BaseModel):
    """For rows where every ``if`` condition holds, every ``then`` condition must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1)
    doc: str = ""
    if_: dict[str, Condition] = Field(default_factory=dict, alias="if")
    then: dict[str, Condition] = Field(min_length=1)

    def violations(self, table: pa.Table) -> np.ndarray:
        """Boolean numpy mask of the rows that break this constraint."""
        applies: Any = pa.array(np.ones(table.num_rows, dtype=bool))
        for name, cond in self.if_.items():
            applies = pc.and_(applies, cond.holds(table.column(name)))
        satisfied: Any = pa.array(np.ones(table.num_rows, dtype=bool))
        for name, cond in self.then.items():
            satisfied = pc.and_(satisfied, cond.holds(table.column(name)))
        bad = pc.and_(applies, pc.invert(satisfied))
        return np.asarray(pc.fill_null(bad, False).to_numpy(zero_copy_only=False), dtype=bool)


def check_constraints(spec: "PopulationSpec") -> None:
    """Names, types and categories used by constraints must exist (a typo fails loudly)."""
    from crowdlab.personas.sampling.spec import IdentityAttribute, TemplateAttribute, categories_of

    seen: set[str] = set()
    for index, constraint in enumerate(spec.constraints):
        path = f"constraints[{index}] ({constraint.name})"
        if constraint.name in seen:
            raise SpecError(f"constraints[{index}].name", f"{constraint.name!r} is defined twice")
        seen.add(constraint.name)
        for part, conditions in (("if", constraint.if_), ("then", constraint.then)):
            for attr_name, cond in conditions.items():
                where = f"{path}.{part}.{attr_name}"
                try:
                    attr = spec.attribute(attr_name)
                except KeyError:
                    raise SpecError(where, f"no attribute named {attr_name!r} (attributes: {spec.names})") from None
                if isinstance(attr, (IdentityAttribute, TemplateAttribute)):
                    raise SpecError(where, f"{attr_name!r} is a {attr.kind} attribute; constraints apply to sampled attributes")
                categories = categories_of(attr)
                if categories is None and cond.is_categorical:
                    raise SpecError(where, f"{attr_name!r} is numeric; use lt, le, gt, ge")
                if categories is not None and cond.is_numeric:
                    raise SpecError(where, f"{attr_name!r} is categorical; use in, not_in")
                for value in (cond.in_ or []) + (cond.not_in or []):
                    if categories is not None and value not in categories:
                        raise SpecError(where, f"{attr_name!r} never takes the value {value!r} (values: {categories})")
        _check_not_empty(spec, path, constraint)


def _check_not_empty(spec: "PopulationSpec", path: str, constraint: Constraint) -> None:
    """A ``then`` that no value of its attribute can meet is contradictory on its face."""
    from crowdlab.personas.sampling.spec import categories_of

    for attr_name, cond in constraint.then.items():
        categories = categories_of(spec.attribute(attr_name))
        if categories is not None:
            allowed = set(categories)
            if cond.in_ is not None:
                allowed &= set(cond.in_)
            if cond.not_in is not None:
                allowed -= set(cond.not_in)
            if not allowed:
                raise SpecError(f"{path}.then.{attr_name}", f"no value of {attr_name!r} satisfies it")
        else:
            lo = max([v for v in (cond.gt, cond.ge) if v is not None], default=-math.inf)
            hi = min([v for v in (cond.lt, cond.le) if v is not None], default=math.inf)
            strict = (cond.gt is not None and cond.gt >= lo) or (cond.lt is not None and cond.lt <= hi)
            if lo > hi or (lo == hi and strict):
                raise SpecError(f"{path}.then.{attr_name}", f"no value of {attr_name!r} satisfies it")


def violation_mask(spec: "PopulationSpec", table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(any-violation mask, per-constraint violation counts) for a sampled table."""
    counts = np.zeros(len(spec.constraints), dtype=np.int64)
    mask = np.zeros(table.num_rows, dtype=bool)
    for i, constraint in enumerate(spec.constraints):
        bad = constraint.violations(table)
        counts[i] = int(bad.sum())
        mask |= bad
    return mask, counts


def infeasible_error(spec: "PopulationSpec", counts: np.ndarray, passes: int, rows: int) -> SpecError:
    """The error for rows still violating after the last pass: names the worst constraint."""
    worst = int(np.argmax(counts))
    constraint = spec.constraints[worst]
    others = [f"{c.name} ({int(k)})" for i, (c, k) in enumerate(zip(spec.constraints, counts)) if k and i != worst]
    also = f"; also still violated: {', '.join(others)}" if others else ""
    return SpecError(
        f"constraints[{worst}] ({constraint.name})",
        f"{int(counts[worst])} of {rows} rows still violate it after {passes} resampling passes{also}; "
        "the constraints may leave (almost) no feasible persona, or raise max_passes",
    )
