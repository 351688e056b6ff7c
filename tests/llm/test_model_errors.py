"""Bad model references fail before any engine starts, with the model named in the message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from crowdlab.experiments.backends.model_ref import BackendError, folder_fingerprint
from crowdlab.experiments.backends.transformers_local import TransformersBackendConfig
from crowdlab.experiments.backends.vllm_offline import VLLMBackendConfig, cached_engines

CONFIGS = [VLLMBackendConfig, TransformersBackendConfig]


@pytest.mark.parametrize("config_cls", CONFIGS)
def test_missing_model_path_names_the_path(config_cls, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    engines_before = cached_engines()
    with pytest.raises(BackendError, match="no-such-model.*does not exist"):
        config_cls(model=str(missing)).build()
    assert cached_engines() == engines_before


@pytest.mark.parametrize("config_cls", CONFIGS)
def test_folder_without_config_is_rejected(config_cls, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="not a model folder"):
        config_cls(model=str(tmp_path)).build()


@pytest.mark.parametrize("config_cls", CONFIGS)
def test_model_without_chat_template_is_rejected(config_cls, tiny_model_without_template: Path) -> None:
    with pytest.raises(BackendError, match="tiny-plain.*has no chat template"):
        config_cls(model=str(tiny_model_without_template)).build()


def test_chat_template_in_config_makes_a_plain_model_usable(tiny_model_without_template: Path) -> None:
    template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    backend = VLLMBackendConfig(model=str(tiny_model_without_template), chat_template=template).build()
    assert backend.describe()["chat_template"] == "custom"


def test_uncached_hub_id_fails_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError, match="crowdlab-test/not-a-model.*HF_HUB_OFFLINE"):
        VLLMBackendConfig(model="crowdlab-test/not-a-model").build()


def test_describe_has_model_revision_and_engine_options(tiny_model: Path) -> None:
    backend = VLLMBackendConfig(model=str(tiny_model), gpu_memory_utilization=0.2, max_model_len=512).build()
    info = backend.describe()
    assert info["backend"] == "vllm"
    assert info["model"] == str(tiny_model)
    assert info["revision"] == folder_fingerprint(tiny_model)
    assert info["engine_options"]["gpu_memory_utilization"] == 0.2
    assert info["engine_options"]["max_model_len"] == 512
    assert backend.name == str(tiny_model)


def test_fingerprint_changes_with_the_weights(tiny_model: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_model, tmp_path / "copy"))
    assert folder_fingerprint(copy) == folder_fingerprint(tiny_model)
    with (copy / "model.safetensors").open("ab") as handle:
        handle.write(b"\0")
    assert folder_fingerprint(copy) != folder_fingerprint(tiny_model)


def test_engine_options_come_from_config(tiny_model: Path) -> None:
    config = VLLMBackendConfig(
        model=str(tiny_model), tensor_parallel_size=2, enforce_eager=True,
        engine_kwargs={"max_num_seqs": 8},
    )
    options = config.engine_options(str(tiny_model))
    assert options["tensor_parallel_size"] == 2
    assert options["enforce_eager"] is True
    assert options["max_num_seqs"] == 8
    assert options["enable_prefix_caching"] is True


def test_bad_config_field_is_named() -> None:
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VLLMBackendConfig(model="x", gpu_memory_utilization=1.5)
