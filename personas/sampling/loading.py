"""Reading a PopulationSpec from YAML text, a dict or a file, with errors that name the field.

pydantic's errors are rewritten into one ``SpecError`` whose message starts with a readable
path (``attributes[2] (age).std``) and, for YAML input, ends with the line of that field. A key
given twice in one mapping is refused the same way (``crowdlab.yaml_io``), naming the mapping,
the key and the line of its second appearance.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from crowdlab.personas.sampling.errors import SpecError
from crowdlab.personas.sampling.spec import ATTRIBUTE_KINDS, DISTRIBUTION_KINDS, PopulationSpec
from crowdlab.yaml_io import DuplicateKeyError, UniqueKeyLoader


class _Yaml12Loader(UniqueKeyLoader):
    """SafeLoader with YAML 1.2 booleans (only true/false, so `on:`, `yes`, `no` stay strings)
    that refuses duplicate keys."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

_KEYED = {"cases", "weights", "percentages", "counts", "maps", "gender_map"}


def load_spec(path: str | os.PathLike[str]) -> PopulationSpec:
    """Read and validate a population YAML file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError("spec", f"cannot read {file}: {exc.strerror or exc}") from None
    return parse_spec(text)


def parse_spec(source: str | dict[str, Any]) -> PopulationSpec:
    """Validate YAML text or an already-parsed mapping into a PopulationSpec."""
    root: yaml.Node | None = None
    if isinstance(source, str):
        try:
            root = yaml.compose(source, Loader=_Yaml12Loader)
            data = yaml.load(source, Loader=_Yaml12Loader)  # noqa: S506 - safe loader subclass
        except DuplicateKeyError as exc:
            raise SpecError(_duplicate_label(exc), f"duplicate key {str(exc.key)!r}", exc.line) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise SpecError("yaml", f"malformed YAML: {problem}", line) from None
    else:
        data = source
    if not isinstance(data, dict):
        raise SpecError("spec", f"must be a mapping with name and attributes, got {type(data).__name__}")
    try:
        return PopulationSpec.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, data, root) from None


def _translate(exc: ValidationError, data: dict[str, Any], root: yaml.Node | None) -> SpecError:
    error = exc.errors()[0]
    keys, label = _walk(error["loc"], data)
    ctx = error.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, SpecError):
        if inner.field.startswith("attributes["):  # cross-attribute checks give absolute paths
            return SpecError(inner.field, inner.problem, _line(root, _path_keys(inner.field)))
        field = _join(label, inner.field) if inner.field else label
        return SpecError(field, inner.problem, _line(root, keys + _field_keys(inner.field)))
    if error["type"] == "union_tag_invalid":
        allowed = ATTRIBUTE_KINDS if _in_attribute_list(keys) else DISTRIBUTION_KINDS
        problem = f"unknown distribution kind {ctx.get('tag')!r}; expected one of {', '.join(allowed)}"
        return SpecError(_join(label, "kind"), problem, _line(root, keys + ["kind"]))
    if error["type"] == "union_tag_not_found":
        return SpecError(_join(label, "kind"), "missing 'kind'", _line(root, keys))
    if error["type"] == "extra_forbidden":
        return SpecError(label, "unknown field", _line(root, keys))
    message = error["msg"].removeprefix("Value error, ")
    return SpecError(label, message, _line(root, keys))


def _duplicate_label(exc: DuplicateKeyError) -> str:
    """The mapping that holds a duplicate key, labelled like the other errors: attributes[1] (sex).cases."""
    label, previous = "", None
    for part, name in zip(exc.path, exc.names):
        if isinstance(part, int):
            label += f"[{part}]" + (f" ({name})" if name and previous == "attributes" else "")
        elif previous in _KEYED:
            label += f"[{part}]"
        else:
            label += f".{part}" if label else str(part)
        previous = part
    return label or "spec"


def _join(label: str, field: str) -> str:
    return f"{label}.{field}" if label else field


def _in_attribute_list(keys: list[Any]) -> bool:
    return len(keys) == 2 and keys[0] == "attributes"


def _walk(loc: tuple[Any, ...], data: Any) -> tuple[list[Any], str]:
    """Follow pydantic's loc through the raw data: drop union tags, add attribute names."""
    keys: list[Any] = []
    label = ""
    node = data
    previous: Any = None
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue  # a discriminated-union tag, not a real key
        keys.append(part)
        if isinstance(part, int):
            label += f"[{part}]"
            if previous == "attributes" and isinstance(node, list) and part < len(node) and isinstance(node[part], dict):
                name = node[part].get("name")
                label += f" ({name})" if name else ""
        elif previous in _KEYED:
            label += f"[{part}]"
        else:
            label += f".{part}" if label else str(part)
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        previous = part
    return keys, label


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


def _field_keys(field: str) -> list[Any]:
    """'cases[x].low' -> ['cases', 'x', 'low'] (relative paths raised inside models)."""
    keys: list[Any] = []
    for chunk in field.replace("]", "").split("."):
        if not chunk:
            continue
        head, *subs = chunk.split("[")
        keys.append(head)
        keys.extend(subs)
    return keys


def _path_keys(field: str) -> list[Any]:
    """'attributes[2] (age).low' -> ['attributes', 2, 'low']."""
    head, _, rest = field.partition("]")
    index = int(head.split("[")[1])
    rest = rest.split(")", 1)[1] if rest.startswith(" (") else rest
    return ["attributes", index] + _field_keys(rest)


def _line(root: yaml.Node | None, keys: list[Any]) -> int | None:
    """1-based line of the deepest node along keys that exists in the YAML tree."""
    if root is None:
        return None
    node, line = root, root.start_mark.line + 1
    for key in keys:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    child, line = v, k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
