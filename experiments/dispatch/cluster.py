"""Joining a Ray cluster and checking it can hold the engines, before any work starts.

An unreachable address fails in seconds (a TCP probe before ``ray.init``, which would otherwise
retry for a minute) and asking for more GPUs than the cluster has fails naming both numbers.
``check_cluster`` runs both checks from ``preflight``, before the run folder is touched; the
connection it opens is kept for the run (and closed by whoever ends it, see ``connect``).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from crowdlab.experiments.dispatch.config import RayDispatch
from crowdlab.experiments.errors import ConfigError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0

# True while the Ray connection of this process is one crowdlab opened (and so must close).
_owned = False


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a 'host:port' or 'ray://host:port' address; None for 'auto'/'local'."""
    rest = address.split("://", 1)[1] if "://" in address else address
    if rest in ("auto", "local") or ":" not in rest:
        return None
    host, _, port = rest.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError("dispatch.address", f"{address!r} is not 'host:port', 'ray://host:port' or 'auto'") from None


def probe(address: str) -> None:
    """Fail fast with the address in the message when nothing listens there."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConfigError("dispatch.address", f"cannot reach the Ray cluster at {address!r}: {exc}") from None


def connect(dispatch: RayDispatch) -> bool:
    """Make sure this process is connected to Ray; True when crowdlab opened the connection (in
    this call or in an earlier ``check_cluster``), so the caller should ``disconnect()`` at the
    end; False when someone else's connection already existed."""
    global _owned
    import ray

    address = dispatch.address
    if address is not None:
        probe(address)  # even when already connected: a configured address must be reachable
    if ray.is_initialized():
        return _owned
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=True)
    except (ConnectionError, RuntimeError) as exc:
        raise ConfigError("dispatch.address", f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    log.info("connected to Ray at %s: %s", address or "a new local cluster", ray.cluster_resources())
    _owned = True
    return True


def disconnect() -> None:
    """Close the connection crowdlab opened (no-op for a connection it did not open)."""
    global _owned
    import ray

    if _owned:
        ray.shutdown()
        _owned = False


def check_cluster(dispatch: RayDispatch, n_pools: int) -> Plan:
    """Before any work: the address answers, and the cluster holds ``n_pools`` pools of engines."""
    connect(dispatch)
    return plan(dispatch, n_pools)


@dataclass(frozen=True)
class Plan:
    """How many engines each model's pool gets, and what they reserve in total."""

    engines_per_pool: int
    gpus_needed: float
    gpus_available: float


def plan(dispatch: RayDispatch, n_pools: int) -> Plan:
    """Engines per pool from the config (or the cluster's GPUs split evenly); checks capacity."""
    import ray

    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0.0))
    cpus = float(resources.get("CPU", 0.0))
    per = dispatch.gpus_per_engine
    if dispatch.engines_per_model is not None:
        engines = dispatch.engines_per_model
    else:
        engines = int(gpus // (per * n_pools)) if per > 0 else 0
        if engines < 1:
            raise ConfigError("dispatch.gpus_per_engine",
                              f"{n_pools} model(s) x 1 engine x {per:g} GPU(s) needs {n_pools * per:g} GPUs "
                              f"but the Ray cluster has {gpus:g}")
    needed = n_pools * engines * per
    if needed > gpus + 1e-9:
        raise ConfigError("dispatch.engines_per_model",
                          f"{n_pools} model(s) x {engines} engine(s) x {per:g} GPU(s) needs {needed:g} GPUs "
                          f"but the Ray cluster has {gpus:g}")
    cpus_needed = n_pools * engines * dispatch.num_cpus_per_engine
    if cpus_needed > cpus + 1e-9:
        raise ConfigError("dispatch.num_cpus_per_engine",
                          f"{n_pools * engines} engine(s) x {dispatch.num_cpus_per_engine:g} CPU(s) needs "
                          f"{cpus_needed:g} CPUs but the Ray cluster has {cpus:g}")
    return Plan(engines, needed, gpus)
