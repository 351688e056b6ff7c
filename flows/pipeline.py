"""Prefect flows: the table of contents of a crowdlab job, nothing more.

Every task calls a plain library function (``crowdlab.experiments`` step functions,
``crowdlab.analysis``); parameters are small (paths, ids, seeds); results live in the run
folder, not in task returns. Delete Prefect and ``crowdlab.experiments.run`` still does the
same job in one process.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact, create_markdown_artifact, create_progress_artifact, create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from crowdlab import experiments
from crowdlab.experiments.config import fresh_replicate
from crowdlab.experiments.errors import is_retryable
from crowdlab.experiments.redaction import seal, unseal
from crowdlab.experiments.runner import mark_failed
from crowdlab.flows.progress import notify
from crowdlab.experiments.storage import round_part_path


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: a failure the user must fix (a missing model folder, an
    empty key variable) is not retried; a transient one (a server down) is."""
    return is_retryable(state.data if isinstance(state.data, BaseException) else None)


@task(name="prepare-run", cache_policy=NO_CACHE)
def prepare_task(config: dict[str, Any], run_id: str | None, runs_root: str, overwrite: bool) -> experiments.RunHandle:
    return experiments.prepare_run(config, run_id=run_id, runs_root=runs_root, overwrite=overwrite)


@task(name="plan-run", cache_policy=NO_CACHE)
def plan_task(config: dict[str, Any], runs_root: str) -> str | None:
    """The run's plan as Markdown (``crowdlab plan``); None, with a warning, when it cannot be made."""
    from crowdlab.experiments.plan import make_plan, plan_markdown

    try:
        return plan_markdown(make_plan(experiments.validate_config(config), runs_root))
    except Exception as exc:  # noqa: BLE001 - a plan that cannot be made must not stop the run
        get_run_logger().warning("no plan for this run: %s", exc)
        return None


@task(name="run-shard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_user_error, task_run_name="{condition_id}-rep{replicate}-round{round_}-shard{shard}")
def shard_task(run_dir: str, condition_id: str, replicate: int, round_: int, shard: int) -> experiments.ShardSummary:
    return experiments.run_shard(run_dir, condition_id, replicate, round_, shard)


@task(name="settle-round", cache_policy=NO_CACHE, task_run_name="{condition_id}-rep{replicate}-round{round_}-settle")
def settle_task(run_dir: str, condition_id: str, replicate: int, round_: int) -> experiments.RoundSummary:
    return experiments.settle_round(run_dir, condition_id, replicate, round_)


@task(name="run-on-ray-fleet", cache_policy=NO_CACHE)
def ray_fleet_task(handle: experiments.RunHandle, progress_id: Any) -> None:
    """All shards of a run on the Ray fleet's warm engine actors (they live as long as this task).

    Engines must stay loaded across rounds, so the fleet is driven by one long task rather than
    one Prefect task per shard; the progress artifact and the CLI bar still move per shard.
    """
    step = max(1, len(handle.cells) * handle.rounds * handle.n_shards // 100)

    def on_progress(done: int, total: int) -> None:
        notify(done, total)
        if done % step == 0 or done == total:
            update_progress_artifact(progress_id, progress=100.0 * done / total)

    experiments.execute(handle, on_progress)


@task(name="finish-run", cache_policy=NO_CACHE)
def finish_task(run_dir: str) -> experiments.RunResult:
    return experiments.finish_run(run_dir)


@task(name="write-report", cache_policy=NO_CACHE)
def report_task(run_dir: str, out: str | None = None) -> str:
    from crowdlab.analysis import write_report

    return str(write_report(run_dir, out))


def link_report(path: str | Path, experiment: str, run_id: str) -> None:
    """The HTML report as a link artifact of the current flow run, keyed per run."""
    create_link_artifact(link=Path(path).resolve().as_uri(), link_text=Path(path).name,
                         key=_artifact_key("report", experiment, run_id),
                         description=f"HTML report of run {run_id} ({experiment})")


def link_run_folder(run_dir: str | Path, experiment: str, run_id: str) -> None:
    """The run folder (decisions, rounds, population, manifest) as a link artifact, keyed per run."""
    create_link_artifact(link=Path(run_dir).resolve().as_uri(), link_text=f"{experiment}/{run_id}",
                         key=_artifact_key("run-folder", experiment, run_id),
                         description=f"Run folder of {run_id} ({experiment}): Parquet tables and manifest")


def _round_rows(run_dir: str, condition_id: str, replicate: int, round_: int) -> list[dict[str, Any]]:
    """The settled round's rows for a table artifact: pooled ("all") first, then each group."""
    table = pq.read_table(round_part_path(Path(run_dir), condition_id, replicate, round_))
    keep = ["group", "n", "n_valid", "n_invalid", "mean", "median", "std", "target", "winning_value", "n_winners"]
    rows = sorted(table.select([c for c in keep if c in table.column_names]).to_pylist(), key=lambda r: r["group"])
    if len(rows) == 2:  # one group: its row repeats the pooled one
        rows = rows[:1]
    for row in rows:
        row["group"] = "all" if row["group"] == -1 else row["group"]
    return [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()} for row in rows]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _artifact_key(*parts: object) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes.

    Each part is folded into that alphabet; a part that changes on the way ("Run_1" -> "run-1")
    gets a short checksum of its original spelling, so "Run_1" and "run-1" keep apart. Keys are
    per run (experiment and run id in every key): a new run never overwrites another's artifacts.
    """
    folded = []
    for part in (str(p) for p in parts):
        clean = re.sub(r"[^a-z0-9-]+", "-", part.lower()).strip("-")
        folded.append(clean if clean == part else f"{clean}-{zlib.crc32(part.encode()):08x}"[:60])
    return "-".join(f for f in folded if f)[:120].strip("-")


def _experiment_name(config_path: Any, overrides: Any) -> str:
    """The experiment a flow run's parameters name (cheap: the YAML's ``experiment`` key)."""
    if isinstance(overrides, dict) and isinstance(overrides.get("experiment"), str):
        return overrides["experiment"]
    try:
        data = yaml.safe_load(Path(str(config_path)).read_text(encoding="utf-8"))
        return str(data["experiment"])
    except Exception:  # the flow itself reports a bad config; the name only needs a fallback
        return Path(str(config_path)).stem


def experiment_run_name() -> str:
    """``<experiment>/<run id>`` for the UI's run list (``new`` until prepare picks an id)."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    run_id = params.get("run_id") or ("fresh-replicate" if params.get("fresh_seed") else "new")
    return f"{_experiment_name(params.get('config_path'), params.get('overrides'))}/{run_id}"


