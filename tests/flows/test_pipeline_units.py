"""Small pieces of the Prefect flow and of redaction, without a server."""

from __future__ import annotations

import pickle
import re
from types import SimpleNamespace

import pytest

from crowdlab.experiments import ConfigError, ShardFailedError, UserError
from crowdlab.experiments.backends.model_ref import BackendError
from crowdlab.experiments.redaction import REDACTED, redact, redact_text, seal, unseal
from crowdlab.flows.pipeline import _artifact_key, retry_unless_user_error


def test_artifact_keys_use_prefects_alphabet_and_keep_runs_apart() -> None:
    keys = [_artifact_key("paper_variants", run_id, "c000", "rep0", "round1")
            for run_id in ("Run_1", "run-1", "run_1", "20261129-101500-ab12cd")]
    assert all(re.fullmatch(r"[a-z0-9-]+", k) and len(k) <= 120 for k in keys)
    assert len(set(keys)) == len(keys)
    assert _artifact_key("demo", "srv", "summary") == "demo-srv-summary"


@pytest.mark.parametrize(("exc", "retry"), [
    (BackendError("model path '/x' does not exist"), False),
    (ConfigError("backend", "api_key_env names 'K' but it is empty"), False),
    (ShardFailedError("12 of 50 requests failed"), True),
    (OSError("connection reset"), True),
])
def test_retry_condition_retries_only_what_a_retry_can_fix(exc: BaseException, retry: bool) -> None:
    assert retry_unless_user_error(None, None, SimpleNamespace(data=exc)) is retry


def test_user_errors_survive_pickling_and_render_for_the_cli() -> None:
    err = ConfigError("run_id", "run 'a' exists; choose another run id", remedy=("overwrite", True))
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ConfigError) and isinstance(back, UserError)
    assert str(back) == "run_id: run 'a' exists; choose another run id or pass overwrite=True"
    assert back.render(cli=True) == "run_id: run 'a' exists; choose another run id or pass --overwrite"
    assert str(pickle.loads(pickle.dumps(BackendError("no model")))) == "backend: no model"


def test_redaction_covers_urls_and_secret_names_case_insensitively_and_nested() -> None:
    config = {
        "base_urls": ["http://user:sk-1@host:8000/v1", "https://h/v1?api_key=sk-2&x=1"],
        "api_key_env": "OPENAI_API_KEY", "max_tokens": 64,
        "extra_body": {"API_KEY": "sk-3", "nested": [{"Authorization": "Bearer sk-4"}, {"accessToken": "sk-5"}],
                       "client_secret": {"value": "sk-6"}, "temperature": 0.5},
    }
    public = redact(config)
    assert "sk-" not in repr(public)
    assert public["base_urls"] == [f"http://{REDACTED}@host:8000/v1", f"https://h/v1?api_key={REDACTED}&x=1"]
    assert public["api_key_env"] == "OPENAI_API_KEY" and public["max_tokens"] == 64
    assert public["extra_body"]["temperature"] == 0.5
    assert redact_text("POST ray://u:p@head:10001") == f"POST ray://{REDACTED}@head:10001"


def test_sealed_values_come_back_only_in_this_process() -> None:
    live = {"backend": {"base_urls": ["http://u:sk-9@h/v1"]}}
    public = seal(live)
    assert "sk-9" not in repr(public)
    assert unseal(public) == live
    assert unseal({"other": 1}) == {"other": 1}


def _pool_config(**changes: object) -> dict:
    config = {"experiment": "pools", "scenario": {"kind": "beauty_contest"}, "backend": {"kind": "dummy"},
              "population": {"spec": "spec.yaml", "n": 10, "backgrounds": {"backend": {"kind": "echo"}}}}
    config.update(changes)
    return config


def test_stage_pools_come_from_the_config_and_stay_out_of_its_hash() -> None:
    from crowdlab.experiments import validate_config
    from crowdlab.experiments.storage import config_hash
    from crowdlab.flows.stages import stage_pools

    plain = validate_config(_pool_config())
    pooled = validate_config(_pool_config(work_pool="gpu-large", population={
        "spec": "spec.yaml", "n": 10, "backgrounds": {"backend": {"kind": "echo"}, "work_pool": "gpu-small"}}))
    assert stage_pools(plain) == {}
    assert stage_pools(pooled) == {"population": "gpu-small", "experiment": "gpu-large"}
    # where a stage runs is not what it computes: the same run id resumes on other pools
    assert config_hash(pooled.model_dump(mode="json")) == config_hash(plain.model_dump(mode="json"))


@pytest.mark.parametrize(("changes", "field", "says"), [
    ({"work_pool": "gpu", "population": {"spec": "spec.yaml", "n": 10}}, "work_pool", "only the pipeline"),
    ({"work_pool": "gpu/large"}, "work_pool", "pattern"),
    ({"population": {"spec": "spec.yaml", "n": 10, "backgrounds": {"work_pool": ""}}},
     "population.backgrounds.work_pool", "pattern"),
])
def test_bad_work_pools_name_their_field(changes: dict, field: str, says: str) -> None:
    from crowdlab.experiments import validate_config

    with pytest.raises(ConfigError) as info:
        validate_config(_pool_config(**changes))
    assert info.value.field == field and says in info.value.message


def test_a_credential_in_the_overrides_cannot_travel_to_a_pool() -> None:
    from pathlib import Path

    from crowdlab.flows.stages import stage_parameters

    params = stage_parameters("c.yaml", "r1", "runs", {"population.n": 5}, {"population": "gpu-small"})
    assert params["config_path"] == str(Path("c.yaml").resolve()) and params["run_id"] == "r1"
    assert params["overrides"] == {"population.n": 5} and params["runs_root"].endswith("/runs")
    with pytest.raises(UserError) as info:
        stage_parameters("c.yaml", "r1", "runs", {"backend.base_urls": ["http://u:sk-1@h/v1"]}, {"experiment": "gpu"})
    assert info.value.field == "work_pool" and "api_key_env" in info.value.message


def test_a_pooled_stage_without_a_prefect_server_is_one_line(tmp_path, monkeypatch) -> None:
    """No PREFECT_API_URL: no worker could ever see the stage; refused before Prefect starts a server."""
    from crowdlab.flows.stages import stage_deployment

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(UserError) as info:
        stage_deployment("population", "gpu-small")
    assert info.value.field == "population.backgrounds.work_pool" and "PREFECT_API_URL" in info.value.message
