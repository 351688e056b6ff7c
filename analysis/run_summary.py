"""What a reader needs to know about a run before its numbers: a short key/value summary and
one row per condition with its factor values.

The manifest holds about fifty fields (and a copy of every condition's config); the report
shows these few and keeps the whole manifest one click away.
"""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from crowdlab.analysis.facets import short_names
from crowdlab.analysis.loading import PathLike, RunData, as_run


def _models(manifest: dict) -> str:
    seen: dict[str, str] = {}
    for cond in manifest.get("conditions") or []:
        for model in cond.get("models") or []:
            backend = model.get("backend") or {}
            name = backend.get("model") or backend.get("kind") or ""
            label = str(model.get("label"))
            seen.setdefault(label, f"{label} ({name})" if name and name != label else label)
    return ", ".join(seen.values())


def _conditions(manifest: dict) -> str:
    conds = manifest.get("conditions") or []
    factors = manifest.get("factor_names") or []
    if not factors:
        return str(len(conds)) if conds else ""
    levels = [len({str((c.get("factors") or {}).get(f)) for c in conds}) for f in factors]
    short = short_names(factors)
    return f"{len(conds)}: " + " x ".join(f"{short[f]} ({n})" for f, n in zip(factors, levels))


def _seed(manifest: dict) -> str:
    seeds = manifest.get("seeds") or {}
    if not seeds:
        return str(manifest.get("seed", ""))
    return ", ".join(f"{k} {v}" for k, v in seeds.items())


def _timing(key: str) -> Callable[[dict], str]:
    def get(manifest: dict) -> str:
        value = (manifest.get("timings") or {}).get(key)
        if value is None:
            return ""
        return f"{value:g} s" if isinstance(value, (int, float)) else str(value).replace("T", " ")
    return get


def _decisions(manifest: dict) -> str:
    counts = manifest.get("counts") or {}
    if "decisions" not in counts:
        return ""
    n, bad = int(counts["decisions"]), int(counts.get("invalid", 0))
    return f"{n:,} ({bad:,} invalid, {bad / n:.1%})" if n else "0"


def _game(manifest: dict) -> str:
    scenario = (manifest.get("config") or {}).get("scenario") or {}
    if not scenario:
        return ""
    parts = [str(scenario.get("kind", ""))]
    if scenario.get("kind") == "declarative":  # name and parameters of a game written in YAML
        parts.append(str(scenario.get("name", "")))
        parts += [f"{k}={v}" for k, v in (scenario.get("parameters") or {}).items()]
    for key in ("variant", "p", "offset"):
        if key in scenario and not (key == "offset" and not scenario[key]):
            value = scenario[key]
            parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    factors = manifest.get("factor_names") or []
    if factors:
        parts.append("(design factors override)")
    return " ".join(parts)


def _network(manifest: dict) -> str:
    """The run's social network (manifest ``network``): kind, size, degree spread, homophily."""
    net = manifest.get("network")
    if not net:
        return ""
    deg = net.get("degree") or net.get("in_degree") or {}
    which = "degree" if "degree" in net else "in-degree"
    text = (f"{net.get('kind', '')}, {'directed' if net.get('directed') else 'undirected'}, "
            f"{net.get('nodes', 0):,} agents, {net.get('edges', 0):,} edges; {which} mean {deg.get('mean', 0):.1f}, "
            f"median {deg.get('p50', 0):g}, p90 {deg.get('p90', 0):g}, max {deg.get('p100', 0):g}")
    homophily = net.get("homophily") or {}
    if homophily:
        text += "; homophily (Coleman) " + ", ".join(f"{c} {h.get('coleman', float('nan')):.2f}"
                                                    for c, h in homophily.items())
    return text


#: (item, how to read it from one manifest); empty values are left out.
ITEMS: tuple[tuple[str, Callable[[dict], Any]], ...] = (
    ("experiment", lambda m: m.get("experiment", "")),
    ("run id", lambda m: m.get("run_id", "")),
    ("status", lambda m: m.get("status", "")),
    ("seed", _seed),
    ("agents (n)", lambda m: f"{m['n_agents']:,}" if "n_agents" in m else ""),
    ("rounds", lambda m: m.get("rounds", "")),
    ("replicates", lambda m: m.get("replicates", "")),
    ("shards", lambda m: f"{m['n_shards']} of {m.get('shard_size', '?')} agents" if "n_shards" in m else ""),
    ("game", _game),
    ("backend / models", _models),
    ("conditions", _conditions),
    ("network", _network),
    ("decisions", _decisions),
    ("started", _timing("first_started_at")),
    ("finished", _timing("finished_at")),
    ("wall time", _timing("wall_s")),
    ("config hash", lambda m: str(m.get("config_hash", ""))[:12]),
    ("crowdlab", lambda m: (m.get("versions") or {}).get("crowdlab", "")),
)


def _from_data(run: RunData) -> dict[str, str]:
    """What the tables say when a manifest lacks an item (hand-made or older run folders)."""
    rounds = run.rounds
    factors = [f for f in run.factor_columns if f in run.conditions]
    levels = [run.conditions[f].astype(str).nunique() for f in factors]
    short = short_names(factors)
    n_cond = run.conditions["condition_id"].astype(str).nunique()
    return {
        "rounds": str(rounds["round"].nunique()) if "round" in rounds else "",
        "replicates": str(rounds["replicate"].nunique()) if "replicate" in rounds else "",
        "conditions": f"{n_cond}: " + " x ".join(f"{short[f]} ({n})" for f, n in zip(factors, levels))
        if factors else str(n_cond),
    }


def run_summary(run: RunData | PathLike) -> pd.DataFrame:
    """Columns ``item`` and ``value``: one row per item of ``ITEMS``. With several runs a value
    they share is shown once; differing values are listed per run id. Rounds, replicates and
    conditions come from the tables when a manifest does not say."""
    run = as_run(run)
    fallback = _from_data(run)
    rows = []
    for item, read in ITEMS:
        values = {run_id: str(read(m)) or fallback.get(item, "") for run_id, m in run.manifests.items()}
        distinct = list(dict.fromkeys(v for v in values.values()))
        if item == "run id" or len(distinct) <= 1:
            value = ", ".join(v for v in distinct if v)
        elif len(values) <= 4:
            value = "; ".join(f"{r}: {v}" for r, v in values.items())
        else:
            value = ", ".join(v for v in distinct if v)
        if value:
            rows.append({"item": item, "value": value})
    return pd.DataFrame(rows, columns=["item", "value"])


def conditions_table(run: RunData | PathLike) -> pd.DataFrame:
    """One row per condition: id, factor values (short names), p, offset and range.
    ``attrs["factors"]`` names the factor columns."""
    run = as_run(run)
    cond = run.conditions.drop(columns=["run_id"]).drop_duplicates("condition_id")
    cond = cond.assign(condition_id=cond["condition_id"].astype(str)).sort_values("condition_id")
    factors = [f for f in run.factor_columns if f in cond]
    short = short_names(factors)
    out = cond[["condition_id", *factors]].rename(columns=short)
    for col in ("p", "offset"):
        if short.get(f"scenario.{col}") != col:
            out[col] = cond[col].map(lambda v: f"{v:.4g}")
    out["range"] = [f"{lo:g}-{hi:g}" for lo, hi in zip(cond["lo"], cond["hi"])]
    out = out.reset_index(drop=True)
    out.attrs["factors"] = [short[f] for f in factors]
    return out


__all__ = ["ITEMS", "conditions_table", "run_summary"]
