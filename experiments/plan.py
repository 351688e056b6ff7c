"""What a run will cost, before it starts: calls, tokens, shared prefix, wall time and price.

``make_plan(config)`` counts the calls of every stage (one decision per agent per round per
condition per replicate, per model), renders a seeded sample of the real prompts through the
scenario exactly as the runner does (a dry run of the sample, with every LLM replaced by a
zero-latency stand-in, supplies the later rounds' history), and counts their tokens with each
model's own tokenizer and chat template (``transformers.AutoTokenizer`` from the model folder).
Output tokens are the measured mean of earlier runs of the same model when there are some,
else the cap (``sampling.max_tokens``, or the answer schema's longest answer when smaller).

Wall time comes from measured throughput: the run folders of earlier runs of the same backend
under ``runs_root`` (per-shard backend seconds in each decision file; the shard written first
by an engine also holds its start-up, which is separated out), or a throughput table the user
gives (``load_throughput_table``). Cost is GPU-hours of the LLM engines times a price, or
tokens times a price per million.

Everything here is pure or reads only; the dry run writes into a temporary folder it removes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crowdlab.experiments.assignment import model_counts
from crowdlab.experiments.config import ExperimentConfig
from crowdlab.experiments.design import Condition, expand_design
from crowdlab.experiments.errors import ConfigError
from crowdlab.yaml_io import safe_load

log = logging.getLogger(__name__)

LLM_KINDS = ("vllm", "transformers", "openai")
#: Stand-ins whose time their config models (``dummy``: latency per batch; ``simulated_gpu``).
_MODELLED_KINDS = ("dummy", "simulated_gpu")


class Price(BaseModel):
    """A price per GPU-hour of the LLM engines, or per million tokens (prompt + output)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_hour: float | None = Field(None, ge=0)
    per_mtok: float | None = Field(None, ge=0)


class ModelThroughput(BaseModel):
    """Steady-state decisions (and background personas) per second of one engine, and its start-up seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decisions_per_s: float | None = Field(None, gt=0, description="decisions per second (the experiment stage)")
    backgrounds_per_s: float | None = Field(
        None, gt=0, description="personas per second in the backgrounds stage: writer and reader calls, "
                                "the gate's retries included")
    startup_s: float = Field(0.0, ge=0)
    output_tokens_per_call: float | None = Field(None, gt=0, description="measured mean, if known")
    overhead_s_per_shard_round: float = Field(0.0, ge=0, description="framework time per shard-round")
    source: str = "throughput table"

    @model_validator(mode="after")
    def _a_rate(self) -> "ModelThroughput":
        if self.decisions_per_s is None and self.backgrounds_per_s is None:
            raise ValueError("give decisions_per_s, backgrounds_per_s or both")
        return self


class ThroughputTable(BaseModel):
    """``models: {<model path, id or label>: {decisions_per_s, backgrounds_per_s, startup_s}}`` (YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, ModelThroughput]


class StagePlan(BaseModel):
    """One stage of the run for one model: calls, tokens, time and cost."""

    stage: Literal["backgrounds", "decisions"]
    model: str
    kind: str
    llm: bool
    calls: int
    calls_per_round: int
    engines: int = 1
    prompt_tokens_per_call: float | None = None
    prompt_tokens: int | None = None
    output_tokens_per_call: float | None = None
    output_tokens_cap: int | None = None
    output_tokens_source: str | None = None
    output_tokens: int | None = None
    shared_prefix_tokens: float | None = None
    shared_prefix_share: float | None = None
    wall_s: float | None = None
    throughput_source: str | None = None
    gpu_hours: float | None = None
    cost: float | None = None


class Plan(BaseModel):
    """What ``crowdlab plan`` prints and the flow attaches as its first artifact."""

    experiment: str
    n_agents: int
    conditions: int
    replicates: int
    rounds: int
    shards_per_round: int
    sample_size: int
    sample_seed: int
    stages: list[StagePlan]
    calls: int
    llm_calls: int
    prompt_tokens: int | None
    output_tokens: int | None
    overhead_s: float | None
    wall_s: float | None
    price: Price | None = None
    cost: float | None = None
    notes: list[str] = Field(default_factory=list)


# -- throughput -------------------------------------------------------------------------------

def load_throughput_table(path: str | Path) -> ThroughputTable:
    """Read a throughput table (YAML); ``ConfigError`` names the bad field."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError("throughput", f"file not found: {file}")
    try:
        data = safe_load(file.read_text(encoding="utf-8"))
        return ThroughputTable.model_validate(data)
    except yaml.YAMLError as exc:
        raise ConfigError("throughput", f"{file} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"throughput.{where}" if where else "throughput", f"{err['msg']} ({file.name})") from None


def backend_key(backend: dict[str, Any]) -> str:
    """What identifies an engine's speed: the backend config with its defaults, without its label."""
    from crowdlab.experiments.backends import backend_config

    try:
        backend = backend_config({k: v for k, v in backend.items() if k != "label"}).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - a manifest of an older crowdlab: compare as written
        pass
    return json.dumps({k: v for k, v in backend.items() if k != "label" and v is not None}, sort_keys=True)


