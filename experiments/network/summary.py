"""What the manifest (and the report) says about a run's network: size, degree distribution
quantiles and homophily on persona attributes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.experiments.network.build import Graph

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def _quantiles(deg: np.ndarray) -> dict[str, float]:
    q = np.quantile(deg, QUANTILES) if deg.size else np.zeros(len(QUANTILES))
    return {f"p{round(x * 100)}": float(v) for x, v in zip(QUANTILES, q)} | {"mean": float(deg.mean()) if deg.size else 0.0}


def homophily(graph: Graph, values: np.ndarray) -> dict[str, float]:
    """Share of edges joining equal values, that share under random mixing (degree-weighted), and
    Coleman's index ``(observed - expected) / (1 - expected)`` (0 random, 1 only within)."""
    _, codes = np.unique(values, return_inverse=True)
    if graph.source.size == 0:
        return {"same_share": float("nan"), "expected_share": float("nan"), "coleman": float("nan")}
    same = float(np.mean(codes[graph.source] == codes[graph.target]))
    ends = np.bincount(np.concatenate([codes[graph.source], codes[graph.target]]), minlength=int(codes.max()) + 1)
    p = ends / ends.sum()
    expected = float(np.sum(p * p))
    coleman = (same - expected) / (1 - expected) if expected < 1 else float("nan")
    return {"same_share": round(same, 6), "expected_share": round(expected, 6), "coleman": round(coleman, 6)}


def summarise(graph: Graph, personas: pa.Table, network: Any) -> dict[str, Any]:
    """The manifest's ``network`` entry."""
    n = graph.n
    out_deg = np.bincount(graph.source, minlength=n)
    in_deg = np.bincount(graph.target, minlength=n)
    summary: dict[str, Any] = {"kind": network.kind, "directed": graph.directed, "nodes": n,
                               "edges": int(graph.source.size)}
    if graph.directed:
        summary["in_degree"] = _quantiles(in_deg)
        summary["out_degree"] = _quantiles(out_deg)
    else:
        summary["degree"] = _quantiles(in_deg + out_deg)
    summary["isolated"] = int(np.sum((in_deg + out_deg) == 0))
    columns = list(dict.fromkeys([*network.attribute_columns(), *network.homophily_on]))
    summary["homophily"] = {c: homophily(graph, pc.cast(personas[c], pa.string()).fill_null("")
                                         .to_numpy(zero_copy_only=False)) for c in columns}
    return summary
