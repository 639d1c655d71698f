"""A cache of loaded and schema-checked documents, keyed by file content hash."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .diagnostics import Diagnostic
from .kinds import DefinitionKind
from .library import Library
from .loader import Document, LoadError, load_bytes
from .validate import SchemaValidator


@dataclass(frozen=True, slots=True)
class Loaded:
    """One file after loading, kind detection and schema validation."""

    file: str
    digest: str
    doc: Document | None
    kind: DefinitionKind | None
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return self.doc is not None and self.kind is not None and not self.diagnostics


class DocumentStore:
    """Loads definition files once; an unchanged file (same stat, or same bytes) is reused.

    Only the newest version of each path is kept, so reloads do not accumulate.
    """

    def __init__(self, library: Library, validator: SchemaValidator) -> None:
        self.library = library
        self.validator = validator
        self._stats: dict[Path, tuple[tuple[int, int, int], Loaded]] = {}
        self._displays: dict[Path, str] = {}

    def _display(self, path: Path) -> str:
        display = self._displays.get(path)
        if display is None:
            display = self.library.display(path)
            self._displays[path] = display
        return display

    def load(self, path: Path) -> Loaded:
        display = self._display(path)
        try:
            stat = os.stat(path)
        except OSError as exc:
            return Loaded(display, "", None, None, (Diagnostic(
                "yaml.unreadable", f"cannot read file: {exc.strerror}", display),))
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = self._stats.get(path)
        if cached and cached[0] == key and cached[1].file == display:
            return cached[1]
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if cached and cached[1].digest == digest and cached[1].file == display:
            loaded = cached[1]
        else:
            loaded = self._parse(raw, display, digest)
        self._stats[path] = (key, loaded)
        return loaded

    def _parse(self, raw: bytes, display: str, digest: str) -> Loaded:
        try:
            doc = load_bytes(raw, display)
        except LoadError as exc:
            return Loaded(display, digest, None, None, tuple(exc.diagnostics))
        kind, problems = self.validator.detect(doc)
        if kind is not None:
            problems = self.validator.validate(doc, kind)
        return Loaded(display, digest, doc, kind, tuple(problems))
