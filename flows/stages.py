"""The pipeline's stages on Prefect work pools: a deployable population flow, and how the
pipeline hands a stage to a pool and waits for it.

A config may name a work pool per stage (``population.backgrounds.work_pool``, ``work_pool`` for
the experiment), so backgrounds written by a small model on one kind of worker and decisions by
a large one on GPU workers stay one pipeline run. ``prefect.yaml`` declares one deployment per
stage (``crowdlab-population/stage``, ``crowdlab-experiment/stage``); for another pool the
pipeline registers a copy of that deployment on it (``stage-<pool>``: same entrypoint, working
directory and parameters), runs it with ``run_deployment`` as a subflow of the pipeline run and
waits. The stage flows take the pipeline's own parameters and call the same flows the pipeline
calls in-process (``personas_flow``, ``experiment_flow``), so a stage does the same work on a
worker as in the pipeline's process, into the same run folder (a folder every worker sees at
the same path).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow

from crowdlab import experiments
from crowdlab.experiments.errors import UserError
from crowdlab.experiments.redaction import has_redactions, seal, unseal

log = logging.getLogger(__name__)

#: The deployment of each stage that prefect.yaml declares (flow name / deployment name).
STAGE_DEPLOYMENTS = {"population": "crowdlab-population/stage", "experiment": "crowdlab-experiment/stage"}
#: The config field that names each stage's work pool (what an error names).
POOL_FIELDS = {"population": "population.backgrounds.work_pool", "experiment": "work_pool"}
POLL_S = 2.0


def stage_pools(config: experiments.ExperimentConfig) -> dict[str, str]:
    """The stages a config hands to a work pool: ``{stage: pool}`` (empty: all in-process)."""
    pools = {"population": config.population.backgrounds.work_pool if config.population.backgrounds else None,
             "experiment": config.work_pool}
    return {stage: pool for stage, pool in pools.items() if pool}


def population_run_name() -> str:
    from crowdlab.flows.pipeline import experiment_run_name

    return f"population {experiment_run_name()}"


@flow(name="crowdlab-population", flow_run_name=population_run_name, log_prints=False)
def population_flow(config_path: str, run_id: str, runs_root: str = "data/runs",
                    overrides: dict[str, Any] | None = None) -> str:
    """The pipeline's population stage: sample the personas and write their LLM backgrounds (with
    the gate) into ``<run_dir>/population/``, resumable. The pipeline has already checked the
    config and readied that folder; this is what it runs when the stage names a work pool.

    Args:
        config_path: Experiment config (YAML) with population.backgrounds, as the pipeline was given it.
        run_id: The pipeline run's id (the population goes into that run's folder).
        runs_root: Folder that holds <experiment>/<run_id>/.
        overrides: Config fields the pipeline run replaced by dotted name, e.g. {"population.n": 500}.
    """
    from crowdlab.experiments.prepare import background_backend, population_path
    from crowdlab.experiments.storage import run_path
    from crowdlab.flows.personas_flow import personas_flow

    config = experiments.load_config(config_path, unseal(dict(overrides or {})))
    pop = config.population
    if pop.backgrounds is None:
        raise experiments.ConfigError("population.backgrounds", "the population stage writes backgrounds: "
                                      "the config has no population.backgrounds")
    out = population_path(run_path(runs_root, config.experiment, run_id))
    return personas_flow(str(pop.spec), int(pop.n or 0), pop.seed, str(out), pop.backgrounds.shard_size,
                         background_backend(config))


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def stage_deployment(stage: str, pool: str) -> str:
    """``flow/deployment`` that runs ``stage`` on ``pool``, registered if need be; ``UserError``
    (naming the config field) when the pool is missing, paused or has no worker online, or the
    stage's deployment from prefect.yaml is not registered. Nothing runs here."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import WorkPoolStatus
    from prefect.exceptions import ObjectNotFound

    field, template_name = POOL_FIELDS[stage], STAGE_DEPLOYMENTS[stage]
    if not _api_url():
        raise UserError(field, f"a stage on work pool {pool!r} needs the Prefect server its workers poll: set "
                        "PREFECT_API_URL (without it the run has a temporary server of its own, with no workers)")
    with get_client(sync_client=True) as client:
        try:
            work_pool = client.read_work_pool(pool)
        except ObjectNotFound:
            raise UserError(field, f"work pool {pool!r} does not exist on the Prefect server at {_api_url()}: "
                            f"create it (prefect work-pool create {pool} --type process) and start a worker "
                            f"on it (prefect worker start --pool {pool})") from None
        if work_pool.is_paused or work_pool.status == WorkPoolStatus.PAUSED:
            raise UserError(field, f"work pool {pool!r} is paused: resume it (prefect work-pool resume {pool})")
        if work_pool.status != WorkPoolStatus.READY:
            raise UserError(field, f"work pool {pool!r} has no worker online: start one "
                            f"(prefect worker start --pool {pool}), then run again")
        try:
            template = client.read_deployment_by_name(template_name)
        except ObjectNotFound:
            raise UserError(field, f"deployment {template_name} is not registered on the Prefect server at "
                            f"{_api_url()}: run `prefect --no-prompt deploy --all` in the crowdlab checkout "
                            "(or `crowdlab ui`)") from None
        if template.work_pool_name == pool:
            return template_name
        name = f"{template.name}-{pool}"
        client.create_deployment(  # an upsert: the same name on the same flow is updated
            flow_id=template.flow_id, name=name, work_pool_name=pool, entrypoint=template.entrypoint,
            path=template.path, pull_steps=template.pull_steps, parameters=template.parameters,
            parameter_openapi_schema=template.parameter_openapi_schema, tags=template.tags,
            enforce_parameter_schema=template.enforce_parameter_schema, job_variables=template.job_variables,
            description=f"{template.description or template_name} (on work pool {pool}, made by the pipeline)")
        flow_name = template_name.split("/")[0]
        log.info("stage %s runs on work pool %s as %s/%s", stage, pool, flow_name, name)
        return f"{flow_name}/{name}"


