"""With the shipped sampling settings no structured answer can be cut off by max_tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from crowdlab.experiments import expand_design, load_config
from crowdlab.experiments.scenarios import make_scenario

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "configs").glob("*.yaml"))
LLM_BACKENDS = {"vllm", "openai", "transformers"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_max_tokens_cover_the_capped_answer(path: Path) -> None:
    for condition in expand_design(load_config(path)):
        config = condition.config
        if not {backend.kind for _, backend, _ in config.model_shares()} & LLM_BACKENDS:
            continue
        scenario = make_scenario(config.scenario)
        if not hasattr(scenario, "max_answer_tokens"):  # only the beauty contest states its bound
            continue
        assert config.sampling.max_tokens >= scenario.max_answer_tokens(), condition.factors
