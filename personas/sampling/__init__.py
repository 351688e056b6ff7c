"""Stage 1 of the pipeline: a PopulationSpec (YAML) -> a sampled persona table (Parquet).

spec, loading, checks, errors     the spec's pydantic models, YAML loading, cross-attribute checks
distributions, streams, sampler   inverse-CDF draws on shard-invariant streams, vectorised sampling
identity, templates               Faker-pooled names/cities/emails, templated text columns
constraints, raking               feasibility rules that keep the spec's marginals
schema, io, describe              the table's schema, Parquet with the spec inside, target vs realised

The public functions are re-exported by ``crowdlab.personas``; this ``__init__`` imports nothing,
so importing one module does not load the others.
"""
