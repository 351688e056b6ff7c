"""The run's network: checked against the population, built from the run seed, stored as
``network.parquet`` and read back as a CSR in-neighbour index.

Everything a user can get wrong is found by ``check_network`` / ``build_network`` before the run
folder is touched, each as a ``ConfigError`` naming the field (``network.path``, ``network.m``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crowdlab.experiments.errors import ConfigError
from crowdlab.experiments.network import generate as gen
from crowdlab.experiments.network.config import (
    BarabasiAlbert, CompleteGroups, EdgeList, Homophily, StochasticBlock, WattsStrogatz,
)
from crowdlab.experiments.schema import network_schema
from crowdlab.hashing import combine

log = logging.getLogger(__name__)

NETWORK = "network.parquet"
_NETWORK_SALT = 0x4E7  # the network's random stream, apart from the decisions' seeds


@dataclass(frozen=True)
class Graph:
    """Edges over agent positions (the persona table's row order), canonical and sorted."""

    n: int
    source: np.ndarray  # int64 positions
    target: np.ndarray
    weight: np.ndarray  # float64, 1.0 unless the edge list gives weights
    directed: bool


def check_network(network: Any, columns: list[str], n: int | None) -> None:
    """What can be checked from the persona columns and size alone (preflight, nothing sampled)."""
    if network is None:
        return
    for name in [*network.attribute_columns(), *network.homophily_on]:
        if name not in columns:
            field = "network.homophily_on" if name in network.homophily_on and \
                name not in network.attribute_columns() else f"network.{_column_field(network)}"
            raise ConfigError(field, f"persona column {name!r} does not exist (the population has "
                                     f"{', '.join(c for c in columns if c != 'agent_id')})")
    if n is not None:
        _check_size(network, n)
    if isinstance(network, EdgeList):
        _read_edge_list(network)  # columns, types, weights, self-loops; ids need the population


def _column_field(network: Any) -> str:
    return "columns" if isinstance(network, Homophily) else "column"


def _check_size(network: Any, n: int) -> None:
    if isinstance(network, BarabasiAlbert) and network.m >= n:
        raise ConfigError("network.m", f"must be smaller than the number of agents ({n}), got {network.m}")
    if isinstance(network, WattsStrogatz) and network.k >= n:
        raise ConfigError("network.k", f"must be smaller than the number of agents ({n}), got {network.k}")


def _read_edge_list(network: EdgeList) -> pa.Table:
    path = Path(network.path)
    if not path.is_file():
        raise ConfigError("network.path", f"file not found: {path}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError("network.path", f"{path} is not a Parquet file: {exc}") from None
    for name in ("source", "target"):
        if name not in table.column_names:
            raise ConfigError("network.path", f"{path} has no {name!r} column (an edge list needs source, target "
                                              "and optionally weight)")
        if not pa.types.is_integer(table[name].type):
            raise ConfigError("network.path", f"column {name!r} must hold integer agent ids, not {table[name].type}")
        if table[name].null_count:
            raise ConfigError("network.path", f"column {name!r} has {table[name].null_count} empty value(s)")
    if "weight" in table.column_names:
        w = table["weight"]
        if not (pa.types.is_floating(w.type) or pa.types.is_integer(w.type)):
            raise ConfigError("network.path", f"column 'weight' must be numeric, not {w.type}")
        wv = pc.cast(w, pa.float64()).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(wv) | (wv < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ConfigError("network.path", f"{int(bad.sum())} edge(s) have a negative or missing weight, "
                                              f"e.g. row {i}: {wv[i]}")
    if not network.allow_self_loops:
        loops = pc.equal(table["source"], table["target"]).to_numpy(zero_copy_only=False)
        if loops.any():
            i = int(np.flatnonzero(loops)[0])
            raise ConfigError("network.path", f"{int(loops.sum())} self-loop(s), e.g. agent "
                                              f"{table['source'][i].as_py()} (set allow_self_loops: true to keep them)")
    return table


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(int(combine(seed, salt=_NETWORK_SALT)) & ((1 << 63) - 1))


def _codes(personas: pa.Table, columns: list[str]) -> np.ndarray:
    return gen.codes_of([pc.cast(personas[c], pa.string()).fill_null("").to_numpy(zero_copy_only=False)
                         for c in columns])


def build_network(network: Any, personas: pa.Table, seed: int) -> Graph:
    """The graph over the persona table's rows; generated from ``seed`` (the run seed)."""
    n = personas.num_rows
    check_network(network, personas.column_names, n)
    rng = _rng(seed)
    directed = network.directed
    weight = None
    if isinstance(network, BarabasiAlbert):
        src, dst = gen.barabasi_albert(n, network.m, rng)
        if directed:  # influence flows from the chosen (earlier, popular) node to the newcomer
            src, dst = dst, src
    elif isinstance(network, WattsStrogatz):
        src, dst = gen.watts_strogatz(n, network.k, network.p, rng)
    elif isinstance(network, StochasticBlock):
        codes = _codes(personas, [network.column]) if network.column else \
            np.minimum(np.arange(n) * network.blocks // n, network.blocks - 1)
        src, dst = gen.stochastic_block(codes, network.degree_in, network.degree_out, directed, rng)
    elif isinstance(network, Homophily):
        src, dst = gen.homophily(_codes(personas, network.columns), network.degree, network.homophily, directed, rng)
    elif isinstance(network, CompleteGroups):
        codes = _codes(personas, [network.column]) if network.column else np.arange(n) // network.group_size
        largest = int(np.bincount(codes).max())
        if largest > network.max_group:
            raise ConfigError("network.max_group", f"the largest group has {largest} agents, more than max_group "
                                                   f"{network.max_group} (edges grow with its square)")
        src, dst = gen.complete_groups(codes)
    else:
        src, dst, weight = _edge_list_positions(network, personas)
    if weight is None:
        s, d = gen.canonical(src, dst, directed, n)
        return Graph(n, s, d, np.ones(s.size), directed)
    return _sorted_weighted(src, dst, weight, directed, n, network.allow_self_loops)


def _edge_list_positions(network: EdgeList, personas: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = _read_edge_list(network)
    ids = personas["agent_id"].to_numpy().astype(np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    out = []
    for name in ("source", "target"):
        v = table[name].to_numpy().astype(np.int64)
        at = np.clip(np.searchsorted(sorted_ids, v), 0, ids.size - 1)
        unknown = sorted_ids[at] != v
        if unknown.any():
            raise ConfigError("network.path", f"{int(unknown.sum())} edge(s) name agent ids the population does not "
                                              f"have, e.g. {name} {int(v[unknown][0])}")
        out.append(order[at])
    w = pc.cast(table["weight"], pa.float64()).to_numpy(zero_copy_only=False) if "weight" in table.column_names \
        else np.ones(table.num_rows)
    return out[0], out[1], w


def _sorted_weighted(src: np.ndarray, dst: np.ndarray, w: np.ndarray, directed: bool, n: int,
                     loops: bool) -> Graph:
    """Canonical weighted edges: undirected as (min, max); a repeated edge keeps its first weight."""
    if not directed:
        src, dst = np.minimum(src, dst), np.maximum(src, dst)
    if not loops:
        keep = src != dst
        src, dst, w = src[keep], dst[keep], w[keep]
    key, first = np.unique(src * np.int64(n) + dst, return_index=True)
    if key.size < src.size:
        log.info("edge list: %d repeated edge(s) dropped (first weight kept)", src.size - key.size)
    return Graph(n, key // n, key % n, w[first], directed)


def graph_table(graph: Graph, agent_ids: np.ndarray) -> pa.Table:
    """``network.parquet``: edges as agent ids, sorted by (source, target)."""
    ids = np.asarray(agent_ids, np.int64)
    return pa.Table.from_arrays([pa.array(ids[graph.source]), pa.array(ids[graph.target]), pa.array(graph.weight)],
                                schema=network_schema(graph.directed))


@dataclass(frozen=True)
class InIndex:
    """CSR in-neighbour index over positions: the senders agent i hears are
    ``senders[indptr[i]:indptr[i+1]]`` (with ``weights``), sorted by sender."""

    indptr: np.ndarray  # int64, n + 1
    senders: np.ndarray  # int64 positions
    weights: np.ndarray  # float64

    @property
    def n(self) -> int:
        return self.indptr.size - 1

    def in_degree(self) -> np.ndarray:
        return np.diff(self.indptr)


def in_index(graph: Graph) -> InIndex:
    """Who hears whom: a directed edge source -> target; an undirected edge both ways."""
    if graph.directed:
        recv, send, w = graph.target, graph.source, graph.weight
    else:
        recv = np.concatenate([graph.target, graph.source])
        send = np.concatenate([graph.source, graph.target])
        w = np.concatenate([graph.weight, graph.weight])
    n = np.int64(max(graph.n, 1))
    key = recv * n + send
    if (w == 1.0).all():  # one sort of the keys, no permutation to carry (about 2x faster at 10M ties)
        key.sort()
        w = np.ones(key.size)
    else:
        order = np.argsort(key)
        key, w = key[order], w[order]
    indptr = np.zeros(graph.n + 1, np.int64)
    np.cumsum(np.bincount(key // n, minlength=graph.n), out=indptr[1:])
    return InIndex(indptr, key % n, w)


def read_graph(run_dir: str | Path, agent_ids: np.ndarray) -> Graph:
    """The stored graph back over positions (the persona table's order)."""
    table = pq.read_table(Path(run_dir) / NETWORK)
    directed = (table.schema.metadata or {}).get(b"directed") == b"true"
    ids = np.asarray(agent_ids, np.int64)
    cols = [table[c].to_numpy().astype(np.int64) for c in ("source", "target")]
    if not (ids.size and ids[0] == 0 and ids[-1] == ids.size - 1 and (np.diff(ids) == 1).all()):  # ids != positions
        order = np.argsort(ids, kind="stable")
        cols = [order[np.searchsorted(ids[order], c)] for c in cols]
    return Graph(ids.size, cols[0], cols[1], table["weight"].to_numpy(), directed)
