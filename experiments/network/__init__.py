"""Social networks as data: the ``network:`` config section, vectorised generators, the stored
``network.parquet`` and the CSR in-neighbour index the scenarios read (see docs/contracts.md)."""

from __future__ import annotations

from crowdlab.experiments.network.build import (
    NETWORK, Graph, InIndex, build_network, check_network, graph_table, in_index, read_graph,
)
from crowdlab.experiments.network.config import NETWORK_KINDS, NetworkConfig
from crowdlab.experiments.network.run_files import network_in_index, write_network

__all__ = ["NETWORK", "NETWORK_KINDS", "Graph", "InIndex", "NetworkConfig", "build_network", "check_network",
           "graph_table", "in_index", "network_in_index", "read_graph", "write_network"]
