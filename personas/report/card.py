"""The population report card: is this population what the spec asked for, and are its texts varied?

Sections (each stage timed, since a million personas is the expected size):
- fit: realised vs target per attribute with total variation distance (``describe``), and the
  attributes the constraints keep from their targets (target, attainable, realised per cell);
- distributions: per numeric attribute a histogram of realised values next to the target's share
  of each bin; per conditional attribute one panel per parent value (small multiples);
- coverage: for every pair of categorical attributes, occupied cells vs the cells expected to be
  occupied if the pair were independent with the target marginals (sum of 1 - (1 - p_a p_b)^n);
- names: distinct share of each identity ``name`` column;
- backgrounds: exact and near-duplicate rates, distinct-n, length distribution (``text_stats``)
  and the gate's contradiction rates;
- examples: a seeded sample of personas with their backgrounds and gate verdicts (plus a few of
  the personas the gate flagged, marked as such).
``write_report_card`` writes ``report_card.json`` and ``report_card.html`` (figures embedded; see
``card_html.py``).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.parquet_io import write_text_atomic
from crowdlab.personas.sampling.describe import describe, numeric_target
from crowdlab.personas.sampling.spec import (
    Categorical,
    ConditionalAttribute,
    IdentityAttribute,
    PopulationSpec,
    TemplateAttribute,
    categories_of,
)

MAX_PAIR_ATTRIBUTES = 15
MAX_PANELS = 12  # parent values shown for a conditional attribute (the most common ones)
HISTOGRAM_BINS = 40
MAX_INTEGER_BINS = 120  # an integer attribute spanning at most this many values gets one bin per value
EXAMPLES = 5
FLAGGED_EXAMPLES = 2


def coverage(table: pa.Table, spec: PopulationSpec) -> list[dict[str, Any]]:
    names = [a.name for a in spec.attributes if categories_of(a) is not None and a.name in table.column_names][:MAX_PAIR_ATTRIBUTES]
    n = table.num_rows
    codes, targets = {}, {}
    for name in names:
        attr = spec.attribute(name)
        cats = categories_of(attr) or []
        codes[name] = pc.index_in(table.column(name), value_set=pa.array(cats, pa.string())).to_numpy(zero_copy_only=False)
        if isinstance(attr, Categorical):
            targets[name] = attr.probabilities
        else:  # conditional: its realised marginal stands in for the target
            targets[name] = np.bincount(codes[name], minlength=len(cats)) / max(n, 1)
    out = []
    for x, y in itertools.combinations(names, 2):
        ky = len(targets[y])
        occupied = len(np.unique(codes[x].astype(np.int64) * ky + codes[y]))
        p = np.outer(targets[x], targets[y]).ravel()
        expected = float((1 - (1 - p) ** n).sum())
        out.append({"pair": f"{x} x {y}", "cells": int(p.size), "occupied": occupied, "expected_occupied": expected})
    return out


def name_uniqueness(table: pa.Table, spec: PopulationSpec) -> dict[str, float]:
    out = {}
    for attr in spec.attributes:
        if isinstance(attr, IdentityAttribute) and attr.field in ("name", "email") and attr.name in table.column_names:
            out[attr.name] = pc.count_distinct(table.column(attr.name)).as_py() / max(table.num_rows, 1)
    return out


def histogram(dist: Any, values: np.ndarray) -> dict[str, Any]:
    """Realised and target share per bin over the target's central 99 % (the rest counted apart)."""
    grid, _ = numeric_target(dist)
    lo, hi = np.quantile(grid, [0.005, 0.995])
    if dist.integer and hi - lo + 1 <= MAX_INTEGER_BINS:
        edges = np.arange(math.floor(lo), math.ceil(hi) + 2) - 0.5
    else:
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, HISTOGRAM_BINS + 1)
    values = np.asarray(values, dtype=float)
    n = max(len(values), 1)

    def shares(x: np.ndarray, total: int) -> tuple[list[float], float, float]:
        counts, _ = np.histogram(x, bins=edges)
        return (counts / total).tolist(), float((x < edges[0]).sum() / total), float((x > edges[-1]).sum() / total)

    realised, below, above = shares(values, n)
    target, t_below, t_above = shares(grid, len(grid))
    return {"edges": edges.tolist(), "realised": realised, "target": target, "n": int(len(values)),
            "outside": {"realised_below": below, "realised_above": above, "target_below": t_below, "target_above": t_above}}


