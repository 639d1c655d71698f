"""Safe YAML 1.2 loading that keeps the line and column of every node.

libyaml composes the node graph (fast, C); this module resolves scalars with the
YAML 1.2 core rules (`on`, `no`, `yes` stay strings; `01234` stays a string) and
builds plain Python values, recording source positions in a :class:`SourceMap`.
It refuses duplicate keys, non-string keys, unknown tags, recursive aliases,
alias-expansion bombs and oversized files with a clear diagnostic.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import BaseResolver

from .diagnostics import Diagnostic, DocPath

try:  # libyaml is bundled in PyYAML's wheels; the pure-Python parser is the fallback
    from yaml.cyaml import CParser as _Parser
except ImportError:  # pragma: no cover - depends on the platform's wheel
    from yaml.composer import Composer
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser, Composer):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)


MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 200_000

STR = "tag:yaml.org,2002:str"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
BOOL = "tag:yaml.org,2002:bool"
NULL = "tag:yaml.org,2002:null"
MAP = "tag:yaml.org,2002:map"
SEQ = "tag:yaml.org,2002:seq"
KNOWN_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL, MAP, SEQ})

_INT_RE = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_BOOL_VALUES = MappingProxyType({"true": True, "True": True, "TRUE": True,
                "false": False, "False": False, "FALSE": False})
_NULL_VALUES = frozenset({"", "~", "null", "Null", "NULL"})


class Yaml12Resolver(BaseResolver):
    """Implicit scalar tags of the YAML 1.2 core schema, minus leading-zero integers."""


Yaml12Resolver.add_implicit_resolver(BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                     list("tTfF"))
Yaml12Resolver.add_implicit_resolver(NULL, re.compile(r"^(?:~|null|Null|NULL|)$"),
                                     ["~", "n", "N", ""])
Yaml12Resolver.add_implicit_resolver(INT, _INT_RE, list("-+0123456789"))
Yaml12Resolver.add_implicit_resolver(FLOAT, _FLOAT_RE, list("-+0123456789."))


class _Composer(_Parser, Yaml12Resolver):
    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        Yaml12Resolver.__init__(self)


Position = tuple[int, int]


@dataclass(frozen=True, slots=True)
class SourceMap:
    """1-based positions of every value and every mapping key of one document."""

    values: dict[DocPath, Position]
    keys: dict[DocPath, Position]

    def value(self, path: DocPath) -> Position:
        """Position of the value at `path`, or of its nearest recorded ancestor."""
        return self._nearest(self.values, path)

    def key(self, path: DocPath) -> Position:
        """Position of the key that names `path` (falls back to the value)."""
        if path in self.keys:
            return self.keys[path]
        return self._nearest(self.values, path)

    @staticmethod
    def _nearest(table: dict[DocPath, Position], path: DocPath) -> Position:
        while path:
            if path in table:
                return table[path]
            path = path[:-1]
        return table.get((), (1, 1))


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed definition file."""

    file: str
    data: Any
    source: SourceMap
    digest: str

    def pos(self, path: DocPath, *, key: bool = False) -> Position:
        return self.source.key(path) if key else self.source.value(path)

    def diagnostic(self, code: str, message: str, path: DocPath = (), *, key: bool = False,
                   hint: str | None = None, severity: str = "error") -> Diagnostic:
        line, column = self.pos(path, key=key)
        return Diagnostic(code, message, self.file, line, column, path, hint, severity)


