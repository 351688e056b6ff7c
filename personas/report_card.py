"""The population report card: is this population what the spec asked for, and are its texts varied?

Sections (each stage timed, since a million personas is the expected size):
- fit: realised vs target per attribute with total variation distance (``describe``);
- coverage: for every pair of categorical attributes, occupied cells vs the cells expected to be
  occupied if the pair were independent with the target marginals (sum of 1 - (1 - p_a p_b)^n);
- names: distinct share of each identity ``name`` column;
- backgrounds: exact and near-duplicate rates, distinct-n, length distribution (``text_stats``)
  and the gate's contradiction rates.
``write_report_card`` writes ``report_card.json`` and ``report_card.html`` (plots embedded).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.parquet_io import write_text_atomic
from crowdlab.personas.describe import describe
from crowdlab.personas.spec import Categorical, IdentityAttribute, PopulationSpec, categories_of

MAX_PAIR_ATTRIBUTES = 15


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


def report_card(table: pa.Table, spec: PopulationSpec | None = None, *, threshold: float = 0.8, num_perm: int = 64) -> dict[str, Any]:
    """Every figure of the card as plain JSON-able data (``stages_s`` holds each stage's time)."""
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    fit = describe(table, spec)
    if spec is None:
        from crowdlab.personas.io import spec_info

        spec = spec_info(table.schema).spec
    stages["fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    card: dict[str, Any] = {
        "spec": fit.spec_name,
        "n": fit.n,
        "max_tvd": fit.max_tvd,
        "attributes": [{"name": a.name, "kind": a.kind, "tvd": a.tvd, "note": a.note, "rows": [asdict(r) for r in a.rows]} for a in fit.attributes],
        "coverage": coverage(table, spec),
    }
    stages["coverage_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    card["names"] = name_uniqueness(table, spec)
    stages["names_s"] = time.perf_counter() - t0
    if "background" in table.column_names:
        from crowdlab.personas.backgrounds import contradiction_rates
        from crowdlab.personas.text_stats import text_stats

        stats = text_stats(table.column("background"), threshold=threshold, num_perm=num_perm)
        bg = asdict(stats)
        stages.update({f"backgrounds_{k}": v for k, v in bg.pop("stages_s").items()})
        bg["contradiction_rate"] = contradiction_rates(table)
        card["backgrounds"] = bg
    card["stages_s"] = stages
    return card


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(card: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    for attr in card["attributes"]:
        shares = [r for r in attr["rows"] if r["share"] and r["target"] is not None]
        if not shares or len(shares) > 30:
            continue
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(shares) + 1))
        y = np.arange(len(shares))
        ax.barh(y - 0.2, [r["target"] for r in shares], 0.4, label="target")
        ax.barh(y + 0.2, [r["realised"] for r in shares], 0.4, label="realised")
        ax.set_yticks(y, [r["label"] for r in shares], fontsize=7)
        ax.set_title(f"{attr['name']} (TVD {attr['tvd']:.4f})" if attr["tvd"] is not None else attr["name"])
        ax.legend(fontsize=7)
        out[attr["name"]] = _png(fig)
    if "backgrounds" in card:
        edges, counts = card["backgrounds"]["histogram"]
        fig, ax = plt.subplots(figsize=(6, 2.5))
        ax.stairs(counts, edges, fill=True)
        ax.set_xlabel("words per background")
        ax.set_ylabel("personas")
        out["background length"] = _png(fig)
    return out


HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{{ card.spec }} report card</title>
<style>body{font-family:sans-serif;max-width:960px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style>
</head><body><h1>{{ card.spec }}: {{ "{:,}".format(card.n) }} personas</h1>
<h2>Fit per attribute</h2><p>largest TVD: {{ "%.4f"|format(card.max_tvd) }}</p>
<table><tr><th>attribute</th><th>kind</th><th>TVD</th><th>note</th></tr>
{% for a in card.attributes %}<tr><td>{{ a.name }}</td><td>{{ a.kind }}</td><td>{{ "-" if a.tvd is none else "%.4f"|format(a.tvd) }}</td><td>{{ a.note }}</td></tr>{% endfor %}</table>
{% for name, png in figures.items() %}<h3>{{ name }}</h3><img src="data:image/png;base64,{{ png }}">{% endfor %}
<h2>Two-way coverage</h2><table><tr><th>pair</th><th>cells</th><th>occupied</th><th>expected occupied</th></tr>
{% for c in card.coverage %}<tr><td>{{ c.pair }}</td><td>{{ c.cells }}</td><td>{{ c.occupied }}</td><td>{{ "%.1f"|format(c.expected_occupied) }}</td></tr>{% endfor %}</table>
<h2>Names</h2><ul>{% for k, v in card.names.items() %}<li>{{ k }}: {{ "%.2f%%"|format(100 * v) }} distinct</li>{% endfor %}</ul>
{% if card.backgrounds %}{% set b = card.backgrounds %}<h2>Backgrounds</h2><table>
<tr><td>exact-duplicate rate</td><td>{{ "%.3f%%"|format(100 * b.exact_duplicate_rate) }}</td></tr>
<tr><td>near-duplicate rate (Jaccard &ge; {{ b.lsh.threshold }}, MinHash LSH)</td><td>{{ "%.3f%%"|format(100 * b.near_duplicate_rate) }}</td></tr>
{% for k, v in b.distinct.items() %}<tr><td>{{ k }}</td><td>{{ "%.4f"|format(v) }}</td></tr>{% endfor %}
<tr><td>words (mean / median / 5%-95%)</td><td>{{ "%.1f"|format(b.words.mean) }} / {{ b.words.q50 }} / {{ b.words.q05 }}-{{ b.words.q95 }}</td></tr>
{% for k, v in b.contradiction_rate.items() %}<tr><td>{{ k }}</td><td>{{ "%.4f"|format(v) }}</td></tr>{% endfor %}</table>{% endif %}
<h2>Stage times (s)</h2><ul>{% for k, v in card.stages_s.items() %}<li>{{ k }}: {{ "%.2f"|format(v) }}</li>{% endfor %}</ul>
</body></html>"""


def write_report_card(table: pa.Table, out_dir: str | Path, spec: PopulationSpec | None = None) -> dict[str, Any]:
    """Compute the card and write report_card.json and report_card.html into ``out_dir``."""
    import jinja2

    card = report_card(table, spec)
    t0 = time.perf_counter()
    figures = plots(card)
    card["stages_s"]["plots_s"] = time.perf_counter() - t0
    out = Path(out_dir)
    write_text_atomic(json.dumps(card, indent=2, default=float), out / "report_card.json")
    html = jinja2.Environment(autoescape=True).from_string(HTML).render(card=card, figures=figures)
    write_text_atomic(html, out / "report_card.html")
    return card
