"""A scenario written as data (``kind: declarative``): prompts, questions with typed answer
fields, groups, what agents see of earlier rounds, and settle rules. Everything is checked when
the config is validated: answer types and options (``experiments/answers``), template syntax
and names, formula syntax and names, and that every rule reads a field or value that exists.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crowdlab.experiments.answers import AnswerField, AnswerType
from crowdlab.experiments.scenarios.formula import Formula, FormulaError

#: Per-group values every round has without declaring them (the primary field's statistics).
STANDARD_STATS = ("n", "n_valid", "n_invalid", "mean", "median", "std")
#: Outcome names that fill the rounds table's own columns instead of an ``outcome_<name>`` one.
LEGACY_OUTCOME_COLUMNS = ("target",)
NUMERIC_STATS = ("mean", "median", "std", "min", "max", "sum", "count")
CATEGORY_STATS = ("share", "distribution")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Question(_Model):
    """One question of a round: its text (a template) and the answer fields it asks for."""

    text: str = Field(description="Jinja2 template of the question, rendered per agent")
    fields: dict[str, AnswerType] = Field(min_length=1)


class AggregateRule(_Model):
    """A per-group statistic of one field: numeric (mean ... count) or per option (share,
    distribution) for choice, multi-choice, likert and linear-scale fields."""

    rule: Literal["aggregate"] = "aggregate"
    name: str
    field: str
    stat: Literal["mean", "median", "std", "min", "max", "sum", "count", "share", "distribution"]


class FormulaRule(_Model):
    """A per-group value computed from parameters, standard statistics and earlier rules."""

    rule: Literal["formula"] = "formula"
    name: str
    formula: str


class ClosestRule(_Model):
    """Winners: the valid answers of ``field`` closest to the group value ``to`` (ties share)."""

    rule: Literal["closest"] = "closest"
    field: str
    to: str


class PayoffRule(_Model):
    """A per-agent value (its own fields, parameters, group values); the rounds table gets its
    group mean as ``outcome_<name>``, and each agent sees its own in later rounds."""

    rule: Literal["payoff"] = "payoff"
    name: str
    formula: str


class SampleRule(_Model):
    """A seeded sample of a group's answers to ``field``, shown to its members next round: the
    ``k`` valid answers with the smallest request seeds (so it is random, reproducible and the
    same whatever the sharding); an agent never sees its own answer among them."""

    rule: Literal["sample"] = "sample"
    name: str
    field: str
    k: int = Field(3, ge=1, le=50)


OutcomeRule = Annotated[Union[AggregateRule, FormulaRule, ClosestRule, PayoffRule, SampleRule],
                        Field(discriminator="rule")]


class Visibility(_Model):
    """What each agent sees of earlier rounds (template variable ``history``)."""

    own_answers: bool = Field(True, description="its own answers (reasoning included)")
    group_outcome: bool = Field(True, description="its group's settled values")
    last_rounds: int | None = Field(None, ge=1, description="only the last k rounds (all when unset)")


class Prompts(_Model):
    """Jinja2 templates (sandboxed, undefined names are errors). ``system`` is shared by every
    agent unless it reads per-agent variables; ``user`` comes after the history block."""

    system: str = ""
    user: str = Field("", description="per-agent part before the questions (e.g. the persona)")
    history: str | None = Field(None, description="how earlier rounds are shown; a default is used when unset")
    answer_format: bool = Field(True, description="append the JSON answer-format line")


class Baseline(_Model):
    """How non-LLM backends answer: one formula per answer field over the context (parameters,
    ``round``, ``last_<value>``, ``own_last_<field>``), persona-free; ``uniform()`` and
    ``normal()`` draw from the request seed. Served by ``backend: {kind: formula}``.
    A ``multi_choice`` field takes ``{option: probability formula}``, a ``ranking`` field
    ``{option: score formula}``, every option named (see ``backends/baseline.py``)."""

    fields: dict[str, str | dict[str, str]] = Field(default_factory=dict)

    @field_validator("fields", mode="before")
    @classmethod
    def _formula_texts(cls, value: Any) -> Any:
        """A number is a constant formula; anything but a formula or ``{option: formula}`` is
        refused naming the field (and option)."""
        if not isinstance(value, dict):
            return value

        def text(v: Any, where: str) -> str:
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise ValueError(f"{where}: a formula (text or a number), got {type(v).__name__}")
            return str(v)

        return {name: {str(k): text(v, f"{name}.{k}") for k, v in source.items()} if isinstance(source, dict)
                else text(source, str(name)) for name, source in value.items()}
    parameters: dict[str, float] = Field(default_factory=dict, description="constants the formulas read")


class InterviewQuestion(_Model):
    """One follow-up question: a prompt (a template over the game's variables, the agent's full
    history included) and the typed answer fields it asks for."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    prompt: str = Field(description="Jinja2 template, sandboxed like the scenario's")
    fields: dict[str, AnswerType] = Field(min_length=1)


