"""crowdlab: very large LLM-agent simulations as reproducible experiments.

The code lives in four subpackages mapped from top-level folders (see pyproject.toml):
``crowdlab.personas`` -> ``personas/``, ``crowdlab.experiments`` -> ``experiments/``,
``crowdlab.flows`` -> ``flows/``, ``crowdlab.analysis`` -> ``analysis/``.
"""

__version__ = "0.1.0"
