"""Reading YAML for every crowdlab loader: a key given twice in one mapping is an error.

PyYAML keeps the last of two equal keys without a word, so a second ``attributes:`` list in a
population spec, or a second ``rounds:`` in an experiment config, silently replaces the first.
``UniqueKeyLoader`` (a ``yaml.SafeLoader``) refuses that with ``DuplicateKeyError``, which names
the mapping that holds the key (as a path of keys and list indexes), the key, and both lines.
Keys are compared as the loader constructs them, so ``1`` and ``01`` clash, and ``<<`` merge keys
(which are meant to be overridden) are not counted.

Loaders that resolve scalars differently (the personas loader reads YAML 1.2 booleans) subclass
``UniqueKeyLoader``; everything else calls ``safe_load``.
"""

from __future__ import annotations

from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping holds the same key twice. A ``yaml.YAMLError``, so existing handlers still catch it.

    ``path`` leads from the document root to the mapping (keys and list indexes); ``names`` holds,
    for each list index in ``path``, the item's ``name`` value when it has one (else None).
    """

    def __init__(self, path: tuple[Any, ...], names: tuple[str | None, ...], key: Any, line: int, first_line: int, mark: Any) -> None:
        super().__init__(None, None, f"duplicate key {str(key)!r}", mark)
        self.path = path
        self.names = names
        self.key = key
        self.line = line
        self.first_line = first_line

    def dotted(self, root: str = "") -> str:
        """``population.treatments.0`` style; ``root`` for a key at the top level."""
        return ".".join(str(p) for p in self.path) or root

    def __str__(self) -> str:
        return f"{self.dotted('document')}: duplicate key {str(self.key)!r} (line {self.line})"


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_document(self, node: yaml.Node) -> Any:
        self._check_unique(node, (), (), set())
        return super().construct_document(node)

    def _check_unique(self, node: yaml.Node, path: tuple[Any, ...], names: tuple[str | None, ...], seen: set[int]) -> None:
        if id(node) in seen:  # an alias: already checked where its anchor is
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._check_unique(item, path + (index,), names + (_item_name(item),), seen)
        elif isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    self._check_unique(value_node, path, names, seen)
                    continue
                key = self._key(key_node)
                line = key_node.start_mark.line + 1
                if key is not None and key in first:
                    raise DuplicateKeyError(path, names, key, line, first[key], key_node.start_mark)
                if key is not None:
                    first[key] = line
                label = key if key is not None else getattr(key_node, "value", "?")
                self._check_unique(value_node, path + (label,), names + (None,), seen)

    def _key(self, key_node: yaml.Node) -> Any:
        """The key as the loader builds it; None when it cannot be compared (a mapping as key)."""
        if not isinstance(key_node, yaml.ScalarNode):
            return None
        try:
            key = self.construct_object(key_node, deep=True)
            hash(key)
        except (yaml.YAMLError, TypeError):
            return None
        return key


def _item_name(node: yaml.Node) -> str | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if getattr(key_node, "value", None) == "name" and isinstance(value_node, yaml.ScalarNode):
                return str(value_node.value)
    return None


def safe_load(text: str, loader: type[UniqueKeyLoader] = UniqueKeyLoader) -> Any:
    """``yaml.safe_load`` that raises ``DuplicateKeyError`` for a key given twice."""
    return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
