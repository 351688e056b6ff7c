"""The persona table's schema, derived from a spec and declared in one place.

``agent_id`` (int64, dense from 0) comes first, then one column per attribute in spec order:
string for categorical, conditional-categorical, identity and template attributes; int64 or
float64 for numeric ones. Field metadata records each column's attribute kind. File-level
metadata keys (spec, hash, seed, n, Faker version) are listed here too.
"""

from __future__ import annotations

import pyarrow as pa

from crowdlab.personas.sampling.spec import PopulationSpec, value_type

SCHEMA_VERSION = "1"
_TYPES = {"string": pa.string(), "int": pa.int64(), "float": pa.float64()}

META_PREFIX = "crowdlab.personas."
META_SCHEMA_VERSION = META_PREFIX + "schema_version"
META_SPEC_NAME = META_PREFIX + "spec_name"
META_SPEC_HASH = META_PREFIX + "spec_hash"
META_SPEC = META_PREFIX + "spec"  # the validated spec as JSON, so `describe` needs only the file
META_SEED = META_PREFIX + "seed"
META_N = META_PREFIX + "n"
META_FAKER = META_PREFIX + "faker_version"  # name pools depend on it


def persona_schema(spec: PopulationSpec) -> pa.Schema:
    fields = [pa.field("agent_id", pa.int64(), nullable=False, metadata={"meaning": "dense row id from 0"})]
    for attr in spec.attributes:
        meta = {"kind": attr.kind}
        if attr.doc:
            meta["doc"] = attr.doc
        fields.append(pa.field(attr.name, _TYPES[value_type(attr)], nullable=False, metadata=meta))
    return pa.schema(fields)
