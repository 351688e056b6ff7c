"""Bad model references fail before any engine starts, with the model named in the message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crowdlab.experiments.backends.model_ref import BackendError, folder_fingerprint
from crowdlab.experiments.backends.transformers_local import TransformersBackendConfig
from crowdlab.experiments.backends.vllm_offline import VLLMBackendConfig, cached_engines

from crowdlab.flows.cli import app
from tests.conftest import REPO_ROOT as REPO, TINY_ENGINE

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


# --- a folder that vLLM cannot load: one line naming the folder and the reason -------------


def _broken_copy(tiny_model: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(tiny_model, tmp_path / name))


@pytest.mark.parametrize("config_cls", CONFIGS)
def test_truncated_weights_are_named_before_any_engine_starts(config_cls, tiny_model: Path, tmp_path: Path) -> None:
    copy = _broken_copy(tiny_model, tmp_path, "tiny-cut")
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    engines_before = cached_engines()
    with pytest.raises(BackendError, match=r"model folder '.*tiny-cut' cannot be loaded: model.safetensors is "
                                           r"truncated or corrupt"):
        config_cls(model=str(copy)).build()
    assert cached_engines() == engines_before


@pytest.mark.parametrize("broken, reason", [
    ({"config.json": "{not json"}, "config.json is not valid JSON"),
    ({"model.safetensors": None}, "no weight files"),
    ({"model.safetensors": "x" * 64}, "model.safetensors is not a safetensors file"),
])
def test_damaged_folders_are_named_with_the_reason(tiny_model: Path, tmp_path: Path, broken: dict, reason: str) -> None:
    copy = _broken_copy(tiny_model, tmp_path, "tiny-damaged")
    for name, text in broken.items():
        (copy / name).unlink()
        if text is not None:
            (copy / name).write_text(text)
    with pytest.raises(BackendError, match=f"tiny-damaged' cannot be loaded: {reason}"):
        VLLMBackendConfig(model=str(copy)).build()


def _contest(model: Path, tmp_path: Path) -> Path:
    import yaml

    config = {"experiment": "bad_model", "population": {"spec": str(REPO / "data/populations/general_adult.yaml"),
                                                        "n": 4, "seed": 1},
              "scenario": {"kind": "beauty_contest", "variant": "P1"},
              "backend": {"kind": "vllm", "model": str(model), **TINY_ENGINE}, "sampling": {"max_tokens": 32}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_names_a_truncated_model_in_one_line(tiny_model: Path, tmp_path: Path) -> None:
    copy = _broken_copy(tiny_model, tmp_path, "tiny-cut")
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes()[:4096])
    result = CliRunner().invoke(app, ["run", str(_contest(copy, tmp_path)), "--no-prefect",
                                      "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: backend:"), result.output
    assert "tiny-cut' cannot be loaded: model.safetensors is truncated or corrupt" in lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.vllm
@pytest.mark.slow
def test_engine_that_cannot_load_the_folder_stops_the_run_in_one_line(tiny_model: Path, tmp_path: Path) -> None:
    """The folder looks whole but vLLM refuses it when the engine starts (an architecture it does
    not know): the run stops with one line naming the folder and vLLM's reason, exit code 2."""
    import json

    copy = _broken_copy(tiny_model, tmp_path, "tiny-nosuch")
    config = json.loads((copy / "config.json").read_text())
    config.update(model_type="nosuch", architectures=["NoSuchForCausalLM"])
    (copy / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["run", str(_contest(copy, tmp_path)), "--no-prefect",
                                      "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert "vLLM could not start model" in errors[0] and "tiny-nosuch" in errors[0]
    assert "nosuch" in errors[0].split("tiny-nosuch", 1)[1]  # vLLM's reason, not only the name
    assert "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.vllm
def test_an_engine_that_cannot_start_stops_the_run_with_one_line(tiny_model: Path, tiny_engine_options: dict,
                                                                  personas_path: Path, tmp_path: Path) -> None:
    """A typo in engine_kwargs passes every check before the run, then fails as the engine starts:
    one line naming the model, exit code 2, the manifest says failed, no shard of error rows."""
    import json
    import subprocess
    import sys

    import yaml

    backend = {"kind": "vllm", "model": str(tiny_model), **tiny_engine_options,
               "engine_kwargs": {"no_such_engine_option": 1}}
    config = {"experiment": "engine", "population": {"personas": str(personas_path)},
              "scenario": {"kind": "beauty_contest"}, "backend": backend, "rounds": 1, "shard_size": 600}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "crowdlab.flows.cli", "run", str(path), "--no-prefect",
                             "--run-id", "e", "--runs-root", str(tmp_path / "runs")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: backend: vLLM could not start model") and "no_such_engine_option" in lines[-1]
    run_dir = tmp_path / "runs" / "engine" / "e"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"
    assert not (run_dir / "decisions").exists()