class LoadError(Exception):
    """A file that cannot be loaded; carries its diagnostics."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("; ".join(d.message for d in diagnostics))


def load_file(path: Path, *, display: str | None = None,
              max_bytes: int = MAX_FILE_BYTES) -> Document:
    """Load one YAML definition file, raising LoadError with every problem found."""
    name = display or str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise LoadError([Diagnostic(
                "yaml.too-large",
                f"file is {size:,} bytes; definition files may be at most {max_bytes:,} bytes",
                name, 1, 1, hint="split large definitions into one file per entity")])
        raw = path.read_bytes()
    except OSError as exc:
        raise LoadError([Diagnostic("yaml.unreadable", f"cannot read file: {exc.strerror}",
                                    name)]) from exc
    return load_bytes(raw, name, max_bytes=max_bytes)


def load_bytes(raw: bytes, name: str, *, max_bytes: int = MAX_FILE_BYTES,
               max_nodes: int = MAX_NODES) -> Document:
    """Load YAML from bytes (see :func:`load_file`)."""
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) > max_bytes:
        raise LoadError([Diagnostic(
            "yaml.too-large",
            f"file is {len(raw):,} bytes; definition files may be at most {max_bytes:,} bytes",
            name, 1, 1, hint="split large definitions into one file per entity")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        start = raw.rfind(b"\n", 0, exc.start) + 1
        column = len(raw[start:exc.start].decode("utf-8", "replace")) + 1
        raise LoadError([Diagnostic(
            "yaml.encoding", f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02X} on line "
            f"{line})", name, line, column,
            hint="save the file with the UTF-8 encoding")]) from exc
    root = _compose(text, name)
    builder = _Builder(name, max_nodes)
    data = builder.build(root, ())
    if builder.diagnostics:
        raise LoadError(builder.diagnostics)
    return Document(name, data, SourceMap(builder.values, builder.keys), digest)


def _compose(text: str, name: str) -> Node:
    composer = _Composer(text)
    try:
        root = composer.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message, hint = _explain(exc, text)
        raise LoadError([Diagnostic("yaml.syntax", message, name, line, column,
                                    hint=hint)]) from exc
    except yaml.YAMLError as exc:
        line, column, message, hint = 1, 1, f"invalid YAML: {exc}", None
        if isinstance(exc, yaml.reader.ReaderError):
            before = text[:exc.position]
            line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
            code = exc.character if isinstance(exc.character, int) else ord(exc.character)
            message = f"invalid YAML: the control character U+{code:04X} is not allowed"
            hint = "remove it; it is often pasted in by accident from another program"
        raise LoadError([Diagnostic("yaml.syntax", message, name, line, column,
                                    hint=hint)]) from exc
    finally:
        dispose = getattr(composer, "dispose", None)
        if dispose:
            dispose()
    if root is None:
        raise LoadError([Diagnostic("yaml.empty", "file is empty; expected a definition",
                                    name, 1, 1)])
    return root


def _explain(exc: yaml.MarkedYAMLError, text: str) -> tuple[str, str | None]:
    """A syntax error in words a product manager can act on (the same for both parsers)."""
    context, problem = exc.context or "", exc.problem or ""
    mark, opened = exc.problem_mark, exc.context_mark
    since = f" on line {opened.line + 1}" if opened else ""
    lines = text.split("\n") if mark is not None else []
    row = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
    char = row[mark.column] if mark is not None and mark.column < len(row) else ""
    if "expected a single document" in context:
        return ("a definition file holds one YAML document; found a second one",
                "remove the `---` line and everything after it, or move it to its own file")
    if "cannot start any token" in problem:
        if char == "\t":
            return ("invalid YAML: a tab character is used for indentation",
                    "indent with spaces; YAML does not allow tabs")
        return (f"invalid YAML: a value cannot start with {char!r}",
                "put the value in quotes")
    if "flow mapping" in context or "flow sequence" in context:
        pair = "{}" if "mapping" in context else "[]"
        return (f"invalid YAML: expected `,` or `{pair[1]}` in the `{pair[0]} ... {pair[1]}` "
                f"that starts{since}",
                f"close every `{pair[0]}` with `{pair[1]}` and separate the items with commas")
    if "quoted scalar" in context:
        if "escape" in problem:
            return ("invalid YAML: unknown escape sequence in double-quoted text",
                    "write a backslash as \\\\, or use single quotes")
        return (f"invalid YAML: the quoted text that starts{since} is never closed",
                "add the closing quote")
    if "mapping values are not allowed" in problem:
        return ("invalid YAML: found `key: value` where a plain value was expected",
                "put text that contains `: ` in quotes, e.g. title: \"Lead: {company}\"; "
                "otherwise check this line's indentation")
    if "block mapping" in context:
        return ("invalid YAML: this line's indentation does not match the lines above it",
                f"the keys of the block that starts{since} must all start in the same column")
    if "block collection" in context:
        return ("invalid YAML: expected a list item (`- `) here",
                f"the items of the list that starts{since} must all start with `- ` in the "
                "same column")
    if "expected node content" in problem:
        return ("invalid YAML: a value is missing here, or starts with a character that needs "
                "quotes", "put the value in quotes")
    if "undefined alias" in problem:
        return ("invalid YAML: an alias (`*name`) refers to an anchor (`&name`) that is not "
                "defined above it", None)
    return f"invalid YAML: {problem or context or 'not a YAML document'}", None


def _tag_name(tag: str) -> str:
    """A tag as written in YAML: `!!python/object`, `!include`."""
    prefix = "tag:yaml.org,2002:"
    return f"!!{tag[len(prefix):]}" if tag.startswith(prefix) else tag


class _Builder:
    """Turns a composed node graph into plain values, recording positions."""

    def __init__(self, name: str, max_nodes: int) -> None:
        self.name = name
        self.max_nodes = max_nodes
        self.count = 0
        self.values: dict[DocPath, Position] = {}
        self.keys: dict[DocPath, Position] = {}
        self.diagnostics: list[Diagnostic] = []
        self.active: set[int] = set()

    def error(self, code: str, message: str, node: Node, path: DocPath,
              hint: str | None = None) -> None:
        mark = node.start_mark
        self.diagnostics.append(Diagnostic(code, message, self.name, mark.line + 1,
                                           mark.column + 1, path, hint))

    def build(self, node: Node, path: DocPath) -> Any:
        self.count += 1
        if self.count > self.max_nodes:
            if self.count == self.max_nodes + 1:
                self.error("yaml.too-many-nodes",
                           f"anchors and aliases expand this file to more than "
                           f"{self.max_nodes:,} values", node, path,
                           "avoid deeply nested anchors and aliases (&name / *name)")
            return None
        mark = node.start_mark
        self.values[path] = (mark.line + 1, mark.column + 1)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            self.error("yaml.recursive-alias", "an alias refers to a node that contains it",
                       node, path)
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != SEQ:
                    self.unknown_tag(node, path)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                if node.tag != MAP:
                    self.unknown_tag(node, path)
                return self.mapping(node, path)
        finally:
            self.active.discard(id(node))
        self.unknown_tag(node, path)  # pragma: no cover - libyaml only makes the three kinds
        return None

    def unknown_tag(self, node: Node, path: DocPath) -> None:
        self.error("yaml.unknown-tag", f"unknown or unsafe tag `{_tag_name(node.tag)}`", node,
                   path,
                   "remove the tag; definitions use plain YAML values only")

    def mapping(self, node: MappingNode, path: DocPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        seen: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != STR:
                kind = "a nested structure" if not isinstance(key_node, ScalarNode) else (
                    f"`{key_node.value}`" if key_node.value else "an empty key")
                self.error("yaml.non-string-key",
                           f"keys must be names (text); found {kind}", key_node, path,
                           f"quote the key if it is meant as text, e.g. \"{key_node.value}\": ..."
                           if isinstance(key_node, ScalarNode) and key_node.value else None)
                continue
            key = key_node.value
            if key == "<<":
                self.error("yaml.merge-key", "merge keys (`<<`) are not supported", key_node,
                           path, "write the keys out, or use an overlay to share definitions")
                continue
            if key in seen:
                first = seen[key].start_mark
                self.error("yaml.duplicate-key",
                           f"duplicate key `{key}` (first defined on line {first.line + 1})",
                           key_node, (*path, key), "remove or rename one of the two")
                continue
            seen[key] = key_node
            child = (*path, key)
            mark = key_node.start_mark
            self.keys[child] = (mark.line + 1, mark.column + 1)
            result[key] = self.build(value_node, child)
        return result

    def scalar(self, node: ScalarNode, path: DocPath) -> Any:
        tag, value = node.tag, node.value
        if tag == STR:
            return value
        if tag == NULL:
            if value in _NULL_VALUES:
                return None
        elif tag == BOOL:
            if value in _BOOL_VALUES:
                return _BOOL_VALUES[value]
        elif tag == INT:
            if _INT_RE.match(value):
                return int(value, 0) if value[:2] in ("0o", "0x") else int(value)
        elif tag == FLOAT:
            if _FLOAT_RE.match(value):
                return _to_float(value)
        else:
            self.unknown_tag(node, path)
            return None
        self.error("yaml.bad-scalar", f"`{value}` is not a valid {tag.rsplit(':', 1)[-1]}",
                   node, path)
        return None


def _to_float(value: str) -> float:
    lowered = value.lower()
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return float(value)
