"""Prompt templates of declarative scenarios: Jinja2 in a sandbox, checked before a run starts.

* ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: a template cannot call into Python
  internals or change its variables (``params.update(...)``), and a name that is not defined
  fails instead of rendering as an empty string;
* every template is parsed when the config is validated: a syntax error, a top-level name that
  is not one of ``TEMPLATE_NAMES``, an attribute or key starting with ``_`` (``''.__class__``)
  or the ``attr`` filter fail there, naming the template;
* the persona columns a template reads (``persona.age``, ``persona['age']``) are collected, so
  preflight fails naming the template when the population lacks one.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

if TYPE_CHECKING:
    from crowdlab.experiments.scenarios.declarative_params import DeclarativeParams

#: What a template may read. ``history`` is a list of earlier rounds (``round``, ``own``,
#: ``outcome``), ``last`` its last entry (None in round 1).
TEMPLATE_NAMES = frozenset({"persona", "params", "round", "total_rounds", "group", "group_size", "n_groups",
                            "history", "last", "fields"})
#: Names the shared (system) part may read and still be rendered once per group size.
SHARED_NAMES = frozenset({"params", "round", "total_rounds", "group_size", "n_groups", "fields"})


class TemplateError(ValueError):
    """A template that would fail or escape the sandbox; the message names the template."""


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False,
                                trim_blocks=True, lstrip_blocks=True)


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def inspect(source: str, where: str) -> tuple[set[str], set[str]]:
    """(top-level names, persona columns) a template reads; ``TemplateError`` if it is unsafe."""
    env = environment()
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: template syntax error on line {exc.lineno}: {exc.message}") from None
    names = meta.find_undeclared_variables(tree)
    unknown = sorted(names - TEMPLATE_NAMES)
    if unknown:
        raise TemplateError(f"{where}: unknown name {unknown[0]!r} in template; "
                            f"known: {', '.join(sorted(TEMPLATE_NAMES))}")
    columns: set[str] = set()
    for node in _walk(tree):
        key = None
        if isinstance(node, nodes.Getattr):
            key = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            key = node.arg.value
        if key is not None and key.startswith("_"):
            raise TemplateError(f"{where}: attribute {key!r} is not allowed in templates")
        if isinstance(node, nodes.Filter) and node.name == "attr":
            raise TemplateError(f"{where}: the 'attr' filter is not allowed in templates")
        if key is not None and isinstance(node.node, nodes.Name) and node.node.name == "persona":  # type: ignore[attr-defined]
            columns.add(key)
    return names, columns


def check_templates(params: "DeclarativeParams") -> None:
    """Parse every template of a declarative scenario (raises ValueError naming its path)."""
    for where, source in template_sources(params):
        inspect(source, where)


def template_sources(params: "DeclarativeParams") -> list[tuple[str, str]]:
    """(config path, source) of every template."""
    out = [("prompts.system", params.prompts.system), ("prompts.user", params.prompts.user)]
    if params.prompts.history is not None:
        out.append(("prompts.history", params.prompts.history))
    out += [(f"questions.{i}.text", q.text) for i, q in enumerate(params.questions)]
    if params.interview is not None:
        out += [(f"interview.questions.{i}.prompt", q.prompt) for i, q in enumerate(params.interview.questions)]
    return out


class Template:
    """A compiled template that renders with a clear error instead of a traceback."""

    def __init__(self, source: str, where: str) -> None:
        self.where = where
        self.names, self.persona_columns = inspect(source, where)
        self.template = environment().from_string(source)

    def render(self, variables: dict[str, Any]) -> str:
        try:
            return self.template.render(variables)
        except (SecurityError, UndefinedError) as exc:
            raise TemplateError(f"{self.where}: {exc}") from None
