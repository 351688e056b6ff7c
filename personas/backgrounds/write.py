"""LLM-written persona backgrounds with the consistency gate, one shard of personas at a time.

``add_backgrounds(table, spec, seed, backend)`` writes one text per persona row (one backend
call per persona per try, all rows of a try in one batch), reads the gate fields back out of
each text (a second, structured-output call), and regenerates the rows that contradict their
persona, up to ``gate.max_tries`` generations. Every persona is kept: rows that never pass are
flagged, and a backend that returns nothing gives an empty, flagged text.

Seeds are pure functions of (population seed, agent_id, stream, try), so regenerating persona
123,456 alone gives the text it got in the full run (as far as the backend is deterministic
for a seeded request). The backend is anything with the ``crowdlab.experiments.backends``
Backend protocol; that package is imported lazily (personas -> experiments.backends only).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.personas.backgrounds import prompts
from crowdlab.personas.backgrounds import gate
from crowdlab.personas.backgrounds.spec import BackgroundSpec
from crowdlab.personas.sampling.errors import SpecError
from crowdlab.hashing import seeds
from crowdlab.personas.sampling.spec import PopulationSpec, value_type

log = logging.getLogger(__name__)

STREAM_WRITE = 0xB6_01
STREAM_READ = 0xB6_02

BACKGROUND_FIELDS = [
    pa.field("background", pa.string(), nullable=False, metadata={"meaning": "LLM-written text ('' if none came back)"}),
    pa.field("background_consistent", pa.bool_(), nullable=False, metadata={"meaning": "gate read back every field"}),
    pa.field("background_tries", pa.int32(), nullable=False, metadata={"meaning": "generations made, first included"}),
    pa.field("background_mismatch", pa.string(), metadata={"meaning": "fields that disagreed, 'empty' or 'unreadable'; null if consistent"}),
    pa.field("background_error", pa.string(), metadata={"meaning": "backend error of the last try; null if none"}),
]
META_BACKGROUND = "crowdlab.personas.background"  # JSON: model, prompt version, gate settings


def background_of(spec: PopulationSpec) -> BackgroundSpec:
    if spec.background is None:
        raise SpecError("background", f"spec {spec.name!r} has no background section")
    return spec.background


def resolve_backend(spec: PopulationSpec, backend: Any = None) -> Any:
    """A ready Backend: the one given (instance or config dict), else the spec's; fails clearly."""
    bg = background_of(spec)
    config = backend if backend is not None else bg.backend
    if config is None:
        raise SpecError("background.backend", "no backend: set background.backend in the spec or pass one (--backend FILE)")
    return build_backend(config)


def build_backend(config: Any) -> Any:
    """A Backend from a config dict (``kind: echo`` here, any other kind from the registry)."""
    if hasattr(config, "generate"):
        return config
    if isinstance(config, dict) and config.get("kind") == "echo":
        from crowdlab.personas.backgrounds.echo_backend import EchoConfig

        return EchoConfig.model_validate(config).build()
    from crowdlab.experiments.backends import make_backend

    try:
        return make_backend(config)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise SpecError("background.backend", f"invalid backend config: {exc}") from None


def check_columns(spec: PopulationSpec, table: pa.Table) -> None:
    """The persona rows must carry every attribute the prompts and the gate read."""
    bg = background_of(spec)
    needed = list(dict.fromkeys(bg.mention + bg.context + bg.gate_fields + ([bg.language_from] if bg.language_from else [])))
    missing = [c for c in needed + ["agent_id"] if c not in table.column_names]
    if missing:
        raise SpecError("background", f"the persona table lacks the columns {missing} that the background section needs")


def numeric_fields(spec: PopulationSpec, fields: list[str]) -> set[str]:
    return {f for f in fields if value_type(spec.attribute(f)) != "string"}


