"""The one error a condition raises when it is not valid."""

from __future__ import annotations

ConditionPath = tuple[str | int, ...]
"""A location inside a condition document, e.g. ``("all", 1, "value")``."""


class ConditionError(ValueError):
    """A condition is not valid: `message` says why, `path` says where in the document."""

    def __init__(self, message: str, path: ConditionPath = ()) -> None:
        super().__init__(message, path)
        self.message = message
        self.path = tuple(path)

    @property
    def pointer(self) -> str:
        """`path` as a JSON Pointer (``/all/1/value``), for API problem details."""
        return "".join("/" + str(part).replace("~", "~0").replace("/", "~1")
                       for part in self.path)

    def __str__(self) -> str:
        return f"{self.message} (at {self.pointer or '/'})"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.path))
