"""Backend registry: a backend config (pydantic, discriminated by ``kind``) -> a Backend.

Adding a kind is two lines: import its config class (a ``BackendSettings`` subclass with
``kind: Literal["name"]`` and a ``build()`` that imports the engine lazily) and add it to the
``BackendConfig`` union below.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from crowdlab.experiments.backends.base import (
    Backend, Message, RequestBatch, ResponseBatch, SamplingSettings,
)
from crowdlab.experiments.backends.baseline import FormulaBaselineConfig
from crowdlab.experiments.backends.behavioral import BehavioralConfig
from crowdlab.experiments.backends.dummy import DummyConfig
from crowdlab.experiments.backends.openai_compat import OpenAIBackendConfig
from crowdlab.experiments.backends.simulated_gpu import SimulatedGPUConfig
from crowdlab.experiments.backends.transformers_local import TransformersBackendConfig
from crowdlab.experiments.backends.vllm_offline import VLLMBackendConfig
from crowdlab.experiments.backends.settings import BackendSettings
from crowdlab.experiments.network.dynamics import OpinionDynamicsConfig

BackendConfig = Annotated[
    Union[
        BehavioralConfig,
        FormulaBaselineConfig,
        DummyConfig,
        VLLMBackendConfig,
        OpenAIBackendConfig,
        TransformersBackendConfig,
        SimulatedGPUConfig,
        OpinionDynamicsConfig,
    ],
    Field(discriminator="kind"),
]

_ADAPTER: TypeAdapter[BackendSettings] = TypeAdapter(BackendConfig)


def backend_config(data: dict | BackendSettings) -> BackendSettings:
    """Validate a backend config dict (pydantic errors name the offending field)."""
    return data if isinstance(data, BackendSettings) else _ADAPTER.validate_python(data)


def make_backend(config: dict | BackendSettings) -> Backend:
    """A new backend for ``config`` (a dict or a validated config)."""
    return backend_config(config).build()


__all__ = [
    "Backend", "BackendConfig", "BackendSettings", "BehavioralConfig", "DummyConfig", "Message",
    "RequestBatch", "ResponseBatch", "SamplingSettings", "SimulatedGPUConfig", "backend_config", "make_backend",
]
