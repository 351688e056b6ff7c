"""PopulationSpec: the pydantic models a population YAML file is validated against.

The models are declarative; sampling maths lives in ``distributions.py`` and the checks that
look across attributes (parents exist and come earlier, template fields exist, locales are
known) live in ``checks.py``. Every model forbids unknown keys so a typo fails loudly.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import cached_property
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crowdlab.personas.backgrounds.spec import BackgroundSpec, check_background
from crowdlab.personas.sampling.constraints import DEFAULT_MAX_PASSES, Constraint, check_constraints
from crowdlab.personas.sampling.errors import SpecError

PERCENT_TOLERANCE = 0.01  # percentages may be rounded to two decimals


def _coerce_key(value: Any) -> str:
    """YAML reads `yes`, `no`, `null` and numbers as non-strings; accept numbers, refuse the rest."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"category {value!r} was read by YAML as {type(value).__name__}; quote it")
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"category {value!r} must be a string")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Categorical(_Model):
    """A categorical distribution: give exactly one of weights, percentages, counts or values.

    ``sampling: quota`` draws exact counts (largest-remainder rounding of the shares times n,
    or the given ``counts``) and shuffles them; ``iid`` draws each row independently.
    """

    kind: Literal["categorical"] = "categorical"
    weights: dict[str, float] | None = None
    percentages: dict[str, float] | None = None
    counts: dict[str, int] | None = None
    values: list[str] | None = None
    sampling: Literal["iid", "quota"] | None = None

    @field_validator("weights", "percentages", "counts", mode="before")
    @classmethod
    def _keys_are_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {_coerce_key(k): v for k, v in value.items()}
        return value

    @field_validator("values", mode="before")
    @classmethod
    def _values_are_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [_coerce_key(v) for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> "Categorical":
        given = [f for f in ("weights", "percentages", "counts", "values") if getattr(self, f) is not None]
        if len(given) != 1:
            raise SpecError("", f"give exactly one of weights, percentages, counts, values (got {given or 'none'})")
        field = given[0]
        if field == "values":
            if not self.values:
                raise SpecError("values", "needs at least one value")
            if len(set(self.values)) != len(self.values):
                raise SpecError("values", "values repeat")
            return self
        table: dict[str, float] = getattr(self, field)
        if not table:
            raise SpecError(field, "needs at least one category")
        negative = {k: v for k, v in table.items() if v < 0 or not math.isfinite(v)}
        if negative:
            raise SpecError(field, f"must be finite and non-negative, got {negative}")
        total = float(sum(table.values()))
        if total <= 0:
            raise SpecError(field, "are all zero")
        if field == "percentages" and abs(total - 100.0) > PERCENT_TOLERANCE:
            gap = 100.0 - total
            side = "short of" if gap > 0 else "over"
            raise SpecError(field, f"sum to {total:g}, {abs(gap):g} {side} 100")
        if field == "counts" and self.sampling == "iid":
            raise SpecError("sampling", "counts are exact quotas; use sampling: quota or give weights")
        return self

    @property
    def mode(self) -> Literal["iid", "quota"]:
        if self.counts is not None:
            return "quota"
        return self.sampling or "iid"

    @property
    def categories(self) -> list[str]:
        if self.values is not None:
            return list(self.values)
        return list((self.weights or self.percentages or self.counts or {}).keys())

    @property
    def probabilities(self) -> np.ndarray:
        """Target shares in category order (sum 1)."""
        if self.values is not None:
            return np.full(len(self.values), 1.0 / len(self.values))
        raw = np.array(list((self.weights or self.percentages or self.counts or {}).values()), dtype=float)
        return raw / raw.sum()


class _Numeric(_Model):
    integer: bool = False
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _check_bounds(self) -> "_Numeric":
        for field in ("low", "high"):
            value = getattr(self, field)
            if value is not None and math.isnan(value):
                raise SpecError(field, "is NaN")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise SpecError("low", f"low ({self.low:g}) > high ({self.high:g})")
        if self.integer:
            lo = -math.inf if self.low is None else math.ceil(self.low)
            hi = math.inf if self.high is None else math.floor(self.high)
            if lo > hi:
                raise SpecError("low", f"no integer lies in [{self.low:g}, {self.high:g}]")
        return self


class Uniform(_Numeric):
    """Uniform on [low, high]; with ``integer: true`` every integer in the range equally likely."""

    kind: Literal["uniform"] = "uniform"
    low: float
    high: float


class Normal(_Numeric):
    """Normal(mean, std), truncated to [low, high] when bounds are given (not clipped)."""

    kind: Literal["normal"] = "normal"
    mean: float
    std: float = Field(gt=0)


class LogNormal(_Numeric):
    """exp(Normal(mu, sigma)) truncated to [low, high]; give ``mu`` or ``median`` (= exp(mu))."""

    kind: Literal["lognormal"] = "lognormal"
    mu: float | None = None
    median: float | None = Field(default=None, gt=0)
    sigma: float = Field(gt=0)

    @model_validator(mode="after")
    def _check_location(self) -> "LogNormal":
        if (self.mu is None) == (self.median is None):
            raise SpecError("mu", "give exactly one of mu or median")
        if self.low is not None and self.low < 0:
            raise SpecError("low", f"a log-normal value is positive; low ({self.low:g}) < 0")
        return self

    @property
    def log_location(self) -> float:
        return self.mu if self.mu is not None else math.log(self.median or 1.0)


NumericDist = Union[Uniform, Normal, LogNormal]
Distribution = Annotated[Union[Categorical, Uniform, Normal, LogNormal], Field(discriminator="kind")]
DISTRIBUTION_KINDS = ("categorical", "uniform", "normal", "lognormal")


class _Named(_Model):
    name: str = Field(min_length=1)
    doc: str = ""


class CategoricalAttribute(Categorical, _Named):
    pass


class UniformAttribute(Uniform, _Named):
    pass


class NormalAttribute(Normal, _Named):
    pass


class LogNormalAttribute(LogNormal, _Named):
    pass


class ConditionalAttribute(_Named):
    """One distribution per value of an earlier categorical attribute ``on``, plus a default."""

    kind: Literal["conditional"] = "conditional"
    on: str
    cases: dict[str, Distribution] = Field(default_factory=dict)
    default: Distribution | None = None

    @field_validator("cases", mode="before")
    @classmethod
    def _keys_are_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {_coerce_key(k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check(self) -> "ConditionalAttribute":
        if not self.cases and self.default is None:
            raise SpecError("cases", "give at least one case or a default")
        dists = self.distributions
        categorical = [isinstance(d, Categorical) for d in dists]
        if any(categorical) and not all(categorical):
            raise SpecError("cases", "mixes categorical and numeric distributions")
        for label, dist in self.labelled():
            if isinstance(dist, Categorical) and dist.mode == "quota":
                raise SpecError(label + ".sampling", "quota sampling is not supported inside a conditional")
        if not any(categorical) and len({d.integer for d in dists}) > 1:  # type: ignore[union-attr]
            raise SpecError("cases", "mixes integer and float distributions")
        return self

    @property
    def distributions(self) -> list[Any]:
        return list(self.cases.values()) + ([self.default] if self.default is not None else [])

    def labelled(self) -> list[tuple[str, Any]]:
        pairs = [(f"cases[{k}]", d) for k, d in self.cases.items()]
        return pairs + ([("default", self.default)] if self.default is not None else [])

    @property
    def is_categorical(self) -> bool:
        return isinstance(self.distributions[0], Categorical)

    @property
    def categories(self) -> list[str]:
        seen: dict[str, None] = {}
        for dist in self.distributions:
            for value in dist.categories:
                seen.setdefault(value, None)
        return list(seen)


IDENTITY_FIELDS = ("name", "first_name", "last_name", "city", "email")


class IdentityAttribute(_Named):
    """A Faker-drawn identity field whose locale is a literal (``de_DE``) or an earlier attribute.

    All identity attributes of a spec share their random draws, so ``name`` and ``email`` of one
    row belong to the same person. ``gender`` names an earlier attribute used to pick male or
    female first names; ``gender_map`` maps its values to ``male``/``female``/``any``.
    """

    kind: Literal["identity"] = "identity"
    field: Literal["name", "first_name", "last_name", "city", "email"]
    locale: str = "en_US"
    gender: str | None = None
    gender_map: dict[str, Literal["male", "female", "any"]] | None = None


class TemplateAttribute(_Named):
    """Text built from earlier attributes, ``str.format`` style: ``"{name}, {age}, a {job}"``.

    ``maps`` rewrites a categorical field's values inside this template only, e.g.
    ``{education: {"bachelor's": "a bachelor's degree"}}``; unmapped values appear as they are.
    """

    kind: Literal["template"] = "template"
    template: str
    maps: dict[str, dict[str, str]] = Field(default_factory=dict)


Attribute = Annotated[
    Union[
        CategoricalAttribute,
        UniformAttribute,
        NormalAttribute,
        LogNormalAttribute,
        ConditionalAttribute,
        IdentityAttribute,
        TemplateAttribute,
    ],
    Field(discriminator="kind"),
]
ATTRIBUTE_KINDS = DISTRIBUTION_KINDS + ("conditional", "identity", "template")


class PopulationSpec(_Model):
    """A population: named attributes sampled in order, each depending only on earlier ones."""

    name: str = Field(min_length=1)
    version: int | str = 1
    description: str = ""
    source: str | list[str] | None = None
    attributes: list[Attribute] = Field(min_length=1)
    constraints: list[Constraint] = Field(default_factory=list, description="feasibility rules (constraints.py)")
    max_passes: int = Field(DEFAULT_MAX_PASSES, ge=1, le=1000, description="resampling passes for constraints")
    background: BackgroundSpec | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> "PopulationSpec":
        from crowdlab.personas.sampling.checks import check_spec

        check_spec(self)
        check_constraints(self)
        check_background(self)
        return self

    def attribute(self, name: str) -> Any:
        for attr in self.attributes:
            if attr.name == name:
                return attr
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    @cached_property
    def spec_hash(self) -> str:
        """sha256 of the canonical JSON form: equal specs hash equal whatever the YAML layout."""
        data = self.model_dump(mode="json", by_alias=True)
        for key, empty in (("constraints", []), ("max_passes", DEFAULT_MAX_PASSES), ("background", None)):
            if data.get(key) == empty:  # specs without the newer sections hash as before
                data.pop(key)
        canonical = json.dumps(data, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True, by_alias=True), ensure_ascii=False)


def categories_of(attr: Any) -> list[str] | None:
    """The finite value set of a categorical-valued attribute, or None for free text/numbers."""
    if isinstance(attr, Categorical):
        return attr.categories
    if isinstance(attr, ConditionalAttribute) and attr.is_categorical:
        return attr.categories
    return None


def value_type(attr: Any) -> Literal["string", "int", "float"]:
    """The column type an attribute produces."""
    if isinstance(attr, (IdentityAttribute, TemplateAttribute)) or categories_of(attr) is not None:
        return "string"
    dist = attr.distributions[0] if isinstance(attr, ConditionalAttribute) else attr
    return "int" if dist.integer else "float"
