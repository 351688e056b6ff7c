"""Checks that look across attributes: dependencies, locales, template fields.

Attributes are sampled in file order and may only depend on earlier ones, which makes cycles
impossible by construction; a reference to a later attribute is reported as such.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faker.config import AVAILABLE_LOCALES

from crowdlab.personas.sampling.distributions import truncation_mass
from crowdlab.personas.sampling.errors import SpecError
from crowdlab.personas.sampling.spec import (
    ConditionalAttribute,
    IdentityAttribute,
    LogNormal,
    Normal,
    TemplateAttribute,
    categories_of,
    value_type,
)
from crowdlab.personas.sampling.templates import parse_template

if TYPE_CHECKING:
    from crowdlab.personas.sampling.spec import PopulationSpec

RESERVED = ("agent_id",)
KNOWN_LOCALES = frozenset(AVAILABLE_LOCALES)


def attr_path(index: int, attr: Any) -> str:
    return f"attributes[{index}] ({attr.name})"


def check_spec(spec: "PopulationSpec") -> None:
    """Raise SpecError for the first cross-attribute problem found."""
    earlier: dict[str, Any] = {}
    all_names = {a.name for a in spec.attributes}
    for index, attr in enumerate(spec.attributes):
        path = attr_path(index, attr)
        if not attr.name.isidentifier():
            raise SpecError(f"attributes[{index}].name", f"{attr.name!r} must be an identifier (letters, digits, _)")
        if attr.name in RESERVED:
            raise SpecError(f"attributes[{index}].name", f"{attr.name!r} is reserved")
        if attr.name in earlier:
            raise SpecError(f"attributes[{index}].name", f"{attr.name!r} is defined twice")

        def parent(field: str, name: str, need_categories: bool = True) -> Any:
            if name not in earlier:
                if name == attr.name:
                    problem = f"{name!r} refers to itself"
                elif name in all_names:
                    problem = f"{name!r} is defined later; attributes may only depend on earlier ones"
                else:
                    problem = f"no attribute named {name!r}"
                raise SpecError(f"{path}.{field}", problem)
            found = earlier[name]
            if need_categories and categories_of(found) is None:
                raise SpecError(f"{path}.{field}", f"{name!r} is not categorical")
            return found

        for label, dist in _numeric_parts(attr):
            if truncation_mass(dist) < 1e-12:
                raise SpecError(f"{path}{label}.low", "bounds [low, high] exclude essentially all of the distribution")
        if isinstance(attr, ConditionalAttribute):
            _check_conditional(path, attr, parent(field="on", name=attr.on))
        elif isinstance(attr, IdentityAttribute):
            _check_identity(path, attr, earlier, parent)
        elif isinstance(attr, TemplateAttribute):
            _check_template(path, attr, parent)
        earlier[attr.name] = attr


def _numeric_parts(attr: Any) -> list[tuple[str, Any]]:
    if isinstance(attr, ConditionalAttribute):
        return [("." + label, d) for label, d in attr.labelled() if isinstance(d, (Normal, LogNormal))]
    return [("", attr)] if isinstance(attr, (Normal, LogNormal)) else []


def _check_conditional(path: str, attr: ConditionalAttribute, parent: Any) -> None:
    values = categories_of(parent) or []
    for key in attr.cases:
        if key not in values:
            raise SpecError(f"{path}.cases[{key}]", f"{attr.on!r} never takes the value {key!r} (values: {values})")
    missing = [v for v in values if v not in attr.cases]
    if missing and attr.default is None:
        raise SpecError(f"{path}.cases", f"no case for {attr.on} = {missing} and no default")


def _check_identity(path: str, attr: IdentityAttribute, earlier: dict[str, Any], parent: Any) -> None:
    if attr.locale in earlier:
        source = parent("locale", attr.locale)
        unknown = [v for v in categories_of(source) or [] if v not in KNOWN_LOCALES]
        if unknown:
            raise SpecError(f"{path}.locale", f"attribute {attr.locale!r} has unknown Faker locales {unknown}")
    elif attr.locale not in KNOWN_LOCALES:
        raise SpecError(f"{path}.locale", f"unknown locale {attr.locale!r}: not an earlier attribute nor a Faker locale")
    if attr.gender is not None:
        source = parent("gender", attr.gender)
        for key in attr.gender_map or {}:
            if key not in (categories_of(source) or []):
                raise SpecError(f"{path}.gender_map[{key}]", f"{attr.gender!r} never takes the value {key!r}")
    elif attr.gender_map:
        raise SpecError(f"{path}.gender_map", "given without gender")


def _check_template(path: str, attr: TemplateAttribute, parent: Any) -> None:
    pieces = parse_template(attr.template, f"{path}.template")
    fields = {}
    for piece in pieces:
        if piece.field is None:
            continue
        source = parent("template", piece.field, need_categories=False)
        fields[piece.field] = source
        if piece.format_spec:
            sample_value: Any = {"int": 1234, "float": 1234.5, "string": "x"}[value_type(source)]
            try:
                format(sample_value, piece.format_spec)
            except ValueError as exc:
                raise SpecError(f"{path}.template", f"bad format {{{piece.field}:{piece.format_spec}}}: {exc}") from None
    for name, table in attr.maps.items():
        if name not in fields:
            raise SpecError(f"{path}.maps[{name}]", f"{name!r} is not used in the template")
        values = categories_of(fields[name])
        if values is None:
            raise SpecError(f"{path}.maps[{name}]", f"{name!r} is not categorical")
        for key in table:
            if key not in values:
                raise SpecError(f"{path}.maps[{name}][{key}]", f"{name!r} never takes the value {key!r}")
