"""Persona tables on disk: Parquet written atomically, with the spec in the file's metadata.

The file carries the validated spec (JSON), its name and hash, the seed, n and the Faker version,
so ``read_spec_info`` and ``describe`` work from the file alone and a run can prove which
population it used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import faker
import pyarrow as pa
import pyarrow.parquet as pq

from crowdlab.parquet_io import write_table_atomic
from crowdlab.personas.sampling import schema as s
from crowdlab.personas.sampling.spec import PopulationSpec


def write_personas(
    table: pa.Table, path: str | os.PathLike[str], spec: PopulationSpec | None = None, seed: int | None = None
) -> Path:
    """Write a persona table to Parquet all or nothing (temp file + rename)."""
    if "agent_id" not in table.column_names:
        raise ValueError("a persona table needs an agent_id column")
    meta = dict(table.schema.metadata or {})
    meta[s.META_SCHEMA_VERSION.encode()] = s.SCHEMA_VERSION.encode()
    meta[s.META_N.encode()] = str(table.num_rows).encode()
    meta[s.META_FAKER.encode()] = faker.VERSION.encode()
    if spec is not None:
        meta[s.META_SPEC_NAME.encode()] = spec.name.encode()
        meta[s.META_SPEC_HASH.encode()] = spec.spec_hash.encode()
        meta[s.META_SPEC.encode()] = spec.to_json().encode()
    if seed is not None:
        meta[s.META_SEED.encode()] = str(seed).encode()
    return write_table_atomic(table.replace_schema_metadata(meta), path)


def read_personas(path: str | os.PathLike[str]) -> pa.Table:
    """Read a persona table (schema metadata included)."""
    return pq.read_table(path)


@dataclass(frozen=True)
class PersonaFileInfo:
    spec: PopulationSpec | None
    spec_name: str | None
    spec_hash: str | None
    seed: int | None
    n: int | None
    faker_version: str | None


def spec_info(schema: pa.Schema) -> PersonaFileInfo:
    """The provenance a persona file's schema metadata records."""
    from crowdlab.personas.sampling.loading import parse_spec

    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    spec = parse_spec(json.loads(meta[s.META_SPEC])) if s.META_SPEC in meta else None
    seed = meta.get(s.META_SEED)
    n = meta.get(s.META_N)
    return PersonaFileInfo(
        spec=spec,
        spec_name=meta.get(s.META_SPEC_NAME),
        spec_hash=meta.get(s.META_SPEC_HASH),
        seed=int(seed) if seed is not None else None,
        n=int(n) if n is not None else None,
        faker_version=meta.get(s.META_FAKER),
    )


def read_spec_info(path: str | os.PathLike[str]) -> PersonaFileInfo:
    return spec_info(pq.read_schema(path))
