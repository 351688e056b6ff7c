"""Keep third-party chatter out of the CLI's output unless ``-v`` is given.

An offline vLLM run printed about forty lines before its first result: vLLM's own WARNING lines
(chunked prefill, eager mode, Triton and tcmalloc notes; its logger writes to stdout, from the
engine's subprocesses too), torch ``FutureWarning``s raised through the ``warnings`` module,
torch's C++ ``[W...] Warning: NUMA binding`` lines, and setuptools / pkg_resources deprecation
notices. None of them is something a crowdlab user acts on. The switches below are read by
those libraries when they start, so the CLI sets them first thing, before anything imports
vLLM or torch; the environment variables reach the engine's subprocesses as well. Library code
is untouched: ``import crowdlab`` in a notebook still shows everything.
"""

from __future__ import annotations

import logging
import os
import warnings

#: Read at import by vLLM (its logger level) and torch (c10's C++ warnings), also in subprocesses.
QUIET_ENV = {
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
    # + multiprocessing's resource tracker at vLLM's shutdown ("leaked shared_memory objects")
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning,ignore::PendingDeprecationWarning,"
                      "ignore:resource_tracker:UserWarning",
    "TRANSFORMERS_VERBOSITY": "error",
}
#: Packages whose UserWarnings are noise for a CLI user (ours are never silenced).
NOISY_PACKAGES = ("torch", "vllm", "transformers", "triton", "setuptools", "pkg_resources", "_distutils_hack")


def quiet_libraries(verbose: bool) -> None:
    """Hide vLLM, torch and setuptools warnings and log lines below ERROR; ``verbose`` keeps all.

    Values already in the environment win, so ``VLLM_LOGGING_LEVEL=DEBUG crowdlab run ...``
    still works."""
    if verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    pattern = "|".join(NOISY_PACKAGES)
    warnings.filterwarnings("ignore", category=UserWarning, module=rf"({pattern})(\..*)?$")
    for name in ("vllm", "torch", "transformers", "triton"):
        logging.getLogger(name).setLevel(logging.ERROR)