def _rename_flow_run(name: str) -> None:
    """Give the current flow run its final name once the run id is known."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if flow_run.id and flow_run.name != name:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=name)


@flow(name="crowdlab-experiment", flow_run_name=experiment_run_name,
      task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=False)
def experiment_flow(config_path: str = "experiments/configs/demo.yaml", run_id: str | None = None,
                    runs_root: str = "data/runs", overwrite: bool = False,
                    overrides: dict[str, Any] | None = None, fresh_seed: bool = False,
                    report: bool = False) -> dict[str, Any]:
    """Run (or resume) one experiment: population -> rounds (one task per shard) -> summary.

    Args:
        config_path: Experiment config (YAML), relative to the worker's folder (the crowdlab checkout).
        run_id: Run id; an existing id with the same config resumes. Empty: a new id from the time and config.
        runs_root: Folder that holds <experiment>/<run_id>/.
        overwrite: Replace an existing run id that has a different config (its files are deleted).
        overrides: Config fields to replace by dotted name, e.g. {"rounds": 2, "population.n": 500}.
        fresh_seed: Start a new replicate: a new run id and a seed derived from it (the nightly schedule).
        report: Write the HTML report when the run finishes and link it as an artifact of this run.
    """
    run_logger = get_run_logger()
    overrides = unseal(dict(overrides or {}))  # credentials the CLI kept out of Prefect's database
    if fresh_seed:  # the same rule as `crowdlab run --fresh-seed`
        run_id, overrides = fresh_replicate(run_id, overrides)
    config = experiments.load_config(config_path, overrides).model_dump(mode="json")
    plan = plan_task(config, runs_root)  # before anything runs; the run's first artifact
    handle = prepare_task(config, run_id, runs_root, overwrite)
    if plan:
        create_markdown_artifact(key=_artifact_key(handle.experiment, handle.run_id, "plan"), markdown=plan,
                                 description=f"Plan of run {handle.run_id}: calls, tokens, wall time")
    try:
        return _play(handle, config, report, run_logger)
    except BaseException as exc:
        mark_failed(handle.run_dir, exc)
        raise


def _play(handle: experiments.RunHandle, config: dict[str, Any], report: bool, run_logger: Any) -> dict[str, Any]:
    """Everything after prepare: shards and rounds, finish, artifacts (the manifest says failed if it raises)."""
    _rename_flow_run(f"{handle.experiment}/{handle.run_id}")
    run_logger.info("run %s: %d cells x %d rounds x %d shards in %s", handle.run_id, len(handle.cells),
                    handle.rounds, handle.n_shards, handle.run_dir)
    total = len(handle.cells) * handle.rounds * handle.n_shards
    done = 0
    progress_id = create_progress_artifact(progress=0.0, key=_artifact_key("progress", handle.experiment, handle.run_id),
                                           description=f"Shards done for run {handle.run_id}")
    if config["dispatch"]["kind"] == "ray":
        ray_fleet_task(handle, progress_id)
    for condition_id, replicate in handle.cells:
        for round_ in range(1, handle.rounds + 1):
            if config["dispatch"]["kind"] != "ray":
                futures = shard_task.map(handle.run_dir, condition_id, replicate, round_, range(handle.n_shards))
                for future in futures:
                    future.result()  # raises if a shard failed after its retries: the round cannot settle
                    done += 1
                    notify(done, total)
                update_progress_artifact(progress_id, progress=100.0 * done / total)
            summary = settle_task(handle.run_dir, condition_id, replicate, round_)
            create_table_artifact(
                key=_artifact_key(handle.experiment, handle.run_id, condition_id, f"rep{replicate}", f"round{round_}"),
                table=_round_rows(handle.run_dir, condition_id, replicate, round_),
                description=(f"Run {handle.run_id}, {condition_id}, replicate {replicate}, round {round_}: "
                             f"mean {_fmt(summary.mean)}, target {_fmt(summary.target)}, invalid {summary.n_invalid}"),
            )
    result = finish_task(handle.run_dir)
    create_markdown_artifact(key=_artifact_key(handle.experiment, handle.run_id, "summary"),
                             markdown=run_summary_markdown(result.run_dir),
                             description=f"Summary of run {handle.run_id}")
    outcome = {"run_dir": str(result.run_dir), "run_id": result.run_id, "status": result.status,
               "decisions": result.n_decisions, "invalid": result.n_invalid}
    if report:
        outcome["report"] = report_task(handle.run_dir)
        link_report(outcome["report"], handle.experiment, handle.run_id)
    return outcome


def run_summary_markdown(run_dir: str | Path) -> str:
    from crowdlab.analysis import summary_markdown

    return summary_markdown(run_dir)


def report_run_name() -> str:
    from prefect.runtime import flow_run

    run_dir = Path(str(flow_run.parameters.get("run_dir", "run")))
    return f"report {run_dir.parent.name}/{run_dir.name}"


@flow(name="crowdlab-report", flow_run_name=report_run_name, log_prints=False)
def report_flow(run_dir: str, out: str | None = None) -> str:
    """Write a run's HTML report, link it and attach its summary as a markdown artifact.

    Args:
        run_dir: A run folder, <runs_root>/<experiment>/<run_id>.
        out: Where to write the HTML file; empty: report.html in the run folder.
    """
    return _report_and_links(run_dir, out)


def _report_and_links(run_dir: str, out: str | None) -> str:
    from crowdlab.analysis import write_report

    path = write_report(run_dir, out)
    experiment, run_id = Path(run_dir).parent.name, Path(run_dir).name
    link_report(path, experiment, run_id)
    link_run_folder(run_dir, experiment, run_id)
    create_markdown_artifact(key=_artifact_key("report", experiment, run_id, "summary"),
                             markdown=run_summary_markdown(run_dir), description=f"Report written to {path}")
    get_run_logger().info("report written to %s", path)
    return str(path)


def analysis_run_name() -> str:
    from prefect.runtime import flow_run

    run_dir = Path(str(flow_run.parameters.get("run_dir", "run")))
    return f"analysis {run_dir.parent.name}/{run_dir.name}"


@flow(name="crowdlab-analysis", flow_run_name=analysis_run_name, log_prints=False)
def analysis_flow(run_dir: str, out: str | None = None) -> str:
    """The pipeline's last stage: the HTML report, its summary, and links to it and the run folder."""
    return _report_and_links(run_dir, out)