class Interview(_Model):
    """Follow-up questions asked after a round (``last`` or N) to every agent or a seeded sample,
    with its whole history in context. Answers go to ``interviews/``; they never feed back into play."""

    after_round: int | str = Field("last", description="'last' or a round number (1 .. rounds)")
    sample: float | dict[str, float] = Field(
        1.0, description="share of agents in (0, 1], {share: s} (each agent with probability s) or {n: k} "
                         "(k agents of each condition and replicate); seeded, the same whatever the sharding")
    questions: list[InterviewQuestion] = Field(min_length=1)

    @property
    def fields(self) -> dict[str, AnswerField]:
        return {name: f for q in self.questions for name, f in q.fields.items()}

    def sample_share_or_n(self) -> tuple[float | None, int | float | None]:
        if not isinstance(self.sample, dict):
            return float(self.sample), None
        if set(self.sample) == {"share"}:
            return float(self.sample["share"]), None
        if set(self.sample) == {"n"}:
            return None, self.sample["n"]
        raise ValueError(f"sample: give a number, {{share: s}} or {{n: k}}, got keys {sorted(self.sample)}")

    def round_after(self, rounds: int) -> int:
        return rounds if self.after_round == "last" else int(self.after_round)

    @model_validator(mode="after")
    def _check(self) -> "Interview":
        if self.after_round != "last" and (not isinstance(self.after_round, int) or self.after_round < 1):
            raise ValueError(f"after_round: 'last' or a round number >= 1, got {self.after_round!r}")
        share, n = self.sample_share_or_n()
        if share is not None and not 0 < share <= 1:
            path = "sample" if not isinstance(self.sample, dict) else "sample.share"
            raise ValueError(f"{path}: a share must be in (0, 1], got {share}")
        if n is not None and (n < 1 or n != int(n)):
            raise ValueError(f"sample.n: a whole number >= 1, got {n}")
        seen: set[str] = set()
        for i, q in enumerate(self.questions):
            for name in q.fields:
                if name in seen or not name.isidentifier():
                    raise ValueError(f"questions.{i}.fields.{name}: declared twice or not an identifier")
                seen.add(name)
        return self


class DeclarativeParams(_Model):
    """A scenario declared in YAML. See docs/contracts.md for the columns it writes."""

    kind: Literal["declarative"] = "declarative"
    name: str = Field("declarative", pattern=r"^[A-Za-z0-9_.-]+$")
    parameters: dict[str, float | int | str | bool] = Field(default_factory=dict)
    groups: int = Field(1, ge=1, description="agents split round-robin by id into this many games")
    group_size: int | None = Field(None, ge=1, description="consecutive ids in games of this size instead")
    prompts: Prompts = Field(default_factory=Prompts)
    questions: list[Question] = Field(min_length=1)
    primary: str | None = Field(None, description="numeric field stored in 'value' (default: the first one)")
    outcome: list[OutcomeRule] = Field(default_factory=list)
    visible: Visibility = Field(default_factory=Visibility)
    baseline: Baseline | None = None
    interview: Interview | None = Field(None, description="follow-up questions after a round (interviews/)")

    @property
    def fields(self) -> dict[str, AnswerField]:
        return {name: f for q in self.questions for name, f in q.fields.items()}

    def numeric_parameters(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.parameters.items() if isinstance(v, (int, float))}

    def primary_field(self) -> str | None:
        if self.primary is not None:
            return self.primary
        return next((n for n, f in self.fields.items() if f.type_name in ("number", "integer", "likert",
                                                                         "linear_scale")), None)

    @model_validator(mode="after")
    def _check(self) -> "DeclarativeParams":
        _check_fields(self)
        _check_rules(self)
        from crowdlab.experiments.scenarios.templates import check_templates

        check_templates(self)
        return self


def _check_fields(p: DeclarativeParams) -> None:
    seen: set[str] = set()
    for i, q in enumerate(p.questions):
        for name in q.fields:
            if name in seen:
                raise ValueError(f"questions.{i}.fields.{name}: field declared twice")
            if not name.isidentifier():
                raise ValueError(f"questions.{i}.fields.{name}: field names must be identifiers")
            seen.add(name)
    for name in p.parameters:
        if name in RESERVED or name.startswith(("last_", "own_last_")) or not name.isidentifier():
            raise ValueError(f"parameters.{name}: reserved or not an identifier (reserved: {', '.join(sorted(RESERVED))})")
    if p.groups > 1 and p.group_size is not None:
        raise ValueError("give either groups or group_size, not both")
    if p.primary is not None:
        f = p.fields.get(p.primary)
        if f is None or f.type_name not in ("number", "integer", "likert", "linear_scale"):
            raise ValueError(f"primary: {p.primary!r} is not a numeric answer field")


def _raise(path: str, exc: Exception) -> None:
    raise ValueError(f"{path}: {exc}") from None


