"""Expanding a design into conditions: the factors' levels crossed in the order written.

Each level overrides the base config at a dotted path (``scenario.p``, ``backend.tau``,
``models.qwen.backend.temperature`` where a list item is named by its label or index, or a whole
``backend``), and every resulting condition config is validated before the run starts.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from typing import Any

from crowdlab.experiments.config import ExperimentConfig, validate_config
from crowdlab.experiments.errors import ConfigError


@dataclass(frozen=True)
class Condition:
    """One cell of the design: id ``c000``..., its factor levels as text, its full config."""

    condition_id: str
    index: int
    factors: dict[str, str]
    config: ExperimentConfig


def level_text(value: Any) -> str:
    """A factor level as it appears in the factor column (JSON for mappings and lists)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _set_path(data: dict[str, Any], path: str, value: Any, field: str) -> None:
    keys = path.split(".")
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            matches = [j for j, item in enumerate(node) if isinstance(item, dict) and item.get("label") == key]
            if not matches and key.isdigit() and int(key) < len(node):
                matches = [int(key)]
            if not matches:
                raise ConfigError(field, f"no list item labelled {key!r}")
            key = matches[0]  # type: ignore[assignment]
        elif not isinstance(node, dict):
            raise ConfigError(field, f"cannot set {path!r}: {'.'.join(keys[:i])} is not a mapping")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and node.get(key) is None:
                raise ConfigError(field, f"{'.'.join(keys[: i + 1])} is not set in the base config")
            node = node[key]


def expand_design(config: ExperimentConfig) -> list[Condition]:
    """All conditions in design order; each validated (errors name the factor)."""
    factors = config.design.factors
    base = config.model_dump(mode="json", exclude_none=True)
    names = list(factors)
    conditions: list[Condition] = []
    for index, levels in enumerate(itertools.product(*(factors[n] for n in names))):
        data = copy.deepcopy(base)
        for name, level in zip(names, levels):
            _set_path(data, name, level, f"design.factors.{name}")
        where = f"design.factors ({', '.join(f'{n}={level_text(v)}' for n, v in zip(names, levels))}): " if names else ""
        conditions.append(Condition(
            condition_id=f"c{index:03d}", index=index,
            factors={n: level_text(v) for n, v in zip(names, levels)},
            config=validate_config(data, where=where),
        ))
    return conditions
