"""The report card as one HTML page: figures (matplotlib, embedded PNG) and a jinja2 template.

Everything is drawn from the card's JSON data (``report_card.report_card``), so the page and
``report_card.json`` always agree. One figure per categorical attribute (target vs realised
shares), one histogram per numeric attribute (realised share per bin, target as a line), one
grid of small panels per conditional attribute (one per parent value), and the length of the
backgrounds. Legends sit above the plots, never on the data.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

TARGET_COLOUR = "#222222"
REALISED_COLOUR = "#4C78A8"
PANEL_COLUMNS = 4


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _legend_above(ax: Any) -> None:
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False, fontsize=8)


def _bars(ax: Any, labels: list[str], target: list[float], realised: list[float], fontsize: int = 7) -> None:
    y = np.arange(len(labels))
    ax.barh(y - 0.2, target, 0.4, label="target", color="#BBBBBB", edgecolor=TARGET_COLOUR, linewidth=0.5)
    ax.barh(y + 0.2, realised, 0.4, label="realised", color=REALISED_COLOUR)
    ax.set_yticks(y, labels, fontsize=fontsize)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(_percent())
    ax.tick_params(axis="x", labelsize=7)


def _percent() -> Any:
    return PercentFormatter(xmax=1.0, decimals=None)  # as many decimals as the tick spacing needs


def _histogram(ax: Any, h: dict[str, Any]) -> None:
    edges = np.array(h["edges"])
    ax.stairs(h["realised"], edges, fill=True, color=REALISED_COLOUR, alpha=0.75, label="realised")
    ax.stairs(h["target"], edges, color=TARGET_COLOUR, linewidth=1.2, label="target")
    ax.yaxis.set_major_formatter(_percent())
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_formatter(FuncFormatter(_compact))
    ax.tick_params(labelsize=7)


def _compact(value: float, _: Any = None) -> str:
    """Tick labels that fit a small panel: 45000 -> 45k, 1200000 -> 1.2M."""
    for scale, suffix in ((1e6, "M"), (1e4, "k")):
        if abs(value) >= scale:
            return f"{value / (scale if suffix == 'M' else 1e3):g}{suffix}"
    return f"{value:g}"


def categorical_figure(attr: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    shares = [r for r in attr["rows"] if r["share"] and r["target"] is not None]
    if not shares or len(shares) > 30:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(shares) + 0.9))
    _bars(ax, [r["label"] for r in shares], [r["target"] for r in shares], [r["realised"] for r in shares])
    ax.set_xlabel("share of personas", fontsize=8)
    _legend_above(ax)
    return _png(fig)


def numeric_figure(name: str, data: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 2.4))
    _histogram(ax, data["histogram"])
    ax.set_xlabel(name, fontsize=8)
    ax.set_ylabel("share per bin", fontsize=8)
    _legend_above(ax)
    return _png(fig)


def conditional_figure(name: str, data: dict[str, Any]) -> str | None:
    """Small multiples: one panel per parent value, the same axes kind in every panel."""
    import matplotlib.pyplot as plt

    panels = data["panels"]
    if not panels:
        return None
    cols = min(PANEL_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / cols)
    height = 0.25 * max(len(p.get("categories", [])) for p in panels) + 1.0 if data["categorical"] else 1.9
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, height * rows + 0.4), squeeze=False,
                             sharex=not data["categorical"])
    for ax, panel in zip(axes.ravel(), panels):
        if data["categorical"]:
            _bars(ax, panel["categories"], panel["target"], panel["realised"], fontsize=6)
        else:
            _histogram(ax, panel["histogram"])
        ax.set_title(f"{data['on']} = {panel['value']}\n(n = {panel['n']:,}{'' if panel['case'] else ', default'})", fontsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False, fontsize=8)
    fig.suptitle(f"{name} given {data['on']}", x=0.5, y=1.0, fontsize=9, va="bottom")
    fig.tight_layout()
    return _png(fig)


def length_figure(histogram: Any) -> str:
    import matplotlib.pyplot as plt

    edges, counts = histogram
    fig, ax = plt.subplots(figsize=(6.5, 2.2))
    ax.stairs(counts, edges, fill=True, color=REALISED_COLOUR)
    ax.set_xlabel("words per background", fontsize=8)
    ax.set_ylabel("personas", fontsize=8)
    ax.tick_params(labelsize=7)
    return _png(fig)


def figures(card: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{attribute: {figure kind: base64 PNG}}, plus ``{"background length": {"length": ...}}``."""
    import matplotlib

    matplotlib.use("Agg")
    out: dict[str, dict[str, str]] = {}
    dists = card.get("distributions", {})
    for attr in card["attributes"]:
        name = attr["name"]
        data = dists.get(name)
        png = None
        if data is None and attr["kind"] == "categorical":
            kind, png = "bars", categorical_figure(attr)
        elif data is not None and data["kind"] == "numeric":
            kind, png = "histogram", numeric_figure(name, data)
        elif data is not None and data["kind"] == "conditional":
            kind, png = "small-multiples", conditional_figure(name, data)
        if png is not None:
            out[name] = {kind: png}
    if "backgrounds" in card:
        out["background length"] = {"length": length_figure(card["backgrounds"]["histogram"])}
    return out


HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{{ card.spec }} report card</title>
<style>
body{font-family:system-ui,sans-serif;max-width:980px;margin:auto;padding:0 12px;color:#222}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.flag{background:#fff3cd;border-left:4px solid #e0a800;padding:4px 8px;margin:6px 0;font-size:14px}
.ok{color:#2e7d32}.bad{color:#b71c1c;font-weight:600}
#attribute-grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:4px 18px}
section.attribute{border-top:1px solid #ddd;margin-top:8px;min-width:0}section.attribute.wide{grid-column:1 / -1}
section.attribute h3{margin:8px 0 4px}
img.fig{max-width:100%;display:block}
.example{border:1px solid #ddd;padding:6px 10px;margin:8px 0;font-size:14px}
.example .facts{color:#555;font-size:13px}.example blockquote{margin:6px 0 6px 8px;font-style:italic}
nav a{margin-right:10px;font-size:14px}
</style></head><body>
<h1>{{ card.spec }}: {{ "{:,}".format(card.n) }} personas</h1>
<nav><a href="#fit">fit</a><a href="#constraints">constraints</a><a href="#attributes">attributes</a><a href="#coverage">coverage</a>
<a href="#names">names</a>{% if card.backgrounds %}<a href="#backgrounds">backgrounds</a>{% endif %}<a href="#examples">examples</a></nav>

<section id="fit"><h2>Fit per attribute</h2><p>largest TVD (total variation distance, 0 = exact): {{ "%.4f"|format(card.max_tvd) }}</p>
<table><tr><th>attribute</th><th>kind</th><th>TVD</th><th>note</th><th>flag</th></tr>
{% for a in card.attributes %}<tr><td><a href="#attr-{{ loop.index }}">{{ a.name }}</a></td><td>{{ a.kind }}</td><td class="num">{{ "-" if a.tvd is none else "%.4f"|format(a.tvd) }}</td><td>{{ a.note }}</td><td>{% if a.flag %}<span class="bad">flagged</span>{% endif %}</td></tr>
{% endfor %}</table></section>

<section id="constraints"><h2>Constraints</h2>
{% if not card.constraints %}<p>The spec has no constraints.</p>
{% else %}<p>{{ card.constraints|length }} feasibility rule(s): {% for c in card.constraints %}<code>{{ c.name }}</code>{{ ", " if not loop.last }}{% endfor %}.
Sampling keeps each attribute's target marginal under them where a feasible population with those marginals exists.</p>
{% set flagged = card.attributes|selectattr("flag")|list %}
{% if not flagged %}<p class="ok">Every target marginal is attainable under the constraints.</p>{% endif %}
{% for a in flagged %}<div class="flag" data-flag="{{ a.name }}"><b>{{ a.name }}</b>: {{ a.flag }}</div>
{% if a.departure %}<table class="departure"><tr><th>{{ a.name }}</th><th>target</th><th>attainable</th><th>realised</th></tr>
{% for c in a.departure %}<tr><td>{{ c.label }}</td><td class="num">{{ "%.2f%%"|format(100 * c.target) }}</td><td class="num">{{ "%.2f%%"|format(100 * c.attainable) }}</td><td class="num">{{ "%.2f%%"|format(100 * c.realised) }}</td></tr>{% endfor %}</table>{% endif %}
{% endfor %}{% endif %}</section>

<section id="attributes"><h2>Attributes</h2><div id="attribute-grid">
{% for a in card.attributes %}{% set d = card.distributions.get(a.name) %}
<section class="attribute{{ ' wide' if (d and d.kind == 'conditional') or a.kind == 'template' }}" id="attr-{{ loop.index }}" data-attribute="{{ a.name }}" data-kind="{{ a.kind }}">
<h3>{{ a.name }} <small>({{ a.kind }}{% if a.tvd is not none %}, TVD {{ "%.4f"|format(a.tvd) }}{% endif %})</small></h3>
{% if a.flag %}<div class="flag">{{ a.flag }}</div>{% endif %}
{% for kind, png in figures.get(a.name, {}).items() %}<img class="fig" data-figure="{{ kind }}" data-attribute="{{ a.name }}" alt="{{ a.name }}: {{ kind }}" src="data:image/png;base64,{{ png }}">{% endfor %}
{% if d and d.kind == "numeric" %}{% set o = d.histogram.outside %}<p><small>Bins cover the target's central 99 %; outside them: realised {{ "%.2f%%"|format(100 * (o.realised_below + o.realised_above)) }}, target {{ "%.2f%%"|format(100 * (o.target_below + o.target_above)) }}.</small></p>{% endif %}
{% if d and d.kind == "conditional" and d.parent_values > d.panels|length %}<p><small>The {{ d.panels|length }} most common of {{ d.parent_values }} values of {{ d.on }} shown.</small></p>{% endif %}
{% if a.kind in ("identity", "template") %}<table><tr><th>most common values</th><th>share</th></tr>{% for r in a.rows %}<tr><td>{{ r.label }}</td><td class="num">{{ "%.3f%%"|format(100 * r.realised) }}</td></tr>{% endfor %}</table>{% endif %}
{% if d is none and a.kind != "categorical" and a.rows and a.kind not in ("identity", "template") %}<table><tr><th>statistic</th><th>target</th><th>realised</th></tr>{% for r in a.rows %}<tr><td>{{ r.label }}</td><td class="num">{{ "-" if r.target is none else "%.4g"|format(r.target) }}</td><td class="num">{{ "%.4g"|format(r.realised) }}</td></tr>{% endfor %}</table>{% endif %}
</section>{% endfor %}</div></section>

<section id="coverage"><h2>Two-way coverage</h2><p>Occupied cells of each pair of categorical attributes, against the number expected if the pair were independent with the target shares.</p>
<table><tr><th>pair</th><th>cells</th><th>occupied</th><th>expected occupied</th></tr>
{% for c in card.coverage %}<tr><td>{{ c.pair }}</td><td class="num">{{ c.cells }}</td><td class="num">{{ c.occupied }}</td><td class="num">{{ "%.1f"|format(c.expected_occupied) }}</td></tr>{% endfor %}</table></section>

<section id="names"><h2>Names</h2><ul>{% for k, v in card.names.items() %}<li>{{ k }}: {{ "%.2f%%"|format(100 * v) }} distinct</li>{% else %}<li>no name columns</li>{% endfor %}</ul></section>

{% if card.backgrounds %}{% set b = card.backgrounds %}<section id="backgrounds"><h2>Backgrounds</h2><table>
<tr><td>exact-duplicate rate</td><td class="num">{{ "%.3f%%"|format(100 * b.exact_duplicate_rate) }}</td></tr>
<tr><td>near-duplicate rate (Jaccard &ge; {{ b.lsh.threshold }}, MinHash LSH)</td><td class="num">{{ "%.3f%%"|format(100 * b.near_duplicate_rate) }}</td></tr>
{% for k, v in b.distinct.items() %}<tr><td>{{ k }}</td><td class="num">{{ "%.4f"|format(v) }}</td></tr>{% endfor %}
<tr><td>words (mean / median / 5%-95%)</td><td class="num">{{ "%.1f"|format(b.words.mean) }} / {{ b.words.q50 }} / {{ b.words.q05 }}-{{ b.words.q95 }}</td></tr>
{% for k, v in b.contradiction_rate.items() %}<tr><td>gate: {{ k|replace("_", " ") }}</td><td class="num">{{ "%.4f"|format(v) }}</td></tr>{% endfor %}</table>
{% for kind, png in figures.get("background length", {}).items() %}<img class="fig" data-figure="{{ kind }}" alt="background length" src="data:image/png;base64,{{ png }}">{% endfor %}
</section>{% endif %}

<section id="examples"><h2>Example {{ "backgrounds" if card.backgrounds else "personas" }}</h2>
<p><small>{{ card.examples|selectattr("chosen", "equalto", "random")|list|length }} personas drawn at random (seed {{ card.example_seed }}){% if card.examples|rejectattr("chosen", "equalto", "random")|list %}, and a few the consistency gate flagged{% endif %}.</small></p>
{% for e in card.examples %}<div class="example" data-example="{{ e.row }}" data-chosen="{{ e.chosen }}">
<div><b>agent {{ e.agent_id }}</b>{% if e.chosen != "random" %} <small>({{ e.chosen }})</small>{% endif %}
{% if e.gate %} &middot; gate: {% if e.gate.consistent %}<span class="ok" data-verdict="consistent">consistent</span>{% else %}<span class="bad" data-verdict="flagged">flagged{% if e.gate.mismatch %}: {{ e.gate.mismatch }}{% endif %}</span>{% endif %}, {{ e.gate.tries }} generation(s){% if e.gate.error %}, last error: {{ e.gate.error }}{% endif %}{% endif %}</div>
<div class="facts">{% for k, v in e.attributes.items() %}{{ k }}: {{ "%.6g"|format(v) if v is float else v }}{{ "; " if not loop.last }}{% endfor %}</div>
{% if e.background is defined %}<blockquote>{{ e.background or "(no text)" }}</blockquote>{% endif %}
</div>{% endfor %}</section>

<section id="stages"><h2>Stage times (s)</h2><ul>{% for k, v in card.stages_s.items() %}<li>{{ k }}: {{ "%.2f"|format(v) }}</li>{% endfor %}</ul></section>
</body></html>"""


def render(card: dict[str, Any]) -> str:
    """The card as a self-contained HTML page."""
    import jinja2

    env = jinja2.Environment(autoescape=True)
    return env.from_string(HTML).render(card=card, figures=figures(card))
