"""The pydantic base every backend's config extends; ``build()`` makes the backend.

A backend config is a frozen pydantic model with a ``kind`` literal (the union discriminator),
an optional ``label`` (the ``model`` column of decisions) and whatever the backend needs.
``build`` imports heavy engines lazily so that validating a config never loads vLLM or torch.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from crowdlab.experiments.backends.base import Backend


class BackendSettings(BaseModel):
    """Common part of every backend config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    label: str | None = None

    def build(self) -> Backend:
        """A new backend instance (the runner caches one per config per process)."""
        raise NotImplementedError

    def default_label(self) -> str:
        """The ``model`` column value when ``label`` is not given (LLM configs: the model id)."""
        return self.kind

    def required_persona_columns(self) -> set[str]:
        """Persona columns this backend reads (checked before a run starts)."""
        return set()

    def display_label(self) -> str:
        return self.label or self.default_label()


class LocalModelSettings(BackendSettings):
    """Common part of backends that load a model themselves (vLLM offline, transformers)."""

    model: str = Field(description="local model folder or Hugging Face hub id")
    revision: str | None = None
    chat_template: str | None = Field(None, description="Jinja file or text; needed if the model has none")

    def default_label(self) -> str:
        return self.model
