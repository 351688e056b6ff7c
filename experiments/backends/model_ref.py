"""Model references shared by the LLM backends: local folder or hub id, checked before any engine starts.

Starting vLLM takes tens of seconds and fails deep inside worker processes, so everything that
can be checked cheaply (the path exists, its config and weight files are whole, the model has a
chat template, the hub snapshot is present when the hub is offline) is checked here first, and the error names the model. The
fingerprint recorded in the run manifest lets a reader tell two runs of "the same" model apart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from crowdlab.experiments.errors import UserError

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


class BackendError(UserError, RuntimeError):
    """A backend cannot start (bad model reference, missing chat template, engine rejected options).

    A ``UserError``: the config or the machine must change, so it is never retried and the CLI
    prints it as one line naming the backend.
    """

    def __init__(self, message: str, field: str = "backend") -> None:
        super().__init__(field, message)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model lives and which exact version it is."""

    ref: str  # what the user wrote
    load_from: str  # what to hand to the engine: a local folder or the hub id
    local_dir: Path | None  # folder holding config/tokenizer files, when known
    revision: str | None  # hub commit hash, or a content fingerprint of a local folder


def looks_like_path(ref: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else with a path shape is a local path."""
    if ref.startswith(("/", "./", "../", "~")) or os.sep + os.sep in ref:
        return True
    return ref.count("/") > 1


def folder_fingerprint(folder: Path) -> str:
    """sha256 over config.json's bytes and the weight files' names and sizes (cheap, no weight reads)."""
    digest = hashlib.sha256()
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for item in sorted(folder.iterdir()):
        if item.is_file() and item.name.endswith(_WEIGHT_SUFFIXES):
            digest.update(f"{item.name}:{item.stat().st_size}\n".encode())
    return "sha256:" + digest.hexdigest()[:16]


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header and the tensor bytes; the
    header's last data offset must meet the end of the file (a truncated download does not)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            header_len = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < header_len <= min(size - 8, 100_000_000):
                return f"{path.name} is not a safetensors file (bad header, {size:,} bytes)"
            header = json.loads(handle.read(header_len))
    except (OSError, ValueError) as exc:
        return f"{path.name} has an unreadable header ({exc})"
    ends = [t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"]
    expected = 8 + header_len + max(ends, default=0)
    if size != expected:
        return f"{path.name} is truncated or corrupt ({size:,} bytes, its header says {expected:,})"
    return None


def model_folder_problem(folder: Path) -> str | None:
    """Why the engine would fail on this folder, found without loading it (None: looks loadable).

    Catches what an interrupted copy or download leaves: a config.json that is not JSON, no
    weight files, a safetensors file cut short, a shard the index names but the folder lacks.
    """
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"config.json is not valid JSON ({exc})"
    if not isinstance(config, dict):
        return "config.json does not hold a JSON object"
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            return f"{index.name} is not a valid index ({exc})"
        missing = sorted(name for name in shards if not (folder / name).is_file())
        if missing:
            return f"{index.name} names weight files the folder lacks: {', '.join(missing[:3])}"
    weights = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)]
    if not weights:
        return f"no weight files ({', '.join('*' + s for s in _WEIGHT_SUFFIXES)})"
    for path in sorted(weights):
        if path.suffix == ".safetensors":
            problem = _safetensors_problem(path)
            if problem:
                return problem
    return None


def resolve_model(ref: str, revision: str | None = None) -> ResolvedModel:
    """Find ``ref`` locally (a folder, or a snapshot already in the hub cache) without downloading.

    A hub id that is not cached is passed through to the engine (which downloads it) unless the
    hub is offline (``HF_HUB_OFFLINE=1``), in which case we fail now with a clear message.
    """
    expanded = Path(os.path.expanduser(ref))
    if expanded.exists():
        if not expanded.is_dir() or not (expanded / "config.json").is_file():
            raise BackendError(f"model path {str(expanded)!r} is not a model folder (no config.json)")
        folder = expanded.resolve()
        problem = model_folder_problem(folder)
        if problem:
            raise BackendError(f"model folder {str(folder)!r} cannot be loaded: {problem}")
        return ResolvedModel(ref, str(folder), folder, revision or folder_fingerprint(folder))
    if looks_like_path(ref):
        raise BackendError(f"model path {str(expanded)!r} does not exist")
    snapshot = _cached_snapshot(ref, revision)
    if snapshot is not None:
        return ResolvedModel(ref, ref, snapshot, snapshot.name)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise BackendError(
            f"model {ref!r} is neither a local folder nor in the Hugging Face cache, and "
            "HF_HUB_OFFLINE is set: download it first or point `model` at a local folder"
        )
    logger.info("model %s is not cached; the engine will download it", ref)
    return ResolvedModel(ref, ref, None, revision)


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return None
    hit = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return Path(hit).parent if isinstance(hit, str) else None


def has_chat_template(folder: Path) -> bool:
    """True when the tokenizer files in ``folder`` carry a chat template."""
    if any((folder / name).is_file() for name in _TEMPLATE_FILES):
        return True
    config = folder / "tokenizer_config.json"
    if config.is_file():
        return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    return False


def load_chat_template(template: str | None) -> str | None:
    """A chat template given in config: a path to a Jinja file, or the template text itself."""
    if template is None:
        return None
    candidate = Path(os.path.expanduser(template))
    if "{" not in template and candidate.is_file():
        return candidate.read_text(encoding="utf-8")
    if "{" not in template:
        raise BackendError(f"chat_template {template!r} is neither a file nor a Jinja template")
    return template


def require_chat_template(model: ResolvedModel, override: str | None) -> None:
    """Fail before the engine starts when nothing would turn chat messages into a prompt."""
    if override is not None or model.local_dir is None:
        return
    if not has_chat_template(model.local_dir):
        raise BackendError(
            f"model {model.ref!r} has no chat template; set `chat_template` in the backend config "
            "(a Jinja file or template text)"
        )
