"""Interviews of a run (``interviews/``, see experiments/interviews.py) as small tables for the
report: counts per condition, the distribution of each answer field, a few example text answers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from crowdlab.analysis.loading import PathLike, RunData, as_run

_NUMERIC = ("number", "integer")
_ORDERED = ("likert", "linear_scale", "choice", "multi_choice", "ranking")


def read_interviews(run: RunData | PathLike) -> pa.Table | None:
    """Every interview row of the run folders (None when no run has interviews)."""
    run = as_run(run)
    dirs = [d / "interviews" for d in run.run_dirs if (d / "interviews").is_dir()]
    files = [str(f) for d in dirs for f in sorted(Path(d).rglob("*.parquet"))]
    if not files:
        return None
    return ds.dataset(files, format="parquet").to_table()


def _declarations(table: pa.Table) -> dict[str, str]:
    """answer column -> answer type, from the schema's field metadata."""
    out = {}
    for f in table.schema:
        meta = f.metadata or {}
        if f.name.startswith("answer_") and b"answer_type" in meta:
            out[f.name] = meta[b"answer_type"].decode()
    return out


def interview_tables(run: RunData | PathLike, examples: int = 3) -> dict[str, pd.DataFrame] | None:
    """``counts`` (condition, after_round, asked, valid, errors by cause), ``fields`` (per
    condition and field: n, mean/sd/quantiles of numbers, share per option of categories, mean
    length of texts) and ``examples`` (the first valid answers of each text field by agent id)."""
    table = read_interviews(run)
    if table is None:
        return None
    types = _declarations(table)
    df = table.drop_columns(["answer_errors"]).to_pandas()
    counts = (df.groupby(["condition_id", "after_round"])
              .agg(asked=("agent_id", "size"), valid=("valid", "sum")).reset_index())
    causes = df[~df["valid"]].groupby("condition_id")["error"].agg(
        lambda s: ", ".join(f"{k}: {v}" for k, v in s.fillna("?").str.split(":").str[0].value_counts().items()))
    counts["invalid_causes"] = [causes.get(c, "") for c in counts["condition_id"]]
    rows = []
    ex = []
    for col, kind in types.items():
        name = col.removeprefix("answer_")
        for cid, part in df.groupby("condition_id"):
            values = part.loc[part["valid"] & part[col].notna(), col]
            row = {"condition_id": cid, "field": name, "type": kind, "n": int(values.size)}
            if kind in _NUMERIC:
                v = values.astype(float)
                row.update({"summary": f"mean {v.mean():.2f}, sd {v.std():.2f}, median {v.median():.2f}, "
                                       f"p10 {v.quantile(0.1):.2f}, p90 {v.quantile(0.9):.2f}" if v.size else ""})
            elif kind in _ORDERED:
                flat = values.explode() if kind in ("multi_choice", "ranking") else values
                shares = flat.astype(str).value_counts(normalize=True).sort_index()
                row["summary"] = ", ".join(f"{k}: {v:.0%}" for k, v in shares.items())
            else:
                lengths = values.astype(str).str.len()
                row["summary"] = f"mean length {lengths.mean():.0f} characters" if values.size else ""
                for _, r in part[part["valid"] & part[col].notna()].sort_values("agent_id").head(examples).iterrows():
                    ex.append({"condition_id": cid, "field": name, "agent_id": int(r["agent_id"]),
                               "answer": str(r[col])})
            rows.append(row)
    return {"counts": counts, "fields": pd.DataFrame(rows), "examples": pd.DataFrame(ex)}


__all__ = ["interview_tables", "read_interviews"]
