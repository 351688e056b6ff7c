"""Population specs -> sampled persona tables.

Public API:
    load_spec(path) / parse_spec(text_or_dict) -> PopulationSpec   (raise SpecError)
    sample(spec, n, seed, shards=1) -> pyarrow.Table               (agent_id + one column per attribute)
    sample_rows(spec, start, stop, seed, n_total) -> pyarrow.Table (rows [start, stop), shard-invariant)
    write_personas(table, path, spec=None, seed=None) / read_personas(path)
    describe(table, spec=None) -> PopulationFit                    (target vs realised, TVD)
"""

from crowdlab.personas.sampling.describe import AttributeFit, FitRow, PopulationFit, describe
from crowdlab.personas.sampling.errors import SpecError
from crowdlab.personas.sampling.io import PersonaFileInfo, read_personas, read_spec_info, write_personas
from crowdlab.personas.sampling.loading import load_spec, parse_spec
from crowdlab.personas.sampling.sampler import sample, sample_rows, shard_bounds
from crowdlab.personas.sampling.schema import persona_schema
from crowdlab.personas.sampling.spec import PopulationSpec

__all__ = [
    "AttributeFit",
    "FitRow",
    "PersonaFileInfo",
    "PopulationFit",
    "PopulationSpec",
    "SpecError",
    "describe",
    "load_spec",
    "parse_spec",
    "persona_schema",
    "read_personas",
    "read_spec_info",
    "sample",
    "sample_rows",
    "shard_bounds",
    "write_personas",
]