def _table_entry(table: ThroughputTable, label: str, backend: dict[str, Any]) -> ModelThroughput | None:
    for name in (backend.get("model"), label):
        if name and name in table.models:
            return table.models[name]
    return None


def model_key(backend: dict[str, Any]) -> str:
    """A looser identity: the same model on the same kind of backend, whatever its engine options."""
    return json.dumps({k: backend.get(k) for k in ("kind", "model", "revision")}, sort_keys=True)


def measured_throughput(runs_root: str | Path, backend: dict[str, Any], same_options: bool = True
                        ) -> ModelThroughput | None:
    """Throughput of ``backend`` measured in the completed runs under ``runs_root`` (None if none).

    ``same_options``: only runs whose backend config is the same but for its label; otherwise
    any run of the same model on the same kind of backend.

    Per engine, the shard file written first holds the engine's start-up; the others give the
    steady seconds per decision. Start-up = first shard's seconds minus its decisions at the
    steady rate. Framework overhead = the run's wall time minus every model's backend seconds,
    per shard-round.
    """
    from crowdlab.experiments.shard_step import read_shard_stats

    root = Path(runs_root)
    if not root.is_dir():
        return None
    ident = backend_key if same_options else model_key
    key = ident(backend)
    steady_s = steady_n = 0.0
    startups: list[float] = []
    out_tokens = all_n = 0.0
    overheads: list[float] = []
    runs: list[str] = []
    for manifest_path in sorted(root.glob("*/*/manifest.json")):
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if manifest.get("status") != "completed":
            continue
        labels = {m["label"] for c in manifest.get("conditions", []) for m in _manifest_models(c)
                  if ident(m["backend"]) == key}
        if not labels:
            continue
        run_dir = manifest_path.parent
        shards: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)  # engine -> (mtime, n, s, out)
        busy_all = 0.0
        for path in run_dir.joinpath("decisions").rglob("shard-*.parquet"):
            stats = read_shard_stats(path)
            busy_all += sum(float(s.get("backend_s") or 0.0) for s in stats.values())
            for label, s in stats.items():
                if label in labels and s.get("decisions"):
                    shards[str(s.get("engine"))].append((path.stat().st_mtime, float(s["decisions"]),
                                                         float(s["backend_s"]), float(s.get("output_tokens") or 0)))
        if not shards:
            continue
        runs.append(f"{manifest['experiment']}/{manifest['run_id']}")
        for items in shards.values():
            items.sort()
            first, rest = items[0], items[1:]
            out_tokens += sum(i[3] for i in items)
            all_n += sum(i[1] for i in items)
            if rest:
                n, s = sum(i[1] for i in rest), sum(i[2] for i in rest)
                steady_n += n
                steady_s += s
                startups.append(max(0.0, first[2] - first[1] * s / n))
            else:  # one shard: start-up cannot be told apart from work
                steady_n += first[1]
                steady_s += first[2]
        wall = float(manifest.get("timings", {}).get("wall_s") or 0.0)
        shard_rounds = len(manifest.get("conditions", [])) * int(manifest.get("replicates", 1)) \
            * int(manifest.get("rounds", 1)) * int(manifest.get("n_shards", 1))
        if wall > 0 and shard_rounds:
            overheads.append(max(0.0, wall - busy_all) / shard_rounds)
    if steady_n <= 0 or steady_s <= 0:
        return None
    return ModelThroughput(
        decisions_per_s=steady_n / steady_s, startup_s=float(np.mean(startups)) if startups else 0.0,
        output_tokens_per_call=out_tokens / all_n if out_tokens else None,
        overhead_s_per_shard_round=float(np.mean(overheads)) if overheads else 0.0,
        source=f"measured in {len(runs)} run(s) under {root}{'' if same_options else ' (same model, other engine options)'}: "
               f"{', '.join(runs[:3])}{' ...' if len(runs) > 3 else ''}")


def _manifest_models(condition: dict[str, Any]) -> list[dict[str, Any]]:
    if condition.get("models"):
        return [m for m in condition["models"] if isinstance(m, dict) and "backend" in m]
    backend = condition.get("backend")
    return [{"label": backend.get("label") or backend.get("model") or backend.get("kind"), "backend": backend}] \
        if isinstance(backend, dict) else []


# -- prompts ----------------------------------------------------------------------------------

def _sample_personas(config: ExperimentConfig, n_agents: int, k: int, seed: int) -> pa.Table:
    """A seeded block of ``k`` persona rows (rows are drawn independently, so a block is a sample)."""
    start = int(np.random.default_rng([seed, 0x706C616E]).integers(0, n_agents - k + 1))
    pop = config.population
    if pop.personas is not None:
        import pyarrow.dataset as ds

        return ds.dataset(pop.personas, format="parquet").take(pa.array(np.arange(start, start + k)))
    from crowdlab.personas import load_spec
    from crowdlab.personas.sampling.sampler import sample_rows

    return sample_rows(load_spec(pop.spec), start, start + k, pop.seed, n_agents)