def _check_rules(p: DeclarativeParams) -> None:
    fields = p.fields
    numeric_fields = {n for n, f in fields.items() if f.type_name in ("number", "integer", "likert", "linear_scale")}
    params = set(p.numeric_parameters())
    group_names = set(STANDARD_STATS) | params
    for i, rule in enumerate(p.outcome):
        path = f"outcome.{i}"
        if isinstance(rule, (AggregateRule, ClosestRule, SampleRule)):
            if rule.field not in fields:
                _raise(f"{path}.field", ValueError(f"no answer field {rule.field!r}; fields: {', '.join(fields)}"))
            f = fields[rule.field]
            if isinstance(rule, SampleRule):
                pass
            elif isinstance(rule, ClosestRule) or rule.stat in NUMERIC_STATS:
                if rule.field not in numeric_fields:
                    _raise(f"{path}.field", ValueError(f"{rule.field!r} ({f.type_name}) has no numbers"))
            elif f.type_name not in ("choice", "multi_choice", "likert", "linear_scale"):
                _raise(f"{path}.stat", ValueError(f"{rule.stat} needs a choice, multi_choice, likert or "
                                                  f"linear_scale field, not {f.type_name}"))
        if isinstance(rule, ClosestRule):
            if rule.to not in group_names:
                _raise(f"{path}.to", ValueError(f"unknown group value {rule.to!r}"))
            continue
        if rule.name in group_names or rule.name in fields:
            _raise(f"{path}.name", ValueError(f"{rule.name!r} is already defined"))
        if isinstance(rule, FormulaRule):
            try:
                Formula(rule.formula, group_names)
            except FormulaError as exc:
                _raise(f"{path}.formula", exc)
        elif isinstance(rule, PayoffRule):
            try:
                Formula(rule.formula, group_names | numeric_fields)
            except FormulaError as exc:
                _raise(f"{path}.formula", exc)
        if not (isinstance(rule, AggregateRule) and rule.stat in CATEGORY_STATS) and not isinstance(rule, SampleRule):
            group_names.add(rule.name)
    if sum(isinstance(r, ClosestRule) for r in p.outcome) > 1:
        raise ValueError("outcome: at most one 'closest' rule (it fills the winner columns)")
    if p.baseline is not None:
        for name, source in p.baseline.fields.items():
            if name not in fields:
                _raise(f"baseline.fields.{name}", ValueError("no such answer field"))
            for path, label, formula in _baseline_formulas(name, fields[name], source):
                try:
                    Formula(formula, baseline_names(p) | set(p.baseline.parameters), functions=BASELINE_RANDOM)
                except FormulaError as exc:
                    _raise(path, exc if label is None else FormulaError(f"option {label!r}: {exc}"))


def _baseline_formulas(name: str, f: AnswerField, source: str | dict[str, str]
                       ) -> list[tuple[str, str | None, str]]:
    """(field path, option label to name in the message or None, formula) of one baseline entry:
    a string for most types, one formula per option (every option, no other key) for
    multi_choice (selection probabilities) and ranking (scores)."""
    path = f"baseline.fields.{name}"
    if f.type_name not in ("multi_choice", "ranking"):
        if not isinstance(source, str):
            _raise(path, ValueError(f"a {f.type_name} field takes one formula, not a mapping"))
        return [(path, None, source)]  # type: ignore[list-item]
    what = "selection probability" if f.type_name == "multi_choice" else "score"
    options = f.option_labels()
    if isinstance(source, str):
        _raise(path, ValueError(f"a {f.type_name} field takes one {what} formula per option: "
                                f"{{{', '.join(f'{o}: ...' for o in options)}}}"))
    unknown = [k for k in source if k not in options]
    if unknown:
        _raise(path, ValueError(f"unknown option {unknown[0]!r}; options: {', '.join(options)}"))
    missing = [o for o in options if o not in source]
    if missing:
        _raise(path, ValueError(f"no {what} formula for option(s) {', '.join(repr(o) for o in missing)}"))
    # an option label that is not a plain word cannot be a path segment: named in the message
    return [(f"{path}.{o}", None, source[o]) if o.isidentifier() else (path, o, source[o]) for o in options]


def group_value_names(p: DeclarativeParams) -> list[str]:
    """Per-group numeric values of a settled round, in rule order (names formulas can read)."""
    names = list(STANDARD_STATS)
    for rule in p.outcome:
        if isinstance(rule, (FormulaRule, PayoffRule)) or (isinstance(rule, AggregateRule)
                                                           and rule.stat in NUMERIC_STATS):
            names.append(rule.name)
    return names


def baseline_names(p: DeclarativeParams) -> set[str]:
    numeric = [n for n, f in p.fields.items() if f.type_name in ("number", "integer", "likert", "linear_scale")]
    return (set(p.numeric_parameters()) | {"round", "total_rounds", "lo", "hi", "own_last"}
            | {f"last_{v}" for v in [*group_value_names(p), "target", "winning_value"]}
            | {f"own_last_{n}" for n in numeric})


def _no_call(*_: Any) -> Any:  # placeholders so the names check passes; the backend binds real draws
    raise RuntimeError("random draws are bound by the formula backend")


BASELINE_RANDOM = {"uniform": _no_call, "normal": _no_call, "agent_uniform": _no_call}
#: Names the context and formulas define themselves; parameters may not take them.
RESERVED = frozenset({"round", "total_rounds", "lo", "hi", "own_last", "groups", "scenario", "integer_only",
                      "baseline", "answer_fields", *STANDARD_STATS, "target", "winning_value"})