def stage_parameters(config_path: str, run_id: str, runs_root: str, overrides: dict[str, Any],
                     pools: dict[str, str]) -> dict[str, Any]:
    """The parameters a stage's flow run gets: absolute paths (a worker starts in the checkout,
    not in the pipeline's folder) and the overrides, which must not hold a credential given as a
    value: that stays in this process's memory (``redaction.seal``) and cannot reach a worker."""
    sealed = seal(overrides) or None
    if sealed and has_redactions(sealed):
        field = POOL_FIELDS[next(iter(pools))]
        raise UserError(field, "a credential given as a value in the overrides cannot reach a stage on a work "
                        "pool (it stays in this process); name an environment variable instead (api_key_env)")
    return {"config_path": str(Path(config_path).resolve()), "run_id": run_id,
            "runs_root": str(Path(runs_root).resolve()), "overrides": sealed}


def run_stage(stage: str, deployment: str, pool: str, parameters: dict[str, Any]) -> Any:
    """Run ``deployment`` as a subflow of the current flow run, wait for it, and raise a one-line
    ``UserError`` naming the stage's pool field when it did not complete."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(deployment, parameters=parameters, poll_interval=POLL_S)
    state = flow_run.state
    if state is None or not state.is_completed():
        what = state.name if state is not None else "no state"
        message = " ".join(((state.message if state is not None else "") or "").split())
        raise UserError(POOL_FIELDS[stage], f"the {stage} stage on work pool {pool!r} ended {what} "
                        f"(flow run {flow_run.name}){': ' + message if message else ''}")
    return flow_run


def record_stage_runs(run_dir: str | Path, ran: dict[str, Any]) -> None:
    """Write where each pooled stage ran into the run's manifest (``stages``: work pool, flow run
    name and id): the pools are left out of the config and its hash, so a run can resume on
    other pools, and this keeps the record of where it did run."""
    from crowdlab.experiments.storage import read_manifest, write_manifest

    manifest = read_manifest(Path(run_dir))
    manifest["stages"] = {**manifest.get("stages", {}), **ran}
    write_manifest(Path(run_dir), manifest)