def _stand_in(backend: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "dummy", "latency_s": 0.0, "render_prompts": False} if backend.get("kind") in LLM_KINDS else backend


def _dry_run_config(cond: Condition, personas_path: Path, k: int) -> dict[str, Any]:
    data = cond.config.model_dump(mode="json", exclude_none=True)
    data["design"] = {"factors": {}, "replicates": 1}
    data["population"] = {"personas": str(personas_path)}
    data["shard_size"] = k
    data["dispatch"] = {"kind": "local"}
    data["max_concurrent_shards"] = 1
    if data.get("backend"):
        data["backend"] = _stand_in(data["backend"])
    for m in data.get("models") or []:
        m["backend"] = _stand_in(m["backend"])
    return data


def render_sample(cond: Condition, personas: pa.Table, group_sizes: np.ndarray, tmp: Path
                  ) -> tuple[list[list[list[dict[str, Any]]]], str | None]:
    """The sample's chats for every round of one condition, rendered as the runner does.

    Round 1 needs no history; later rounds read it from a dry run of the sample with each LLM
    replaced by a zero-latency stand-in (its answers are random, so their history is too). If
    the dry run fails (a network edge list that names agents outside the sample), later rounds
    are rendered with round 1's empty history and a note says so.
    """
    from crowdlab.experiments.run_context import load_context
    from crowdlab.experiments.runner import run
    from crowdlab.experiments.scenarios import History, make_scenario
    from crowdlab.experiments.shard_step import shard_inputs

    scenario = make_scenario(cond.config.scenario)
    rounds = cond.config.rounds
    ids = personas["agent_id"].to_numpy().astype(np.int64)
    groups = scenario.assign_groups(ids)
    note = None
    path = tmp / f"personas-{cond.condition_id}.parquet"
    pq.write_table(personas, path)
    out: list[list[list[dict[str, Any]]]] = []
    try:
        result = run(_dry_run_config(cond, path, personas.num_rows), run_id="plan", runs_root=tmp / cond.condition_id)
        ctx = load_context(result.run_dir)
        for r in range(1, rounds + 1):
            inputs = shard_inputs(ctx, "c000", 0, r, 0)
            out.append(scenario.render(ids, groups, inputs.personas, inputs.history, group_sizes))
    except Exception as exc:  # noqa: BLE001 - the plan still counts round 1 exactly
        log.warning("plan: dry run of %s failed (%s); later rounds use round 1's history", cond.condition_id, exc)
        note = f"{cond.condition_id}: later rounds rendered without history (dry run failed: {exc})"
        empty = History(round=1, total_rounds=rounds, public=None, own_values=np.zeros((len(ids), 0)))
        first = scenario.render(ids, groups, personas, empty, group_sizes)
        out = [first] * rounds
    return out, note


_tokenizers: dict[tuple[str, str | None], Any] = {}


def tokenizer_for(backend: dict[str, Any]) -> tuple[Any, str | None] | None:
    """(the model's own tokenizer, its chat template override) or None when it has no local folder."""
    from crowdlab.experiments.backends.model_ref import load_chat_template, resolve_model

    model = backend.get("model")
    if not model:
        return None
    try:
        resolved = resolve_model(model, backend.get("revision"))
    except Exception:  # noqa: BLE001 - an openai model name, a hub id not on this machine
        return None
    if resolved.local_dir is None:
        return None
    key = (str(resolved.local_dir), backend.get("chat_template"))
    if key not in _tokenizers:
        from transformers import AutoTokenizer

        _tokenizers[key] = AutoTokenizer.from_pretrained(str(resolved.local_dir))
    return _tokenizers[key], load_chat_template(backend.get("chat_template"))


