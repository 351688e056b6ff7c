"""Scenario registry: a scenario config (discriminated by ``kind``) -> a Scenario object.

To add a scenario: write its params model with ``kind: Literal["name"]`` and its class, add the
params model to ``ScenarioConfig`` and one entry to ``_BUILDERS``.
"""

from __future__ import annotations

from typing import Annotated, Callable, Union

from pydantic import Field

from crowdlab.experiments.scenarios.base import History, Scenario
from crowdlab.experiments.scenarios.beauty_contest import BeautyContest
from crowdlab.experiments.scenarios.beauty_params import BeautyContestParams
from crowdlab.experiments.scenarios.declarative import DeclarativeScenario
from crowdlab.experiments.scenarios.declarative_params import DeclarativeParams
from crowdlab.experiments.network.opinion_params import OpinionParams

ScenarioConfig = Annotated[Union[BeautyContestParams, DeclarativeParams, OpinionParams], Field(discriminator="kind")]


def _opinion(params: OpinionParams) -> Scenario:
    from crowdlab.experiments.network.opinion import OpinionScenario  # imports scenarios.base

    return OpinionScenario(params)


_BUILDERS: dict[str, Callable[..., Scenario]] = {"beauty_contest": BeautyContest, "declarative": DeclarativeScenario,
                                                 "opinion": _opinion}


def make_scenario(config: BeautyContestParams | DeclarativeParams | OpinionParams) -> Scenario:
    """The scenario object for one condition's validated parameters."""
    return _BUILDERS[config.kind](config)


__all__ = ["BeautyContest", "BeautyContestParams", "DeclarativeParams", "DeclarativeScenario", "History", "Scenario", "ScenarioConfig", "make_scenario"]
