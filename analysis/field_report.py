"""The report's sections for any scenario's answer fields: per field its distribution per
condition and round, breakdowns by persona attributes, and the comparison with human reference
data (``crowdlab.analysis.field_reference``). ``report.write_report`` renders them into the same
page as the beauty-contest sections (which stay for the beauty contest)."""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd

from crowdlab.analysis.field_reference import field_distances, field_fidelity
from crowdlab.analysis.fields import AnswerField, answer_fields, field_summary, is_beauty_contest, option_shares
from crowdlab.analysis.loading import PathLike, RunData

#: Columns of the per-field tables the report shows first (the rest follow).
_LEAD = ("condition_id", "round", "n", "n_valid", "mean", "ci_low", "ci_high", "median")


def _describe(af: AnswerField) -> str:
    d = af.declaration
    if af.kind == "numeric" and af.type not in ("likert", "linear_scale"):
        bounds = af.bounds()
        return f"{af.type}" + (f" in [{bounds[0]:g}, {bounds[1]:g}]" if bounds else "")
    if af.type in ("likert", "linear_scale"):
        labels = af.point_labels()
        pts = af.points()
        return f"{af.type} {pts[0]}..{pts[-1]}" + (
            " (" + "; ".join(f"{p} = {label}" for p, label in labels.items()) + ")" if labels else "")
    if af.kind == "text":
        return f"{af.type}, at most {d.get('max_chars', '?')} characters"
    return f"{af.type}: " + ", ".join(af.options())


def field_overview(run: RunData | PathLike) -> pd.DataFrame:
    """One row per declared answer field (declaration order, free text last): field, type, what
    it accepts (bounds, scale points and labels, options, length cap) and its question. Empty
    for a built-in scenario, which declares no answer fields."""
    rows = [{"field": af.name, "type": af.type, "accepts": _describe(af), "question": af.question}
            for af in answer_fields(run)]
    return pd.DataFrame(rows, columns=["field", "type", "accepts", "question"])


def field_sections(run: RunData, block: Callable[[pd.DataFrame, str], str],
                   conditions: pd.DataFrame) -> list[dict]:
    """One section per answer field: name, question, type line, table (condition x round)."""
    sections = []
    factors = [c for c in conditions.columns if c not in ("condition_id", "p", "offset", "range")]
    for af in answer_fields(run):
        table = field_summary(run, af.name).drop(columns=["field"])
        if factors:
            table = table.merge(conditions[["condition_id", *factors]], on="condition_id", how="left")
            order = ["condition_id", *factors, *[c for c in table.columns if c not in factors and c != "condition_id"]]
            table = table[order]
        if af.kind == "text":
            note = "answered: valid and non-empty; lengths in characters."
        elif af.kind == "numeric":
            note = ("mean with a 95% normal interval over valid answers (agents and replicates pooled as if "
                    "independent); q10..q90: quantiles.")
            if af.type in ("likert", "linear_scale"):
                note += " Then the share of valid answers at each point."
        elif af.kind == "multi":
            note = "share of valid answers selecting each option (an answer may select several)."
        elif af.kind == "ranking":
            note = "share of valid answers ranking each option first."
        else:
            note = "share of valid answers choosing each option."
        sections.append({"name": af.name, "question": af.question, "type": _describe(af), "note": note,
                         "table": block(table, "condition x round rows")})
    return sections


def field_breakdowns(run: RunData, attributes: Sequence[str], block: Callable[[pd.DataFrame, str], str]
                     ) -> list[tuple[str, list[tuple[str, str]]]]:
    """Per attribute, per field: the summary by condition, round and attribute value."""
    out = []
    for attribute in attributes:
        tables = []
        for af in answer_fields(run, include_text=False):
            table = field_summary(run, af.name, attribute=attribute).drop(columns=["field"])
            tables.append((af.name, block(table, f"condition x round x {attribute} rows")))
        out.append((attribute, tables))
    return out


def human_tables(run: RunData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fidelity rows, distance rows) against the answer-field reference data."""
    return field_fidelity(run), field_distances(run)


def first_field_summary(run: RunData) -> pd.DataFrame:
    """The per-round table ``crowdlab report`` prints for a game that is not the beauty contest:
    the primary (first numeric) field's mean and interval, else the first option field's modal
    option and share."""
    fields = answer_fields(run, include_text=False)
    numeric = [f for f in fields if f.kind == "numeric"]
    if numeric:
        table = field_summary(run, numeric[0].name)
        return table[["condition_id", "round", "field", "n", "n_valid", "mean", "ci_low", "ci_high", "median"]]
    if fields:
        af = fields[0]
        shares = option_shares(run, af.name, long=True)
        top = shares.sort_values("share", ascending=False).drop_duplicates(["condition_id", "round"])
        return top.sort_values(["condition_id", "round"])[
            ["condition_id", "round", "field", "n", "n_valid", "option", "share", "ci_low", "ci_high"]]
    return pd.DataFrame()


__all__ = ["field_breakdowns", "field_overview", "field_sections", "first_field_summary", "human_tables",
           "is_beauty_contest"]
