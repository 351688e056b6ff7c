"""crowdlab.models: real instruct models pulled once into ``data/models/`` (pinned, verified,
converted by the project's own code) so LLM agents run on a laptop with no model hub.

Public API: ``pull``, ``MODELS``, ``get_spec``, ``model_path``, ``is_present``, ``ModelError``.
"""

from crowdlab.models.pull import DEFAULT_ROOT, PROVENANCE_FILE, PullResult, is_present, model_path, pull, read_provenance
from crowdlab.models.registry import MODELS, ModelError, ModelSpec, get_spec

__all__ = ["DEFAULT_ROOT", "MODELS", "ModelError", "ModelSpec", "PROVENANCE_FILE", "PullResult", "get_spec",
           "is_present", "model_path", "pull", "read_provenance"]
