"""Where a run's shards are computed: locally (threads) or on Ray actors holding warm engines.

Importing this package never imports Ray; ``execute_on_ray`` does, on first use.
"""

from crowdlab.experiments.dispatch.config import DispatchConfig, LocalDispatch, RayDispatch

__all__ = ["DispatchConfig", "LocalDispatch", "RayDispatch"]
