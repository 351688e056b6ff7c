"""The ``background:`` section of a PopulationSpec: LLM-written persona texts and their gate.

Example::

    background:
      words: 60
      mention: [age, occupation, education, city]
      prompt_version: v1
      language_from: locale          # an attribute holding Faker locales; else `language: en`
      backend: {kind: vllm, model: Qwen/Qwen2.5-0.5B-Instruct}   # or pass --backend on the CLI
      gate:
        fields: [age, occupation, education, city]   # default: mention
        max_tries: 3
        tolerance: {age: 1}
        synonyms: {education: {"master's degree": [masters, MSc, MA]}}

The backend stays a plain mapping here and is validated by the backend registry
(``crowdlab.experiments.backends``) only when generation starts, so importing and validating a
spec never imports the experiments package.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crowdlab.personas.sampling.errors import SpecError

PROMPT_VERSIONS = ("v1",)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateSpec(_Model):
    """How generated texts are checked against the persona row."""

    fields: list[str] | None = Field(None, description="attributes read back from the text (default: mention)")
    max_tries: int = Field(3, ge=1, le=20, description="generations per persona, the first included")
    tolerance: dict[str, float] = Field(default_factory=dict, description="numeric slack, e.g. {age: 1}")
    relative_tolerance: float = Field(0.1, ge=0, description="slack for numeric fields without a tolerance, as a share")
    synonyms: dict[str, dict[str, list[str]]] = Field(default_factory=dict, description="attr -> value -> other spellings")
    max_tokens: int = Field(96, ge=16)

    @field_validator("synonyms", mode="before")
    @classmethod
    def _string_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(a): {str(k): [str(x) for x in v] for k, v in (t or {}).items()} for a, t in value.items()}
        return value


class BackgroundSpec(_Model):
    """One short text per persona, written by an LLM backend and checked by the gate."""

    words: int = Field(60, ge=5, le=1000)
    mention: list[str] = Field(min_length=1, description="attributes the text must mention")
    context: list[str] = Field(default_factory=list, description="more attributes shown to the writer, not required")
    prompt_version: str = "v1"
    language: str | None = Field(None, description="a language name or Faker locale (default: English)")
    language_from: str | None = Field(None, description="attribute holding each persona's Faker locale")
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=8, description="default: 2 x words + 32")
    backend: dict[str, Any] | None = Field(None, description="backend config; the CLI's --backend overrides it")
    gate: GateSpec = Field(default_factory=GateSpec)

    @model_validator(mode="after")
    def _check(self) -> "BackgroundSpec":
        if self.prompt_version not in PROMPT_VERSIONS:
            raise SpecError("prompt_version", f"unknown prompt version {self.prompt_version!r} (known: {list(PROMPT_VERSIONS)})")
        if self.language is not None and self.language_from is not None:
            raise SpecError("language", "give language or language_from, not both")
        if len(set(self.mention)) != len(self.mention):
            raise SpecError("mention", "names repeat")
        if self.backend is not None and "kind" not in self.backend:
            raise SpecError("backend.kind", "missing (e.g. vllm, openai, transformers, echo)")
        return self

    @property
    def gate_fields(self) -> list[str]:
        return list(self.gate.fields) if self.gate.fields is not None else list(self.mention)

    @property
    def token_budget(self) -> int:
        return self.max_tokens or 2 * self.words + 32


def check_background(spec: Any) -> None:
    """Every attribute the background section names must exist (errors name the field)."""
    from crowdlab.personas.sampling.spec import TemplateAttribute, categories_of

    bg: BackgroundSpec | None = spec.background
    if bg is None:
        return
    names = set(spec.names)
    if "background" in names:
        raise SpecError("background", "an attribute is already named 'background'")
    groups = [("mention", bg.mention), ("context", bg.context), ("gate.fields", bg.gate_fields)]
    groups += [("gate.tolerance", list(bg.gate.tolerance)), ("gate.synonyms", list(bg.gate.synonyms))]
    for label, items in groups:
        for i, name in enumerate(items):
            if name not in names:
                raise SpecError(f"background.{label}[{i}]", f"no attribute named {name!r} (attributes: {spec.names})")
    for name in bg.gate_fields:
        if isinstance(spec.attribute(name), TemplateAttribute):
            raise SpecError("background.gate.fields", f"{name!r} is a template; the gate checks single facts")
    for name, table in bg.gate.synonyms.items():
        values = categories_of(spec.attribute(name))
        for key in table:
            if values is not None and key not in values:
                raise SpecError(f"background.gate.synonyms[{name}][{key}]", f"{name!r} never takes the value {key!r}")
    if bg.language_from is not None:
        if bg.language_from not in names:
            raise SpecError("background.language_from", f"no attribute named {bg.language_from!r}")
        if categories_of(spec.attribute(bg.language_from)) is None:
            raise SpecError("background.language_from", f"{bg.language_from!r} is not categorical")
