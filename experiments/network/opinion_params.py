"""Parameters of the opinion-dynamics scenario (``scenario: {kind: opinion}``).

Kept apart from the scenario class so the scenario registry can import it without a cycle.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class InitialStance(BaseModel):
    """Round-1 stance: ``mean`` plus a shift per persona attribute value, plus Gaussian noise
    (``sd``) drawn from the agent id and ``seed``, clipped to the scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float = 4.0
    sd: float = Field(1.0, ge=0)
    shift: dict[str, dict[str, float]] = Field(default_factory=dict, description="{column: {value: shift}}")
    seed: int = 0


class MessageSettings(BaseModel):
    """Posts: each round an agent may write a message; next round it reads its in-neighbours' posts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_chars: int = Field(280, description="the message answer field's length cap")
    k: int = Field(5, description="at most k messages shown to an agent (the rest are counted)")
    select: Literal["recent", "sample"] = Field(
        "recent", description="recent: the k latest (newest round first, then lowest sender id); "
                              "sample: a seeded random k")
    window: int = Field(1, description="rounds of posts an agent can read (1: last round's)")

    @model_validator(mode="after")
    def _check(self) -> "MessageSettings":
        if self.k <= 0:
            raise ValueError(f"k: must be > 0, got {self.k}")
        if self.max_chars <= 0:
            raise ValueError(f"max_chars: must be > 0, got {self.max_chars}")
        if self.window <= 0:
            raise ValueError(f"window: must be > 0, got {self.window}")
        return self


class Intervention(BaseModel):
    """At ``round``, a chosen set of agents (the ``share`` with most listeners, or a seeded random
    ``share``) posts ``message`` in place of its own; with ``stance`` they also hold that stance
    from then on (committed agents). A design factor: ``scenario.intervention: [null, {...}]``
    runs control and treatment as conditions of one experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    round: int = Field(2, description="round the message is posted in (read from the next round)")
    seeders: Literal["top_degree", "random"] = "top_degree"
    share: float = Field(0.01, description="share of agents who post it")
    message: str = "Raising the minimum wage lifts millions out of poverty."
    stance: float | None = Field(None, description="stance the seeders hold from `round` on (none: their own)")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> "Intervention":
        if self.round < 1:
            raise ValueError(f"round: must be >= 1, got {self.round}")
        if not 0 < self.share <= 1:
            raise ValueError(f"share: must lie in (0, 1], got {self.share}")
        return self


class OpinionParams(BaseModel):
    """A policy question answered on a scale each round, after reading the network's stances
    (and posts, with ``messages``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["opinion"] = "opinion"
    name: str = "opinion"
    question: str = "Should the government raise the minimum wage?"
    low: float = 1.0
    high: float = 7.0
    low_label: str = "strongly oppose"
    high_label: str = "strongly support"
    initial: InitialStance = Field(default_factory=InitialStance)
    change_threshold: float = Field(0.5, gt=0, description="a stance moved by at least this much has changed")
    messages: MessageSettings | None = None
    intervention: Intervention | None = None

    @model_validator(mode="after")
    def _check(self) -> "OpinionParams":
        if self.low >= self.high:
            raise ValueError(f"low: must be below high ({self.high}), got {self.low}")
        iv = self.intervention
        if iv is not None and iv.stance is not None and not self.low <= iv.stance <= self.high:
            raise ValueError(f"intervention.stance: must lie in [{self.low:g}, {self.high:g}], got {iv.stance}")
        return self
