"""A safe, vectorised expression language for payoffs, targets and baselines.

``Formula("offset + p * mean")`` parses once with Python's ``ast`` and accepts only numbers,
names, arithmetic, comparisons, ``and``/``or``/``not``, ``a if cond else b`` and a fixed list of
functions; anything else (attributes, subscripts, lambdas, comprehensions, strings) is refused
when the formula is declared, as is a name the caller does not offer. Evaluation maps the tree
onto numpy, so a formula over per-agent arrays is one pass of array operations, never a Python
loop per agent and never ``eval``.

Why not ``simpleeval``: it evaluates Python semantics element by element (``and``, ``if``,
``max`` on scalars), while we need numpy's elementwise forms and a check of names before
anything runs; the whole language here is ~100 lines with no attribute access at all.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: np.power,
}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
    ast.Eq: np.equal, ast.NotEq: np.not_equal,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": np.abs, "min": np.minimum, "max": np.maximum, "sqrt": np.sqrt, "log": np.log, "exp": np.exp,
    "floor": np.floor, "ceil": np.ceil, "round": np.round, "where": np.where, "isnan": np.isnan,
    "clip": lambda x, lo, hi: np.clip(x, lo, hi),
}


class FormulaError(ValueError):
    """A formula that does not parse or names something it may not use."""


class Formula:
    """One checked expression; ``names()`` lists the variables it reads."""

    def __init__(self, source: str, allowed: Iterable[str] | None = None,
                 functions: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self.source = source
        self.functions = {**FUNCTIONS, **(functions or {})}
        try:
            self.tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise FormulaError(f"syntax error in {source!r}: {exc.msg} (column {exc.offset})") from None
        self._names: set[str] = set()
        self._allowed = None if allowed is None else set(allowed)
        self._check(self.tree.body)
        if allowed is not None:
            unknown = sorted(self._names - set(allowed))
            if unknown:
                raise FormulaError(f"unknown name {unknown[0]!r} in {source!r}; known: {', '.join(sorted(allowed))}")

    def names(self) -> set[str]:
        return set(self._names)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, bool)):
                raise FormulaError(f"only numbers are allowed as constants in {self.source!r}")
        elif isinstance(node, ast.Name):
            if node.id in self.functions and (self._allowed is None or node.id not in self._allowed):
                raise FormulaError(f"{node.id!r} is a function; call it in {self.source!r}")
            self._names.add(node.id)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            self._check(node.left), self._check(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            self._check(node.operand)
        elif isinstance(node, ast.Compare) and all(type(op) in _CMPOPS for op in node.ops):
            for child in [node.left, *node.comparators]:
                self._check(child)
        elif isinstance(node, ast.BoolOp):
            for child in node.values:
                self._check(child)
        elif isinstance(node, ast.IfExp):
            self._check(node.test), self._check(node.body), self._check(node.orelse)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in self.functions:
                name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise FormulaError(f"unknown function {name!r} in {self.source!r}; "
                                   f"known: {', '.join(sorted(self.functions))}")
            if node.keywords:
                raise FormulaError(f"keyword arguments are not allowed in {self.source!r}")
            for arg in node.args:
                self._check(arg)
        else:
            raise FormulaError(f"{type(node).__name__} is not allowed in {self.source!r} "
                               "(use numbers, names, + - * / // % **, comparisons, and/or/not, "
                               "'a if c else b' and the listed functions)")

    def __call__(self, variables: Mapping[str, Any]) -> Any:
        """Evaluate over scalars or numpy arrays (broadcast); missing variables raise KeyError."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._eval(self.tree.body, variables)

    def _eval(self, node: ast.AST, env: Mapping[str, Any]) -> Any:
        ev = self._eval
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](ev(node.left, env), ev(node.right, env))
        if isinstance(node, ast.UnaryOp):
            value = ev(node.operand, env)
            return np.logical_not(value) if isinstance(node.op, ast.Not) else \
                (-value if isinstance(node.op, ast.USub) else +value)
        if isinstance(node, ast.Compare):
            left, result = ev(node.left, env), True
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp, env)
                result = np.logical_and(result, _CMPOPS[type(op)](left, right))
                left = right
            return result
        if isinstance(node, ast.BoolOp):
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            values = [ev(v, env) for v in node.values]
            out = values[0]
            for v in values[1:]:
                out = combine(out, v)
            return out
        if isinstance(node, ast.IfExp):
            return np.where(ev(node.test, env), ev(node.body, env), ev(node.orelse, env))
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return self.functions[node.func.id](*(ev(a, env) for a in node.args))

    def __repr__(self) -> str:
        return f"Formula({self.source!r})"
