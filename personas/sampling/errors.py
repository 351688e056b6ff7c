"""The one exception a bad population spec (or bad sampling request) raises.

Every message starts with the path of the offending field (``attributes[2] (age).high``) so a
user can find it in a long YAML file; the YAML line is appended when it is known. It subclasses
``ValueError`` so callers that already catch ``ValueError`` keep working.
"""

from __future__ import annotations


class SpecError(ValueError):
    """A population spec, or a request to sample from one, is invalid."""

    def __init__(self, field: str, problem: str, line: int | None = None) -> None:
        self.field = field
        self.problem = problem
        self.line = line
        where = f"{field}: " if field else ""
        at_line = f" (line {line})" if line is not None else ""
        super().__init__(f"{where}{problem}{at_line}")

    def with_line(self, line: int | None) -> "SpecError":
        """The same error, annotated with the YAML line it came from."""
        if line is None or self.line is not None:
            return self
        return SpecError(self.field, self.problem, line)
