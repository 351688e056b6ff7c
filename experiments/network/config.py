"""The ``network:`` section of an experiment config: a generated graph or a loaded edge list.

Each kind is a pydantic model discriminated by ``kind``; parameter ranges are checked here, so a
bad value fails at load time naming its field (``network.m``, ``network.p``). What needs the
population (its size, its persona columns, its agent ids) is checked by ``network.checks`` before
anything is written.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Network(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    directed: bool = Field(False, description="edges point from source to target (who follows whom); "
                                              "undirected edges are stored once and read both ways")
    homophily_on: list[str] = Field(default_factory=list, description="persona columns whose homophily the "
                                                                      "manifest reports (beside the generator's own)")

    def attribute_columns(self) -> list[str]:
        """Persona columns the generator reads."""
        return []


class WattsStrogatz(_Network):
    """Ring lattice of ``k`` nearest neighbours, each edge rewired with probability ``p``."""

    kind: Literal["watts_strogatz"] = "watts_strogatz"
    k: int = Field(10, description="neighbours on the ring (even: k/2 each side)")
    p: float = Field(0.1, description="rewiring probability")

    @model_validator(mode="after")
    def _check(self) -> "WattsStrogatz":
        if self.k <= 0:
            raise ValueError(f"k: must be > 0, got {self.k}")
        if self.k % 2:
            raise ValueError(f"k: must be even (k/2 neighbours on each side), got {self.k}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p: a probability must lie in [0, 1], got {self.p}")
        return self


class BarabasiAlbert(_Network):
    """Preferential attachment: each new node links to ``m`` earlier nodes, chosen by degree."""

    kind: Literal["barabasi_albert"] = "barabasi_albert"
    m: int = Field(5, description="edges per new node (mean degree about 2m)")

    @model_validator(mode="after")
    def _check(self) -> "BarabasiAlbert":
        if self.m <= 0:
            raise ValueError(f"m: must be > 0, got {self.m}")
        return self


class StochasticBlock(_Network):
    """Blocks given by a persona column (or ``blocks`` equal blocks of consecutive agents);
    edge probability ``p_in`` inside a block and ``p_out`` between blocks, as mean degrees."""

    kind: Literal["stochastic_block"] = "stochastic_block"
    column: str | None = Field(None, description="persona column whose values are the blocks")
    blocks: int | None = Field(None, description="equal blocks of consecutive agents (without 'column')")
    degree_in: float = Field(8.0, description="mean number of neighbours inside the own block")
    degree_out: float = Field(2.0, description="mean number of neighbours outside it")

    @model_validator(mode="after")
    def _check(self) -> "StochasticBlock":
        if (self.column is None) == (self.blocks is None):
            raise ValueError("give exactly one of 'column' or 'blocks'")
        if self.blocks is not None and self.blocks <= 0:
            raise ValueError(f"blocks: must be > 0, got {self.blocks}")
        for name in ("degree_in", "degree_out"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        return self

    def attribute_columns(self) -> list[str]:
        return [self.column] if self.column else []


class Homophily(_Network):
    """Each agent draws about ``degree`` / 2 ties (Poisson); each tie goes to an agent with the same
    values of ``columns`` with probability ``homophily``, else to anyone."""

    kind: Literal["homophily"] = "homophily"
    columns: list[str] = Field(description="persona columns (e.g. age_group, party)", min_length=1)
    degree: float = Field(10.0, description="mean degree")
    homophily: float = Field(0.7, description="share of ties drawn inside the own attribute group")

    @model_validator(mode="after")
    def _check(self) -> "Homophily":
        if self.degree <= 0:
            raise ValueError(f"degree: must be > 0, got {self.degree}")
        if not 0.0 <= self.homophily <= 1.0:
            raise ValueError(f"homophily: a probability must lie in [0, 1], got {self.homophily}")
        return self

    def attribute_columns(self) -> list[str]:
        return list(self.columns)


class CompleteGroups(_Network):
    """Everyone linked to everyone in the own group: ``group_size`` consecutive agents, or the
    agents sharing a value of ``column`` (each group at most ``max_group`` agents)."""

    kind: Literal["complete_groups"] = "complete_groups"
    group_size: int | None = Field(None, description="consecutive agents per group")
    column: str | None = Field(None, description="persona column whose values are the groups")
    max_group: int = Field(1000, description="largest group allowed (edges grow with its square)")

    @model_validator(mode="after")
    def _check(self) -> "CompleteGroups":
        if (self.group_size is None) == (self.column is None):
            raise ValueError("give exactly one of 'group_size' or 'column'")
        if self.group_size is not None and self.group_size <= 0:
            raise ValueError(f"group_size: must be > 0, got {self.group_size}")
        if self.max_group <= 0:
            raise ValueError(f"max_group: must be > 0, got {self.max_group}")
        return self

    def attribute_columns(self) -> list[str]:
        return [self.column] if self.column else []


class EdgeList(_Network):
    """A graph from a Parquet edge list: ``source``, ``target`` (agent ids), optional ``weight``."""

    kind: Literal["edge_list"] = "edge_list"
    path: str
    allow_self_loops: bool = False


NetworkConfig = Annotated[Union[WattsStrogatz, BarabasiAlbert, StochasticBlock, Homophily, CompleteGroups, EdgeList],
                          Field(discriminator="kind")]
NETWORK_KINDS = frozenset({"watts_strogatz", "barabasi_albert", "stochastic_block", "homophily",
                           "complete_groups", "edge_list"})
