"""How conditions are named and laid out in figures: factor values, panels and colours.

A design crosses factors (``scenario.variant`` x ``scenario.p`` x ``backend.tau`` ...), so a
figure that draws one line per condition turns into spaghetti past a handful of conditions, and
``c017`` tells a reader nothing. Here each condition gets a label made of its factor values
(``variant=P2, p=0.6667``), and conditions are split into small multiples: the last factor of
the design with at most ``MAX_HUE_LEVELS`` levels becomes the colour inside a panel, every
combination of the other factors becomes one panel. At 48 conditions (4 x 3 x 4) that is 12
panels of 4 lines each, with one legend outside the axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_hex

#: Most colours one panel uses; past this a factor becomes panels, never repeated colours.
MAX_HUE_LEVELS = 8
#: Columns a conditions / metrics table has that are not design factors.
_NOT_FACTORS = frozenset({
    "run_id", "condition_id", "replicate", "round", "group", "n", "n_valid", "n_invalid", "invalid_rate",
    "mean", "median", "std", "mode", "target", "winning_value", "n_winners", "winner_ids", "p", "offset", "lo",
    "hi", "equilibrium", "distance_to_equilibrium", "mean_ratio", "distance_ratio",
})


def short_names(factors: Sequence[str]) -> dict[str, str]:
    """``scenario.variant`` -> ``variant``, unless two factors would then share a name."""
    last = [f.rsplit(".", 1)[-1] for f in factors]
    return {f: (s if last.count(s) == 1 else f) for f, s in zip(factors, last)}


def factor_columns(frame: pd.DataFrame) -> list[str]:
    """Design-factor columns of a conditions or metrics table, in design order."""
    return [c for c in frame.columns if c not in _NOT_FACTORS]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _game_label(row: pd.Series) -> str:
    label = f"p={float(row['p']):.4g}"
    if "offset" in row and float(row["offset"]) != 0:
        label += f", offset={float(row['offset']):g}"
    return label


@dataclass(frozen=True)
class Facets:
    """Labels, panels and colours of a set of conditions (see the module docstring)."""

    labels: dict[str, str]                  # condition id -> "variant=P2, p=0.6667"
    panels: list[tuple[str, list[str]]]     # (panel title, condition ids drawn in it)
    hue: str | None                         # short name of the colour factor, None: one condition a panel
    hue_of: dict[str, str]                  # condition id -> its colour's legend entry ("tau=0.5")
    colors: dict[str, str]                  # legend entry -> colour

    @property
    def condition_ids(self) -> list[str]:
        return list(self.labels)

    def color(self, condition_id: str) -> str:
        return self.colors.get(self.hue_of.get(condition_id, ""), "#4c72b0")

    def restrict(self, condition_ids: Sequence[str]) -> "Facets":
        """The same layout with only some conditions (empty panels dropped)."""
        keep = set(condition_ids)
        panels = [(t, [c for c in ids if c in keep]) for t, ids in self.panels]
        return Facets({c: l for c, l in self.labels.items() if c in keep}, [p for p in panels if p[1]], self.hue,
                      {c: h for c, h in self.hue_of.items() if c in keep}, self.colors)


def condition_facets(conditions: pd.DataFrame, factors: Sequence[str] | None = None,
                     max_hue_levels: int = MAX_HUE_LEVELS) -> Facets:
    """Lay out the conditions of ``conditions`` (one row per condition_id; factor columns as
    strings; p and offset) in panels and colours. ``factors`` defaults to every non-game column."""
    cond = conditions.drop_duplicates("condition_id").copy()
    cond["condition_id"] = cond["condition_id"].astype(str)
    cond = cond.sort_values("condition_id").reset_index(drop=True)
    factors = factor_columns(cond) if factors is None else [f for f in factors if f in cond]
    varying = [f for f in factors if cond[f].astype(str).nunique() > 1]
    short = short_names(varying)
    values = {f: cond[f].astype(str) for f in varying}
    ids = cond["condition_id"].tolist()
    if varying:
        labels = {cid: ", ".join(f"{short[f]}={values[f][i]}" for f in varying) for i, cid in enumerate(ids)}
    elif "p" in cond:
        labels = {cid: _game_label(row) for cid, (_, row) in zip(ids, cond.iterrows())}
    else:
        labels = {cid: cid for cid in ids}
    if len(set(labels.values())) < len(labels):  # e.g. several runs: keep labels unique
        labels = {cid: f"{cid} {label}" for cid, label in labels.items()}
    hue = next((f for f in reversed(varying) if cond[f].astype(str).nunique() <= max_hue_levels), None)
    if hue is None:
        return Facets(labels, [(labels[c], [c]) for c in ids], None, {c: "" for c in ids}, {"": "#4c72b0"})
    rest = [f for f in varying if f != hue]
    panels: dict[str, list[str]] = {}
    for i, cid in enumerate(ids):
        title = ", ".join(f"{short[f]}={values[f][i]}" for f in rest)
        panels.setdefault(title, []).append(cid)
    levels = list(dict.fromkeys(values[hue]))
    if all(_is_number(v) for v in levels):
        levels = sorted(levels, key=float)
        cmap = colormaps["viridis"]
        palette = [to_hex(cmap(x)) for x in np.linspace(0.0, 0.85, len(levels))]
    else:
        palette = [to_hex(colormaps["tab10"](i)) for i in range(len(levels))]
    entries = [f"{short[hue]}={v}" for v in levels]
    hue_of = {cid: f"{short[hue]}={values[hue][i]}" for i, cid in enumerate(ids)}
    return Facets(labels, list(panels.items()), short[hue], hue_of, dict(zip(entries, palette)))


__all__ = ["Facets", "MAX_HUE_LEVELS", "condition_facets", "factor_columns", "short_names"]
