"""Diagnostics: every problem found in definitions, with file, line, column and a hint."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

DocPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in one definition file (1-based line and column)."""

    code: str
    message: str
    file: str | None = None
    line: int = 0
    column: int = 0
    path: DocPath = ()
    hint: str | None = None
    severity: str = "error"

    @property
    def location(self) -> str:
        if self.file is None:
            return "<definitions>"
        return f"{self.file}:{self.line}:{self.column}" if self.line else self.file

    @property
    def dotted_path(self) -> str:
        return format_path(self.path)

    def format(self) -> str:
        where = f" (at {self.dotted_path})" if self.path else ""
        text = f"{self.location}: {self.severity}[{self.code}]: {self.message}{where}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": list(self.path),
            "hint": self.hint,
        }


def format_path(path: DocPath) -> str:
    """Render a document path as `fields.status.options[2]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None."""
    matches = get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None


def a_or_an(word: str) -> str:
    """`word` with its indefinite article: `a string`, `an enum`, `an integer`."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def sort_key(diagnostic: Diagnostic) -> tuple[str, int, int, str]:
    return (diagnostic.file or "", diagnostic.line, diagnostic.column, diagnostic.code)


@dataclass(slots=True)
class DiagnosticSink:
    """Collects diagnostics from every pass so one run reports all of them."""

    items: list[Diagnostic] = field(default_factory=list)

    def add(self, diagnostic: Diagnostic) -> None:
        self.items.append(diagnostic)

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.items.extend(diagnostics)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def sorted(self) -> tuple[Diagnostic, ...]:
        unique = dict.fromkeys(self.items)
        return tuple(sorted(unique, key=sort_key))


class DefinitionError(Exception):
    """Raised when definitions do not compile; carries every diagnostic."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        super().__init__(f"{len(self.diagnostics)} problem(s) in definitions")

    def __str__(self) -> str:
        return "\n".join(d.format() for d in self.diagnostics)