def chat_token_ids(tokenizer: Any, template: str | None, chats: list[list[dict[str, Any]]]) -> list[list[int]]:
    """Token ids of each chat as the engine sees it (chat template, generation prompt added)."""
    out = []
    for chat in chats:
        ids = tokenizer.apply_chat_template(list(chat), chat_template=template, add_generation_prompt=True,
                                            tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        out.append(list(ids))
    return out


def common_prefix(token_lists: list[list[int]]) -> int:
    """Length of the prefix every list shares (what prefix caching reuses for every request)."""
    if not token_lists:
        return 0
    lo, hi = min(token_lists), max(token_lists)  # the lexicographic extremes bound every pair
    n = 0
    for a, b in zip(lo, hi):
        if a != b:
            break
        n += 1
    return n


# -- the plan ---------------------------------------------------------------------------------

def _n_agents(config: ExperimentConfig) -> int:
    pop = config.population
    if pop.personas is not None:
        if not Path(pop.personas).is_file():
            raise ConfigError("population.personas", f"file not found: {pop.personas}")
        return pq.ParquetFile(pop.personas).metadata.num_rows
    if not Path(pop.spec or "").is_file():
        raise ConfigError("population.spec", f"file not found: {pop.spec}")
    return int(pop.n or 0)


def _output_cap(cond: Condition, backend: dict[str, Any]) -> int:
    from crowdlab.experiments.scenarios import make_scenario

    cap = cond.config.sampling.max_tokens
    scenario = make_scenario(cond.config.scenario)
    structured = backend.get("structured_output", "auto") != "none"
    if structured and hasattr(scenario, "max_answer_tokens"):
        cap = min(cap, int(scenario.max_answer_tokens()))
    return cap


def make_plan(config: ExperimentConfig, runs_root: str | Path = "data/runs", *,
              throughput: ThroughputTable | None = None, price: Price | None = None,
              sample: int = 64, seed: int = 0) -> Plan:
    """The plan of ``config``: see the module docstring. ``ConfigError`` for bad input."""
    conditions = expand_design(config)
    n_agents = _n_agents(config)
    reps = config.design.replicates
    rounds = config.rounds
    k = max(1, min(sample, n_agents))
    n_shards = -(-n_agents // config.shard_size)
    notes: list[str] = []
    engines = 1
    if config.dispatch.kind == "ray":
        engines = config.dispatch.engines_per_model or 1
        if config.dispatch.engines_per_model is None:
            notes.append("dispatch.engines_per_model is not set (the cluster's GPUs decide): planned with "
                         "1 engine per model; set it for a closer wall time")
    # per (label, backend key): running sums over conditions
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    personas = None
    background = None if config.population.backgrounds is None else \
        plan_backgrounds(config, notes, runs_root, throughput, k, seed)
    with tempfile.TemporaryDirectory(prefix="crowdlab-plan-") as tmp_name:
        tmp = Path(tmp_name)
        for cond in conditions:
            shares = cond.config.model_shares()
            counts = model_counts([s for _, _, s in shares], n_agents)
            llm = [(label, cfg.model_dump(mode="json")) for label, cfg, _ in shares if cfg.kind in LLM_KINDS]
            chats = None
            if llm:
                if personas is None:
                    personas = _sample_personas(config, n_agents, k, seed)
                    if background is not None:  # the decisions see the texts the first stage writes
                        personas = background.with_texts(personas, notes)
                from crowdlab.experiments.scenarios import make_scenario

                scen = make_scenario(cond.config.scenario)
                sizes = np.bincount(scen.assign_groups(np.arange(n_agents, dtype=np.int64)), minlength=scen.n_groups())
                chats, note = render_sample(cond, personas, sizes, tmp)
                if note:
                    notes.append(note)
            for (label, cfg, _), count in zip(shares, counts):
                backend = cfg.model_dump(mode="json")
                a = acc.setdefault((label, backend_key(backend)), {
                    "label": label, "backend": backend, "calls": 0, "calls_per_round": 0,
                    "prompt": 0.0, "prefix": 0.0, "cap": None, "llm": cfg.kind in LLM_KINDS, "tok": None})
                calls = int(count) * rounds * reps
                a["calls"] += calls
                a["calls_per_round"] += int(count) * reps
                if not a["llm"]:
                    continue
                a["cap"] = max(a["cap"] or 0, _output_cap(cond, backend))
                tok = tokenizer_for(backend)
                if tok is None:
                    a["tok"] = False
                    continue
                a["tok"] = True
                for round_chats in chats or []:
                    ids = chat_token_ids(tok[0], tok[1], round_chats)
                    a["prompt"] += float(np.mean([len(i) for i in ids])) * int(count) * reps
                    a["prefix"] += common_prefix(ids) * int(count) * reps
    stages: list[StagePlan] = [] if background is None else [background.stage]
    overhead_per_shard_round: list[float] = []
    shard_rounds = len(conditions) * reps * rounds * n_shards
    for a in acc.values():
        backend, label, calls = a["backend"], a["label"], a["calls"]
        stage = StagePlan(stage="decisions", model=label, kind=backend["kind"], llm=a["llm"], calls=calls,
                          calls_per_round=a["calls_per_round"], engines=engines)
        tp = None
        if throughput is not None and a["llm"]:
            tp = _table_entry(throughput, label, backend)
            if tp is None:
                raise ConfigError("throughput", f"the table has no entry for model {backend.get('model') or label!r} "
                                                f"(key it by the backend's model or the label {label!r})")
            if tp.decisions_per_s is None:
                raise ConfigError("throughput", f"the entry of model {backend.get('model') or label!r} has no "
                                                "decisions_per_s (it plays the decisions)")
        if tp is None and (a["llm"] or backend["kind"] in _MODELLED_KINDS):
            tp = measured_throughput(runs_root, backend)
            if tp is None and a["llm"]:
                tp = measured_throughput(runs_root, backend, same_options=False)
        if a["llm"]:
            if a["tok"]:
                stage.prompt_tokens_per_call = round(a["prompt"] / calls, 1) if calls else 0.0
                stage.prompt_tokens = int(round(a["prompt"]))
                stage.shared_prefix_tokens = round(a["prefix"] / calls, 1) if calls else 0.0
                stage.shared_prefix_share = round(a["prefix"] / a["prompt"], 4) if a["prompt"] else None
            else:
                notes.append(f"{label}: no local tokenizer for {backend.get('model')!r}; tokens not estimated")
            stage.output_tokens_cap = a["cap"]
            if tp is not None and tp.output_tokens_per_call:
                stage.output_tokens_per_call = round(min(tp.output_tokens_per_call, a["cap"]), 1)
                stage.output_tokens_source = "measured"
            else:
                stage.output_tokens_per_call = float(a["cap"])
                stage.output_tokens_source = "cap (upper bound)"
            stage.output_tokens = int(round(stage.output_tokens_per_call * calls))
        if tp is not None:
            steady = calls / tp.decisions_per_s / engines
            stage.wall_s = round(tp.startup_s + steady, 1)
            stage.throughput_source = tp.source
            overhead_per_shard_round.append(tp.overhead_s_per_shard_round)
        elif a["llm"]:
            notes.append(f"{label}: no measured throughput for this backend under {runs_root} and no "
                         "--throughput table: wall time and GPU cost unknown")
        elif backend["kind"] in _MODELLED_KINDS:
            stage.wall_s = round(_modelled_seconds(backend, calls, shard_rounds, engines), 1)
            stage.throughput_source = f"modelled by the {backend['kind']} config (latency, throughput)"
        else:
            stage.wall_s = 0.0
            stage.throughput_source = f"not measured (a rule-based {backend['kind']} baseline: negligible)"
        if stage.llm and stage.wall_s is not None:
            gpus = config.dispatch.gpus_per_engine if config.dispatch.kind == "ray" else 1.0
            stage.gpu_hours = round(stage.wall_s * engines * gpus / 3600, 4)
        stages.append(stage)
    overhead = round(max(overhead_per_shard_round) * shard_rounds, 1) if overhead_per_shard_round else None
    walls = [s.wall_s for s in stages if s.stage == "decisions"]
    # Locally the models of a shard run in turn; on Ray each model has its own engines, in parallel.
    # The backgrounds are written before any decision: their time adds.
    wall = None
    if all(s.wall_s is not None for s in stages):
        llm_time = max(walls, default=0.0) if config.dispatch.kind == "ray" else sum(walls)
        wall = round(llm_time + sum(s.wall_s or 0.0 for s in stages if s.stage == "backgrounds")
                     + (overhead or 0.0), 1)
    _price(stages, price)
    costs = [s.cost for s in stages if s.llm]
    llm_stages = [s for s in stages if s.llm]
    plan = Plan(
        experiment=config.experiment, n_agents=n_agents, conditions=len(conditions), replicates=reps, rounds=rounds,
        shards_per_round=n_shards, sample_size=k, sample_seed=seed, stages=stages,
        calls=sum(s.calls for s in stages), llm_calls=sum(s.calls for s in llm_stages),
        prompt_tokens=_total([s.prompt_tokens for s in llm_stages]) if llm_stages else None,
        output_tokens=_total([s.output_tokens for s in llm_stages]) if llm_stages else None,
        overhead_s=overhead, wall_s=wall, price=price,
        cost=None if price is None or any(c is None for c in costs) else round(sum(costs), 4), notes=notes)
    if overhead is None:
        plan.notes.append("framework time (sampling, Parquet writes, settling) not included: no earlier run "
                          f"of these backends under {runs_root} measured it")
    if not llm_stages:
        plan.notes.insert(0, "no LLM: every model is a rule-based or simulated backend")
    return plan


class BackgroundPlan:
    """The backgrounds stage's row of the plan, and the texts (measured or stand-in) the sample of
    decision prompts shows where a scenario reads the backgrounds (P5)."""

    def __init__(self, stage: StagePlan, texts: list[str] | None, words: int) -> None:
        self.stage, self.texts, self.words = stage, texts, words

    def with_texts(self, personas: pa.Table, notes: list[str]) -> pa.Table:
        """The sampled persona rows with a passed ``background`` each: earlier runs' texts of the
        same model in turn, else a stand-in of the spec's length made of the persona's facts."""
        if "background" in personas.column_names:
            return personas
        n = personas.num_rows
        if self.texts:
            texts = [self.texts[i % len(self.texts)] for i in range(n)]
        else:
            facts = [" ".join(str(v) for k, v in row.items() if k != "agent_id") for row in personas.to_pylist()]
            texts = [" ".join((f.split() * self.words)[:self.words]) for f in facts]
            notes.append(f"backgrounds in the decision prompts: stand-ins of {self.words} words (no earlier "
                         "background run of this model measured)")
        return personas.append_column("background", pa.array(texts, pa.string())) \
            .append_column("background_consistent", pa.array([True] * n))


def plan_backgrounds(config: ExperimentConfig, notes: list[str], runs_root: str | Path,
                     throughput: ThroughputTable | None, k: int, seed: int) -> BackgroundPlan:
    """The population's backgrounds: per persona one writer and one reader (gate) call per try.

    Planned with one try each (a retry follows only a text the gate rejects); a note gives the
    most the gate's ``max_tries`` allows. Tokens as for the decisions: the writer chats of a
    seeded sample of personas rendered and counted with the model's own tokenizer; the reader
    chats around earlier runs' texts of the same model when there are some (their length is the
    writer's measured output), else around an empty text plus the writer's cap; the reader's
    output is the sample's gate fields as compact JSON (what a correct reading returns), capped.
    Wall time: start-up + personas / (personas per second), measured in earlier generations of
    the same backend under ``runs_root`` (``measured_background_throughput``) or the table's
    ``backgrounds_per_s``."""
    from crowdlab.experiments.prepare import background_backend
    from crowdlab.personas import load_spec
    from crowdlab.personas.backgrounds import prompts

    backend = background_backend(config)
    spec = load_spec(config.population.spec)
    bg = spec.background
    assert bg is not None  # background_backend refused a spec without one
    n = int(config.population.n or 0)
    llm = backend.get("kind") in LLM_KINDS
    label = str(backend.get("label") or backend.get("model") or backend["kind"])
    notes.append(f"backgrounds: {n:,} personas x (writer + reader) = {2 * n:,} calls with one try each, at most "
                 f"{2 * n * bg.gate.max_tries:,} with the gate's {bg.gate.max_tries} tries")
    stage = StagePlan(stage="backgrounds", model=label, kind=backend["kind"], llm=llm, calls=2 * n, calls_per_round=2 * n)
    if not llm:
        stage.wall_s = 0.0
        stage.throughput_source = f"not measured (the rule-based {backend['kind']} writer: negligible)"
        return BackgroundPlan(stage, None, bg.words)
    tp = None
    if throughput is not None:
        tp = _table_entry(throughput, label, backend)
        if tp is None:
            raise ConfigError("throughput", f"the table has no entry for model {backend.get('model') or label!r} "
                                            f"(the backgrounds' model; key it by the backend's model or {label!r})")
        if tp.backgrounds_per_s is None:
            tp = None  # the table times its decisions only: measured generations, if any
    measured = measured_background_throughput(runs_root, backend) \
        or measured_background_throughput(runs_root, backend, same_options=False)
    texts = measured.texts if measured else None
    tok = tokenizer_for(backend)
    if tok is None:
        notes.append(f"backgrounds: no local tokenizer for {backend.get('model')!r}; tokens not estimated")
    else:
        notes.append(_background_tokens(stage, tok, _sample_personas(config, n, k, seed), bg, texts, n, prompts))
    if tp is None and measured is not None:
        tp = measured.throughput
        planned = min(config.population.backgrounds.shard_size, n)  # type: ignore[union-attr]
        if planned != measured.shard_size:  # one shard is one batch per try: the rate depends on its size
            notes.append(f"backgrounds: the rate was measured with shards of about {measured.shard_size} personas, "
                         f"this run has {planned}; an engine batches a whole shard, so larger shards usually "
                         "run faster per persona (the time is then an overestimate) and smaller ones slower")
    if tp is None:
        notes.append(f"backgrounds: no measured throughput of {label} under {runs_root} and no backgrounds_per_s "
                     "in a --throughput table: their wall time and GPU cost unknown")
    else:
        assert tp.backgrounds_per_s is not None
        stage.wall_s = round(tp.startup_s + n / tp.backgrounds_per_s, 1)
        stage.throughput_source = tp.source
        stage.gpu_hours = round(stage.wall_s / 3600, 4)
    return BackgroundPlan(stage, texts, bg.words)


def _background_tokens(stage: StagePlan, tok: tuple[Any, str | None], rows: pa.Table, bg: Any,
                       texts: list[str] | None, n: int, prompts: Any) -> str:
    """Fill the stage's token fields from the sample (see ``plan_backgrounds``); returns a note
    with the writer's and the reader's own figures (the stage's are their mean per call)."""
    tokenizer, template = tok
    writer = chat_token_ids(tokenizer, template, prompts.writer_messages(rows, bg))
    if texts:
        written = float(np.mean([len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts]))
        writer_out, source = min(written, bg.token_budget), "measured"
        reader = chat_token_ids(tokenizer, template, prompts.reader_messages(texts))
        reader_prompt = float(np.mean([len(i) for i in reader]))
    else:
        writer_out, source = float(bg.token_budget), "cap (upper bound)"
        reader = chat_token_ids(tokenizer, template, prompts.reader_messages([""] * 2))
        reader_prompt = float(np.mean([len(i) for i in reader])) + writer_out
    answers = [json.dumps({f: r[f] for f in bg.gate_fields}, ensure_ascii=False, default=str, separators=(",", ":"))
               for r in rows.select(bg.gate_fields).to_pylist()]
    reader_out = min(float(np.mean([len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers])),
                     float(bg.gate.max_tokens))
    writer_prompt = float(np.mean([len(i) for i in writer]))
    prefix = common_prefix(writer) + common_prefix(reader)
    stage.prompt_tokens_per_call = round((writer_prompt + reader_prompt) / 2, 1)
    stage.prompt_tokens = int(round(n * (writer_prompt + reader_prompt)))
    stage.shared_prefix_tokens = round(prefix / 2, 1)
    stage.shared_prefix_share = round(prefix / (writer_prompt + reader_prompt), 4)
    stage.output_tokens_per_call = round((writer_out + reader_out) / 2, 1)
    stage.output_tokens_cap = math.ceil((bg.token_budget + bg.gate.max_tokens) / 2)  # per call: writer's and reader's
    stage.output_tokens_source = source
    stage.output_tokens = int(round(n * (writer_out + reader_out)))
    return (f"backgrounds per persona: writer prompt {writer_prompt:.0f} tokens, output {writer_out:.0f} "
            f"({'measured' if texts else 'cap'}); reader prompt {reader_prompt:.0f}, output {reader_out:.0f} "
            "(the gate fields as JSON)")


def _generation_manifests(root: Path) -> list[Path]:
    """Finished background generations under a runs root: a pipeline run's ``population/`` and a
    ``crowdlab personas generate`` folder (``<runs_root>/personas/<name>``)."""
    found = [*root.glob("*/*/population/manifest.json"), *root.glob("*/*/manifest.json")]
    return sorted(set(found))


class MeasuredBackgrounds(NamedTuple):
    """What earlier generations of a backend tell the plan."""

    throughput: ModelThroughput
    texts: list[str]  # some of their backgrounds (for the token estimate)
    shard_size: int  # the median personas per shard they were written with (an engine's batch)


def measured_background_throughput(runs_root: str | Path, backend: dict[str, Any], same_options: bool = True,
                                   texts: int = 64) -> MeasuredBackgrounds | None:
    """Personas per second of earlier background generations of ``backend`` under ``runs_root``
    (None if none), up to ``texts`` of their backgrounds, and the shard size they had.

    Each finished generation folder records when it started; its shard files, in the order they
    were written, give the steady rate (shards after the first) and the start-up (the first
    shard's time beyond that rate). A generation that was interrupted and resumed counts its
    pause: a conservative figure.
    """
    root = Path(runs_root)
    if not root.is_dir():
        return None
    ident = backend_key if same_options else model_key
    key = ident(backend)
    steady_n = steady_s = 0.0
    startups: list[float] = []
    sample: list[str] = []
    used: list[str] = []
    sizes: list[int] = []
    for path in _generation_manifests(root):
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        config = manifest.get("backend_config")
        if manifest.get("status") != "done" or not isinstance(config, dict) or "spec_hash" not in manifest \
                or ident(config) != key:
            continue
        shards = sorted(path.parent.joinpath("shards").glob("shard-*.parquet"), key=lambda p: p.stat().st_mtime)
        rows = [pq.ParquetFile(p).metadata.num_rows for p in shards]
        times = [p.stat().st_mtime for p in shards]
        started, finished = float(manifest.get("started") or 0.0), float(manifest.get("finished") or 0.0)
        if not shards or not started or not finished or not started <= times[0] <= times[-1] <= finished + 1.0:
            continue  # no times, or files touched after the generation (a copy): not timeable
        if len(shards) > 1 and times[-1] > times[0]:
            rate = sum(rows[1:]) / (times[-1] - times[0])
            steady_n += sum(rows[1:])
            steady_s += times[-1] - times[0]
            startups.append(max(0.0, times[0] - started - rows[0] / rate))
        elif times[0] > started:
            steady_n += rows[0]
            steady_s += times[0] - started
        else:
            continue
        used.append(str(path.parent.relative_to(root)))
        sizes += rows
        if len(sample) < texts:
            table = pq.read_table(path.parent / "personas.parquet", columns=["background"])
            sample += [t for t in table.column("background").to_pylist()[:texts - len(sample)] if t]
    if steady_n <= 0 or steady_s <= 0:
        return None
    shard_size = int(np.median(sizes))
    return MeasuredBackgrounds(ModelThroughput(
        backgrounds_per_s=steady_n / steady_s, startup_s=float(np.mean(startups)) if startups else 0.0,
        source=f"measured in {len(used)} background generation(s) under {root} with shards of about "
               f"{shard_size} personas{'' if same_options else ' (same model, other engine options)'}: "
               f"{', '.join(used[:3])}{' ...' if len(used) > 3 else ''}"), sample, shard_size)


def _modelled_seconds(backend: dict[str, Any], calls: int, shard_rounds: int, engines: int) -> float:
    """The time a stand-in's own config gives: ``dummy`` sleeps ``latency_s`` per batch (every call
    of a shard in flight at once, up to ``concurrency``); ``simulated_gpu`` a fixed cost per batch
    plus ``calls / throughput``, over its engines."""
    if backend["kind"] == "dummy":
        per_shard = max(1, math.ceil(calls / max(shard_rounds, 1) / backend.get("concurrency", 100_000)))
        return backend.get("latency_s", 1.0) * per_shard * shard_rounds
    busy = backend.get("fixed_latency_s", 0.05) * shard_rounds + calls / backend.get("throughput", 430.0)
    return busy / backend.get("time_scale", 1.0) / (engines * backend.get("engines", 1))


def _total(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else int(sum(values))  # type: ignore[arg-type]


def _price(stages: list[StagePlan], price: Price | None) -> None:
    if price is None:
        return
    for s in stages:
        if not s.llm:
            s.cost = 0.0
        elif price.gpu_hour is not None:
            s.cost = None if s.gpu_hours is None else round(s.gpu_hours * price.gpu_hour, 4)
        elif price.per_mtok is not None:
            tokens = None if s.prompt_tokens is None or s.output_tokens is None else s.prompt_tokens + s.output_tokens
            s.cost = None if tokens is None else round(tokens / 1e6 * price.per_mtok, 4)


def check_limits(plan: Plan, max_cost: float | None = None, max_calls: int | None = None) -> None:
    """``ConfigError`` when the plan is above a limit, or a cost limit cannot be checked."""
    if max_calls is not None and plan.llm_calls > max_calls:
        raise ConfigError("max_calls", f"the plan makes {plan.llm_calls:,} LLM calls, above the limit of {max_calls:,}")
    if max_cost is not None:
        if plan.price is None:
            raise ConfigError("max_cost", "needs a price: --price-gpu-hour or --price-per-mtok")
        if plan.cost is None:
            why = next((n for n in plan.notes if "unknown" in n or "not estimated" in n), "an unknown stage")
            raise ConfigError("max_cost", f"cannot check the cost: {why}")
        if plan.cost > max_cost:
            raise ConfigError("max_cost", f"the plan costs {plan.cost:,.2f}, above the limit of {max_cost:,.2f}")


def check_price(gpu_hour: float | None, per_mtok: float | None) -> Price | None:
    """The price the CLI options give (``ConfigError`` for a negative one or both at once)."""
    if gpu_hour is not None and per_mtok is not None:
        raise ConfigError("price", "give --price-gpu-hour or --price-per-mtok, not both")
    for name, value in (("price_gpu_hour", gpu_hour), ("price_per_mtok", per_mtok)):
        if value is not None and (value < 0 or math.isnan(value)):
            raise ConfigError(name, f"must be >= 0, got {value:g}")
    return None if gpu_hour is None and per_mtok is None else Price(gpu_hour=gpu_hour, per_mtok=per_mtok)


def check_limit_values(max_cost: float | None, max_calls: int | None) -> None:
    if max_cost is not None and (max_cost < 0 or math.isnan(max_cost)):
        raise ConfigError("max_cost", f"must be >= 0, got {max_cost:g}")
    if max_calls is not None and max_calls < 0:
        raise ConfigError("max_calls", f"must be >= 0, got {max_calls}")


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def plan_markdown(plan: Plan) -> str:
    """The plan as Markdown (the flow's artifact; the CLI prints the same lines)."""
    lines = [f"## Plan of {plan.experiment}",
             f"{plan.n_agents:,} agents x {plan.conditions} condition(s) x {plan.replicates} replicate(s) x "
             f"{plan.rounds} round(s), {plan.shards_per_round} shard(s) per round; tokens from a seeded sample "
             f"of {plan.sample_size} rendered prompts per round (seed {plan.sample_seed})", "",
             "| stage | model | kind | calls | per round | prompt tok/call | shared prefix | output tok/call | wall | cost |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in plan.stages:
        prefix = "" if s.shared_prefix_share is None else f"{s.shared_prefix_tokens:.0f} ({s.shared_prefix_share:.0%})"
        out = "" if s.output_tokens_per_call is None else \
            f"{s.output_tokens_per_call:.1f} ({'measured' if s.output_tokens_source == 'measured' else 'cap'}, cap {s.output_tokens_cap})"
        lines.append(f"| {s.stage} | {s.model} | {s.kind if s.llm else s.kind + ' (no LLM)'} | {s.calls:,} | "
                     f"{s.calls_per_round:,} | {'' if s.prompt_tokens_per_call is None else f'{s.prompt_tokens_per_call:.1f}'} | "
                     f"{prefix} | {out} | {_fmt_s(s.wall_s)} | {'' if s.cost is None else f'{s.cost:,.4f}'} |")
    lines += ["", f"- LLM calls: {plan.llm_calls:,} (all calls: {plan.calls:,})"]
    if plan.prompt_tokens is not None:
        lines.append(f"- tokens: {plan.prompt_tokens:,} prompt + {plan.output_tokens:,} output")
    lines.append(f"- wall time: {_fmt_s(plan.wall_s)}"
                 + ("" if plan.overhead_s is None else f" (framework overhead {_fmt_s(plan.overhead_s)})"))
    if plan.price is not None:
        unit = f"{plan.price.gpu_hour:g} per GPU-hour" if plan.price.gpu_hour is not None else f"{plan.price.per_mtok:g} per million tokens"
        lines.append(f"- cost at {unit}: {'unknown' if plan.cost is None else f'{plan.cost:,.4f}'}")
    for s in plan.stages:
        if s.throughput_source:
            lines.append(f"- throughput of {s.model}: {s.throughput_source}")
    lines += [f"- note: {n}" for n in plan.notes]
    return "\n".join(lines) + "\n"