def add_backgrounds(table: pa.Table, spec: PopulationSpec, seed: int, backend: Any) -> pa.Table:
    """``table`` plus the background columns (see ``BACKGROUND_FIELDS``)."""
    from crowdlab.experiments.backends.base import RequestBatch, SamplingSettings

    bg = background_of(spec)
    check_columns(spec, table)
    n = table.num_rows
    ids = table.column("agent_id").to_numpy()
    fields = bg.gate_fields
    numeric = numeric_fields(spec, fields)
    schema = prompts.reader_schema(fields, numeric)
    texts = np.full(n, "", dtype=object)
    has_text = np.zeros(n, dtype=bool)
    consistent = np.zeros(n, dtype=bool)
    tries = np.zeros(n, dtype=np.int32)
    mismatch = np.full(n, gate.EMPTY, dtype=object)
    errors = np.full(n, None, dtype=object)
    pending = np.arange(n)
    started = time.perf_counter()
    for attempt in range(1, bg.gate.max_tries + 1):
        if pending.size == 0:
            break
        rows = table.take(pa.array(pending))
        written = backend.generate(RequestBatch(
            agent_ids=ids[pending],
            seeds=seeds(seed, ids[pending], STREAM_WRITE, attempt),
            messages=prompts.writer_messages(rows, bg),
            sampling=SamplingSettings(temperature=bg.temperature, top_p=bg.top_p, max_tokens=bg.token_budget),
            personas=rows,
            context={"task": "background_write", "prompt_version": bg.prompt_version},
        ))
        new_texts = [t or "" for t in written.texts]
        ok, why = _gate(rows, new_texts, written.errors, ids[pending], seed, attempt, spec, bg, numeric, schema, backend)
        nonempty = ~prompts.empty_mask(new_texts)
        replace = nonempty | ~has_text[pending]  # never replace a text by nothing
        texts[pending[replace]] = np.array(new_texts, dtype=object)[replace]
        has_text[pending] |= nonempty
        tries[pending] = attempt
        consistent[pending] = ok
        mismatch[pending[replace]] = np.array(why, dtype=object)[replace]  # describes the kept text
        errors[pending] = np.array(written.errors, dtype=object)
        log.info("backgrounds try %d: %d of %d consistent", attempt, int(ok.sum()), len(pending))
        pending = pending[~ok]
    log.info("backgrounds for %d personas in %.1f s; %d flagged", n, time.perf_counter() - started, int((~consistent).sum()))
    columns = [
        pa.array(texts.tolist(), pa.string()), pa.array(consistent), pa.array(tries),
        pa.array(mismatch.tolist(), pa.string()), pa.array(errors.tolist(), pa.string()),
    ]
    out = table
    for field, column in zip(BACKGROUND_FIELDS, columns):
        out = out.append_column(field, column)
    return out


def _gate(
    rows: pa.Table, texts: list[str], errors: list[str | None], ids: np.ndarray, seed: int, attempt: int,
    spec: PopulationSpec, bg: BackgroundSpec, numeric: set[str], schema: dict[str, Any], backend: Any,
) -> tuple[np.ndarray, list[str | None]]:
    """Read the fields back out of the non-empty texts and compare them with their rows."""
    from crowdlab.experiments.backends.base import RequestBatch, SamplingSettings

    n = len(texts)
    failed = np.array([e is not None for e in errors], dtype=bool) if n else np.zeros(0, bool)
    readable = np.flatnonzero(~(prompts.empty_mask(texts) | failed)) if n else np.zeros(0, np.int64)
    ok = np.zeros(n, dtype=bool)
    why: list[str | None] = [gate.EMPTY] * n
    if readable.size == 0:
        return ok, why
    read = backend.generate(RequestBatch(
        agent_ids=ids[readable],
        seeds=seeds(seed, ids[readable], STREAM_READ, attempt),
        messages=prompts.reader_messages([texts[i] for i in readable.tolist()]),
        answer_schema=schema,
        sampling=SamplingSettings(temperature=0.0, top_p=1.0, max_tokens=bg.gate.max_tokens),
        context={"task": "background_read", "prompt_version": bg.prompt_version},
    ))
    answers, parsed = gate.parse_answers(read.texts, bg.gate_fields, numeric)
    parsed &= np.array([e is None for e in read.errors], dtype=bool)
    sub_ok, sub_why = gate.compare(rows.take(pa.array(readable)), answers, parsed, bg.gate_fields, numeric, bg.gate)
    ok[readable] = sub_ok
    for j, i in enumerate(readable.tolist()):
        why[i] = sub_why[j]
    return ok, why


def contradiction_rates(table: pa.Table) -> dict[str, float]:
    """Share of personas whose first text contradicted them, and whose final text still does."""
    n = table.num_rows
    if n == 0 or "background_consistent" not in table.column_names:
        return {}
    consistent = table.column("background_consistent").to_numpy(zero_copy_only=False)
    tries = table.column("background_tries").to_numpy()
    texts = table.column("background")
    empty = np.asarray(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0).to_numpy(zero_copy_only=False), dtype=bool)
    first_bad = (tries > 1) | ~consistent
    return {
        "before_regeneration": float(first_bad.mean()),
        "after_regeneration": float((~consistent).mean()),
        "empty": float(empty.mean()),
        "mean_tries": float(tries.mean()),
    }


def background_metadata(spec: PopulationSpec, backend: Any) -> dict[str, Any]:
    """What goes into the population's metadata: model, prompt version and gate settings."""
    bg = background_of(spec)
    described = backend.describe() if hasattr(backend, "describe") else {"backend": getattr(backend, "name", "?")}
    return {
        "prompt_version": bg.prompt_version,
        "words": bg.words,
        "mention": bg.mention,
        "gate": bg.gate.model_dump(mode="json"),
        "gate_fields": bg.gate_fields,
        "backend": described,
    }