def distributions(table: pa.Table, spec: PopulationSpec) -> dict[str, Any]:
    """Histogram data for numeric attributes; one panel per parent value for conditional ones."""
    out: dict[str, Any] = {}
    for attr in spec.attributes:
        if attr.name not in table.column_names or isinstance(attr, (IdentityAttribute, TemplateAttribute, Categorical)):
            continue
        if not isinstance(attr, ConditionalAttribute):
            out[attr.name] = {"kind": "numeric", "histogram": histogram(attr, table.column(attr.name).to_numpy())}
            continue
        parent = table.column(attr.on)
        counts = sorted(pc.value_counts(parent).to_pylist(), key=lambda c: -c["counts"])
        panels = []
        for entry in counts[:MAX_PANELS]:
            value = entry["values"]
            dist = attr.cases.get(value, attr.default)
            if dist is None:
                continue
            child = pc.filter(table.column(attr.name), pc.equal(parent, value))
            panel: dict[str, Any] = {"value": value, "n": int(entry["counts"]), "case": value in attr.cases}
            if attr.is_categorical:
                realised = {c["values"]: c["counts"] / max(len(child), 1) for c in pc.value_counts(child).to_pylist()}
                target = dict(zip(dist.categories, dist.probabilities.tolist()))
                panel["categories"] = [c for c in attr.categories if c in target or c in realised]
                panel["target"] = [target.get(c, 0.0) for c in panel["categories"]]
                panel["realised"] = [realised.get(c, 0.0) for c in panel["categories"]]
            else:
                panel["histogram"] = histogram(dist, child.to_numpy())
            panels.append(panel)
        out[attr.name] = {"kind": "conditional", "on": attr.on, "categorical": attr.is_categorical,
                          "panels": panels, "parent_values": len(counts)}
    return out


def examples(table: pa.Table, spec: PopulationSpec, seed: int = 0, k: int = EXAMPLES) -> list[dict[str, Any]]:
    """A seeded sample of personas (and up to FLAGGED_EXAMPLES the gate flagged), as plain rows."""
    n = table.num_rows
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    picked = [(int(i), "random") for i in np.sort(rng.choice(n, size=min(k, n), replace=False))]
    if "background_consistent" in table.column_names:
        ok = np.asarray(table.column("background_consistent").to_numpy(zero_copy_only=False), dtype=bool)
        flagged = np.setdiff1d(np.flatnonzero(~ok), [i for i, _ in picked])
        if flagged.size:
            extra = np.sort(rng.choice(flagged, size=min(FLAGGED_EXAMPLES, flagged.size), replace=False))
            picked += [(int(i), "flagged by the gate") for i in extra]
    rows = table.take(pa.array([i for i, _ in picked])).to_pylist()
    attributes = [a.name for a in spec.attributes if a.name in table.column_names]
    out = []
    for (index, why), row in zip(picked, rows):
        example: dict[str, Any] = {"row": index, "agent_id": row.get("agent_id"), "chosen": why,
                                   "attributes": {a: row[a] for a in attributes}}
        if "background" in row:
            example["background"] = row["background"]
            example["gate"] = {
                "consistent": row.get("background_consistent"),
                "tries": row.get("background_tries"),
                "mismatch": row.get("background_mismatch"),
                "error": row.get("background_error"),
            }
        out.append(example)
    return out


def report_card(
    table: pa.Table, spec: PopulationSpec | None = None, *, threshold: float = 0.8, num_perm: int = 64, example_seed: int = 0
) -> dict[str, Any]:
    """Every figure of the card as plain JSON-able data (``stages_s`` holds each stage's time)."""
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    fit = describe(table, spec)
    if spec is None:
        from crowdlab.personas.sampling.io import spec_info

        spec = spec_info(table.schema).spec
    stages["fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    card: dict[str, Any] = {
        "spec": fit.spec_name,
        "n": fit.n,
        "max_tvd": fit.max_tvd,
        "attributes": [
            {"name": a.name, "kind": a.kind, "tvd": a.tvd, "note": a.note, "flag": a.flag,
             "departure": [asdict(c) for c in a.departure], "rows": [asdict(r) for r in a.rows]}
            for a in fit.attributes
        ],
        "constraints": [{"name": c.name, "doc": c.doc} for c in spec.constraints],
        "coverage": coverage(table, spec),
    }
    stages["coverage_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    card["distributions"] = distributions(table, spec)
    stages["distributions_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    card["names"] = name_uniqueness(table, spec)
    stages["names_s"] = time.perf_counter() - t0
    if "background" in table.column_names:
        from crowdlab.personas.backgrounds.write import contradiction_rates
        from crowdlab.personas.report.text_stats import text_stats

        stats = text_stats(table.column("background"), threshold=threshold, num_perm=num_perm)
        bg = asdict(stats)
        stages.update({f"backgrounds_{k}": v for k, v in bg.pop("stages_s").items()})
        bg["contradiction_rate"] = contradiction_rates(table)
        card["backgrounds"] = bg
    t0 = time.perf_counter()
    card["examples"] = examples(table, spec, example_seed)
    card["example_seed"] = example_seed
    stages["examples_s"] = time.perf_counter() - t0
    card["stages_s"] = stages
    return card


def write_report_card(table: pa.Table, out_dir: str | Path, spec: PopulationSpec | None = None, *, example_seed: int = 0) -> dict[str, Any]:
    """Compute the card and write report_card.json and report_card.html into ``out_dir``."""
    from crowdlab.personas.report.card_html import render

    card = report_card(table, spec, example_seed=example_seed)
    t0 = time.perf_counter()
    html = render(card)
    card["stages_s"]["plots_s"] = time.perf_counter() - t0
    out = Path(out_dir)
    write_text_atomic(json.dumps(card, indent=2, default=_json_default, ensure_ascii=False), out / "report_card.json")
    write_text_atomic(html, out / "report_card.html")
    return card


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)  # dates and the like in example rows


