"""Configuration of the p-beauty contest (guess p x the average), validated with pydantic."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Variant = Literal["P1", "P2", "P3", "P4", "P5", "P6", "P7"]

STEP_BY_STEP: frozenset[str] = frozenset({"P2", "P3", "P4", "P5", "P6", "P7"})

#: What an agent sees of its own past rounds: nothing, its picks, or its picks and reasoning.
Memory = Literal["none", "numbers", "reasoning"]


_FRACTION = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*/\s*([0-9]+(?:\.[0-9]*)?)\s*")


def parse_fraction(text: str) -> float:
    """``"2/3"`` -> 0.666..., the way people write the game's multiplier."""
    match = _FRACTION.fullmatch(text)
    if not match:
        raise ValueError(f"expected a number or a fraction such as 2/3, got {text!r}")
    numerator, denominator = (float(g) for g in match.groups())
    if denominator == 0:
        raise ValueError(f"{text!r} divides by zero")
    return numerator / denominator


class BeautyContestParams(BaseModel):
    """Rules and prompt variant of one beauty contest condition.

    The paper's P7 ("5 + 1/2 of the average") is ``variant: P7, offset: 5, p: 0.5``; P6 (groups)
    is ``variant: P6, groups: k`` with k >= 2.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["beauty_contest"] = "beauty_contest"
    p: float = Field(2 / 3, gt=0, description="multiplier of the average: a number or a fraction, e.g. 2/3")
    offset: float = Field(0.0, description="added to p x average (paper's P7: 5)")
    lo: float = 0.0
    hi: float = 100.0
    groups: int = Field(1, ge=1, description="agents split into this many independent games")
    variant: Variant = "P1"
    mention_classic: bool = Field(False, description="tell agents this is the classic game")
    max_reasoning_chars: int = Field(
        200, ge=20, le=4000,
        description="cap on the answer's reasoning string (plain ASCII, enforced by structured output); "
                    "sampling.max_tokens must cover it plus about 40 tokens of JSON")
    memory: Memory = Field(
        "numbers", description="own past shown each round: none, numbers (own picks and their distance to "
                               "the target), or reasoning (picks plus the start of the reasoning given; "
                               "variants without reasoning, P1, show the picks only)")
    memory_chars: int = Field(80, ge=10, le=400, description="remembered reasoning per round, in characters")
    integer_only: bool = False

    @field_validator("p", mode="before")
    @classmethod
    def _fraction(cls, value: Any) -> Any:
        """``p: 2/3`` (YAML reads it as the string "2/3") is exactly 2/3, not a rounded 0.6667."""
        if isinstance(value, str) and "/" in value:
            return parse_fraction(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> "BeautyContestParams":
        if self.lo >= self.hi:
            raise ValueError(f"lo ({self.lo}) must be below hi ({self.hi})")
        if self.variant == "P6" and self.groups < 2:
            raise ValueError("variant P6 is the group game: set groups >= 2")
        if self.variant == "P7" and self.offset == 0:
            raise ValueError("variant P7 needs an offset (the paper: offset 5, p 0.5)")
        return self

    @property
    def reasoning(self) -> bool:
        return self.variant in STEP_BY_STEP

    def p_text(self) -> str:
        """``2/3`` for 0.6667, ``51/100`` for 0.51, else the decimal."""
        frac = Fraction(self.p).limit_denominator(100)
        if abs(float(frac) - self.p) < 1e-3 and frac.denominator != 1:
            return f"{frac.numerator}/{frac.denominator}"
        return f"{self.p:g}"