# -- the pipeline: population -> experiment -> analysis ----------------------------------------

@task(name="check-pipeline", cache_policy=NO_CACHE)
def check_pipeline_task(config: dict[str, Any], run_id: str, runs_root: str, overwrite: bool) -> str:
    """Every check of the three stages before any of them works: config, persona columns the
    scenario needs (backgrounds included), backends of both stages, run-id clash; then the
    population folder, cleared of another generation's shards. Returns that folder."""
    from crowdlab.experiments.prepare import open_population

    checked = experiments.preflight(config, run_id, runs_root, overwrite)
    return str(open_population(checked, run_id, runs_root, overwrite))


@task(name="check-work-pools", cache_policy=NO_CACHE)
def check_pools_task(pools: dict[str, str]) -> dict[str, str]:
    """Each stage that names a work pool: the pool exists, is not paused and has a worker online,
    and its deployment is registered there (``{stage: flow/deployment}``), before any work."""
    from crowdlab.flows.stages import stage_deployment

    return {stage: stage_deployment(stage, pool) for stage, pool in pools.items()}


@flow(name="crowdlab-pipeline", flow_run_name=experiment_run_name, log_prints=False)
def pipeline_flow(config_path: str = "experiments/configs/pipeline_backgrounds.yaml", run_id: str | None = None,
                  runs_root: str = "data/runs", overwrite: bool = False,
                  overrides: dict[str, Any] | None = None, fresh_seed: bool = False) -> dict[str, Any]:
    """Population (sampling, LLM backgrounds, the gate) -> experiment -> analysis, in one run folder.

    The backgrounds go to ``<run_dir>/population/`` one task per shard; an interrupted pipeline
    run again with the same run id skips the shards, rounds and report already written. A stage
    whose work pool the config names (``population.backgrounds.work_pool``, ``work_pool``) runs
    as that stage's deployment on the pool (``crowdlab.flows.stages``); the others in this process.

    Args:
        config_path: Experiment config (YAML) with ``population.backgrounds``, relative to the checkout.
        run_id: Run id; an existing id with the same config resumes. Empty: a new id from the time and config.
        runs_root: Folder that holds <experiment>/<run_id>/.
        overwrite: Replace an existing run id that has a different config.
        overrides: Config fields to replace by dotted name, e.g. {"population.n": 500}.
        fresh_seed: Start a new replicate: a new run id and a seed derived from it.
    """
    from crowdlab.experiments.prepare import new_run_id
    from crowdlab.flows import stages

    overrides = unseal(dict(overrides or {}))
    if fresh_seed:
        run_id, overrides = fresh_replicate(run_id, overrides)
    config = experiments.load_config(config_path, overrides)
    pop = config.population
    if pop.backgrounds is None:
        raise experiments.ConfigError("population.backgrounds", "the pipeline generates backgrounds: add "
                                      "population.backgrounds, or run the experiment flow")
    run_id = run_id or new_run_id(config)
    pools = stages.stage_pools(config)
    params = stages.stage_parameters(config_path, run_id, runs_root, overrides, pools) if pools else {}
    plan = plan_task(config.model_dump(mode="json"), runs_root)  # backgrounds and decisions, before any work
    deployments = check_pools_task(pools) if pools else {}
    out = check_pipeline_task(config.model_dump(mode="json"), run_id, runs_root, overwrite)
    if plan:
        create_markdown_artifact(key=_artifact_key(config.experiment, run_id, "plan"), markdown=plan,
                                 description=f"Plan of run {run_id}: calls per stage, tokens, wall time")
    ran: dict[str, Any] = {}  # where the pooled stages ran, for the manifest
    if "population" in deployments:
        ran["population"] = stages.run_stage("population", deployments["population"], pools["population"], params)
    else:
        from crowdlab.experiments.prepare import background_backend
        from crowdlab.flows.personas_flow import personas_flow

        personas_flow(str(pop.spec), int(pop.n or 0), pop.seed, out, pop.backgrounds.shard_size,
                      background_backend(config))
    if "experiment" in deployments:
        ran["experiment"] = stages.run_stage("experiment", deployments["experiment"], pools["experiment"],
                                             {**params, "overwrite": overwrite})
        from crowdlab.experiments.storage import run_path

        outcome = run_outcome(run_path(runs_root, config.experiment, run_id))
    else:
        outcome = experiment_flow(config_path, run_id=run_id, runs_root=runs_root, overwrite=overwrite,
                                  overrides=seal(overrides) or None)
    if ran:
        stages.record_stage_runs(outcome["run_dir"], {
            stage: {"work_pool": pools[stage], "flow_run": fr.name, "flow_run_id": str(fr.id)}
            for stage, fr in ran.items()})
    outcome["report"] = analysis_flow(outcome["run_dir"])
    outcome["population"] = out
    return outcome


def run_outcome(run_dir: str | Path) -> dict[str, Any]:
    """What ``experiment_flow`` returns, read from the run's manifest (a stage run on a work pool
    leaves its result in the run folder, not in Prefect)."""
    from crowdlab.experiments.storage import read_manifest

    manifest = read_manifest(Path(run_dir))
    counts = manifest.get("counts", {})
    return {"run_dir": str(run_dir), "run_id": manifest["run_id"], "status": manifest["status"],
            "decisions": counts.get("decisions"), "invalid": counts.get("invalid")}
