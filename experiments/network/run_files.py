"""The network's place in a run folder: written by ``prepare_run`` beside the personas, read
once per process by the step functions (cached on the run context)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from crowdlab.experiments.network.build import NETWORK, Graph, InIndex, build_network, graph_table, in_index, read_graph
from crowdlab.experiments.network.summary import summarise
from crowdlab.parquet_io import write_table_atomic

log = logging.getLogger(__name__)


def write_network(run_dir: str | Path, network: Any, personas: pa.Table, graph: Graph | None,
                  seed: int) -> dict[str, Any]:
    """Write ``network.parquet`` (building the graph unless given) and return the manifest summary."""
    t0 = time.perf_counter()
    if graph is None:
        graph = build_network(network, personas, seed)
    ids = personas["agent_id"].to_numpy().astype(np.int64)
    write_table_atomic(graph_table(graph, ids), Path(run_dir) / NETWORK)
    summary = summarise(graph, personas, network)
    log.info("network %s: %d nodes, %d edges (%.1f s)", network.kind, graph.n, graph.source.size,
             time.perf_counter() - t0)
    return summary


def network_graph(ctx: Any) -> Graph:
    """The run's edges over positions in the persona table, read once per process."""
    return ctx._memo("network/graph", lambda: read_graph(ctx.run_dir, ctx.personas["agent_id"].to_numpy()))


def network_in_index(ctx: Any) -> InIndex:
    """The run's CSR in-neighbour index (positions in the persona table), built once per process."""
    return ctx._memo("network/in_index", lambda: in_index(network_graph(ctx)))
