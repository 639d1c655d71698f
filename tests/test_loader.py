"""The YAML loader: YAML 1.2 scalars, 1-based positions, and every refusal with its line."""

from __future__ import annotations

import math
import re
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metacrm.metadata.loader import (
    MAX_FILE_BYTES,
    Document,
    LoadError,
    load_bytes,
    load_file,
)


def load(text: str, **kwargs) -> Document:
    return load_bytes(text.encode("utf-8"), "test.yaml", **kwargs)


def value_of(scalar: str):
    return load(f"v: {scalar}\n").data["v"]


def refusal(raw: str | bytes, **kwargs) -> LoadError:
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    with pytest.raises(LoadError) as caught:
        load_bytes(data, "test.yaml", **kwargs)
    return caught.value


def only(error: LoadError, code: str):
    """The single diagnostic of `error`, checked to have `code`."""
    assert [d.code for d in error.diagnostics] == [code], error.diagnostics
    diagnostic = error.diagnostics[0]
    assert diagnostic.file == "test.yaml"
    assert diagnostic.line >= 1 and diagnostic.column >= 1
    return diagnostic


# -- YAML 1.2 scalars ---------------------------------------------------------------------

@pytest.mark.parametrize("text", ["on", "off", "On", "OFF", "yes", "no", "Yes", "NO", "y", "n",
                                  "Y", "N"])
def test_yaml_1_1_booleans_stay_strings(text: str) -> None:
    assert value_of(text) == text


@pytest.mark.parametrize("text", ["01234", "0777", "00", "-0123", "1_000", "0b101", "1:20",
                                  "2025-01-31", "2025-01-31T09:00:00Z", "1.2.3", "0x", "0o8",
                                  "+0x1F", "1e", "e3", "inf", "nan", "1,000"])
def test_other_yaml_1_1_forms_stay_strings(text: str) -> None:
    assert value_of(text) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("0x1F", 31), ("0xff", 255), ("0o17", 15), ("0", 0), ("42", 42), ("-7", -7), ("+5", 5),
    ("12345678901234567890", 12345678901234567890),
])
def test_integers(text: str, expected: int) -> None:
    value = value_of(text)
    assert value == expected and type(value) is int


@pytest.mark.parametrize(("text", "expected"), [
    ("1e3", 1000.0), ("1E3", 1000.0), ("1.5", 1.5), ("-2.5e-2", -0.025), (".5", 0.5),
    ("5.", 5.0), ("0.0", 0.0), (".inf", math.inf), (".Inf", math.inf), ("+.INF", math.inf),
    ("-.inf", -math.inf),
])
def test_floats(text: str, expected: float) -> None:
    value = value_of(text)
    assert value == expected and type(value) is float


@pytest.mark.parametrize("text", [".nan", ".NaN", ".NAN"])
def test_not_a_number(text: str) -> None:
    assert math.isnan(value_of(text))


@pytest.mark.parametrize("text", ["~", "null", "Null", "NULL", ""])
def test_nulls(text: str) -> None:
    assert value_of(text) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("true", True), ("True", True), ("TRUE", True), ("false", False), ("False", False),
    ("FALSE", False),
])
def test_booleans(text: str, expected: bool) -> None:
    assert value_of(text) is expected


@pytest.mark.parametrize("text", ["tRue", "nULL", "NaN", "Inf"])
def test_odd_spellings_stay_strings(text: str) -> None:
    assert value_of(text) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("'yes'", "yes"), ('"on"', "on"), ("'123'", "123"), ('"0x1F"', "0x1F"), ("'true'", "true"),
    ("''", ""), ('""', ""), ("'~'", "~"), ('"null"', "null"), ("'it''s'", "it's"),
    (r'"tab\there"', "tab\there"), (r'"line\nbreak"', "line\nbreak"), (r'"\u7dda\u7d22"', "線索"),
    (r'"a \"quote\""', 'a "quote"'), ("'#not a comment'", "#not a comment"),
    ("\"{company} · {contact_name}\"", "{company} · {contact_name}"),
])
def test_quoted_values_are_strings(text: str, expected: str) -> None:
    assert value_of(text) == expected


def test_block_scalars_are_strings() -> None:
    doc = load("literal: |\n  one\n  two: 2\nfolded: >\n  one\n  two\nkeep: |+\n  x\n\nend: 1\n")
    assert doc.data == {"literal": "one\ntwo: 2\n", "folded": "one two\n", "keep": "x\n\n",
                        "end": 1}


def test_explicit_core_tags_are_allowed() -> None:
    doc = load('a: !!str 123\nb: !!int "42"\nc: !!float 1\nd: !!bool true\ne: !!null ""\n'
               "f: !!seq [1]\ng: !!map {x: 1}\n")
    assert doc.data == {"a": "123", "b": 42, "c": 1.0, "d": True, "e": None, "f": [1],
                        "g": {"x": 1}}


def test_nested_values_and_unicode() -> None:
    doc = load("label: {en: Lead, zh-Hant: 線索}\nopts: [new, 'won', {value: lost}]\n")
    assert doc.data == {"label": {"en": "Lead", "zh-Hant": "線索"},
                        "opts": ["new", "won", {"value": "lost"}]}


def test_byte_order_mark_is_ignored() -> None:
    doc = load_bytes(b"\xef\xbb\xbfentity: lead\n", "test.yaml")
    assert doc.data == {"entity": "lead"}
    assert doc.pos(("entity",), key=True) == (1, 1)


# -- positions ------------------------------------------------------------------------------

POSITIONS = """\
entity: lead
fields:
  company: {type: string, max_length: 200}
  status:
    type: enum
    options:
      - new
      - {value: won, label: 成交}
label: {zh-Hant: 線索, en: Lead}
"""


def test_keys_and_values_have_1_based_lines_and_columns() -> None:
    doc = load(POSITIONS)
    keys, values = doc.source.keys, doc.source.values
    assert values[()] == (1, 1)
    assert keys[("entity",)] == (1, 1)
    assert values[("entity",)] == (1, 9)
    assert keys[("fields",)] == (2, 1)
    assert keys[("fields", "company")] == (3, 3)
    assert values[("fields", "company")] == (3, 12)
    assert keys[("fields", "company", "type")] == (3, 13)
    assert values[("fields", "company", "type")] == (3, 19)
    assert values[("fields", "company", "max_length")] == (3, 39)
    assert keys[("fields", "status", "type")] == (5, 5)
    assert values[("fields", "status", "type")] == (5, 11)
    assert values[("fields", "status", "options", 0)] == (7, 9)
    assert values[("fields", "status", "options", 1)] == (8, 9)
    assert keys[("fields", "status", "options", 1, "label")] == (8, 22)
    assert values[("fields", "status", "options", 1, "label")] == (8, 29)
    # columns count characters, not bytes
    assert keys[("label", "en")] == (9, 22)
    assert values[("label", "en")] == (9, 26)


def test_document_positions_fall_back_to_the_nearest_ancestor() -> None:
    doc = load(POSITIONS)
    assert doc.pos(("fields", "company", "required")) == (3, 12)
    assert doc.pos(("fields", "company", "required"), key=True) == (3, 12)
    assert doc.pos(("nowhere",)) == (1, 1)
    assert doc.pos(("fields", "status"), key=True) == (4, 3)
    diagnostic = doc.diagnostic("x.test", "message", ("fields", "status", "type"), key=True)
    assert (diagnostic.file, diagnostic.line, diagnostic.column) == ("test.yaml", 5, 5)
    assert diagnostic.path == ("fields", "status", "type")


def test_positions_of_multi_line_values() -> None:
    doc = load("a: |\n  one\n  two\nb: 'x\n  y'\nc: 3\n")
    assert doc.data == {"a": "one\ntwo\n", "b": "x y", "c": 3}
    assert doc.pos(("b",), key=True) == (4, 1)
    assert doc.pos(("c",), key=True) == (6, 1)


def test_digest_is_the_sha256_of_the_bytes() -> None:
    import hashlib

    raw = POSITIONS.encode("utf-8")
    assert load_bytes(raw, "x").digest == hashlib.sha256(raw).hexdigest()


# -- refusals -------------------------------------------------------------------------------

def test_duplicate_key() -> None:
    error = refusal("entity: lead\nfields:\n  company: {type: string}\n  company: {type: text}\n")
    diagnostic = only(error, "yaml.duplicate-key")
    assert (diagnostic.line, diagnostic.column) == (4, 3)
    assert "duplicate key `company` (first defined on line 3)" in diagnostic.message
    assert diagnostic.path == ("fields", "company")


def test_every_duplicate_key_is_reported() -> None:
    error = refusal("a: 1\nb: 2\na: 3\nb: 4\n")
    assert [(d.code, d.line) for d in error.diagnostics] == [("yaml.duplicate-key", 3),
                                                              ("yaml.duplicate-key", 4)]
    assert "duplicate key `a`" in str(error)


@pytest.mark.parametrize(("text", "line", "found"), [
    ("a: 1\n2024: x\n", 2, "`2024`"),
    ("a: 1\ntrue: x\n", 2, "`true`"),
    ("a: 1\n1.5: x\n", 2, "`1.5`"),
    ("a: 1\n~: x\n", 2, "`~`"),
    ("a:\n  b: 1\n  null: 2\n", 3, "`null`"),
    ("a: 1\n? [x, y]\n: z\n", 2, "a nested structure"),
    ("a: 1\n? {x: 1}\n: z\n", 2, "a nested structure"),
    ("a: 1\n?\n: z\n", 2, "an empty key"),
])
def test_non_string_key(text: str, line: int, found: str) -> None:
    diagnostic = only(refusal(text), "yaml.non-string-key")
    assert diagnostic.line == line
    assert f"keys must be names (text); found {found}" in diagnostic.message


def test_quoted_number_key_is_a_string() -> None:
    assert load('"2024": x\n').data == {"2024": "x"}


@pytest.mark.parametrize(("text", "line", "shown"), [
    ("a: !!python/object:os.system {}\n", 1, "!!python/object:os.system"),
    ("a: 1\nb: !!python/object/apply:os.system [ls]\n", 2, "!!python/object/apply:os.system"),
    ("a: 1\nb: !!python/name:os.system ''\n", 2, "!!python/name:os.system"),
    ("a:\n  b: !include other.yaml\n", 2, "!include"),
    ("a: !!binary aGVsbG8=\n", 1, "!!binary"),
    ("a: !!timestamp 2025-01-31\n", 1, "!!timestamp"),
    ("a: !!set {x: null}\n", 1, "!!set"),
    ("a: !local [1, 2]\n", 1, "!local"),
])
def test_unknown_tag(text: str, line: int, shown: str) -> None:
    diagnostic = only(refusal(text), "yaml.unknown-tag")
    assert diagnostic.line == line
    assert f"unknown or unsafe tag `{shown}`" in diagnostic.message


def test_core_tag_with_an_invalid_value() -> None:
    diagnostic = only(refusal("a: 1\nb: !!int twelve\n"), "yaml.bad-scalar")
    assert diagnostic.line == 2 and "`twelve` is not a valid int" in diagnostic.message


def test_merge_key() -> None:
    error = refusal("base: &base {type: string}\ncity:\n  <<: *base\n  required: true\n")
    diagnostic = only(error, "yaml.merge-key")
    assert (diagnostic.line, diagnostic.column) == (3, 3)
    assert "merge keys (`<<`) are not supported" in diagnostic.message


def test_plain_aliases_are_allowed() -> None:
    doc = load("a: &x {type: string}\nb: *x\n")
    assert doc.data == {"a": {"type": "string"}, "b": {"type": "string"}}
    assert doc.data["a"] is not doc.data["b"]


@pytest.mark.parametrize(("text", "line"), [
    ("a: &loop [1, *loop]\n", 1),
    ("a: 1\nb: &loop {c: *loop}\n", 2),
    ("a: &x\n  b:\n    c: *x\n", 1),
])
def test_recursive_alias(text: str, line: int) -> None:
    diagnostic = only(refusal(text), "yaml.recursive-alias")
    assert diagnostic.line == line
    assert "an alias refers to a node that contains it" in diagnostic.message


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True))


def test_alias_bomb() -> None:
    assert len(BOMB) < 1024  # a billion values from a few hundred bytes
    diagnostic = only(refusal(BOMB), "yaml.too-many-nodes")
    assert "expand this file to more than 200,000 values" in diagnostic.message
    assert diagnostic.line <= 3


def test_node_limit_is_a_parameter() -> None:
    text = "a: [" + ", ".join(["1"] * 50) + "]\n"
    assert len(load(text, max_nodes=100).data["a"]) == 50
    diagnostic = only(refusal(text, max_nodes=20), "yaml.too-many-nodes")
    assert "more than 20 values" in diagnostic.message and diagnostic.line == 1


def test_oversized_bytes() -> None:
    raw = b"a: " + b"x" * MAX_FILE_BYTES + b"\n"
    diagnostic = only(refusal(raw), "yaml.too-large")
    assert (diagnostic.line, diagnostic.column) == (1, 1)
    assert f"file is {len(raw):,} bytes" in diagnostic.message
    assert f"at most {MAX_FILE_BYTES:,} bytes" in diagnostic.message
    assert diagnostic.hint and "split" in diagnostic.hint


def test_size_limit_is_a_parameter(tmp_path: Path) -> None:
    only(refusal("a: 12345\n", max_bytes=5), "yaml.too-large")
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: 1\n" + b"# padding\n" * 10)
    assert load_file(path).data == {"a": 1}
    with pytest.raises(LoadError) as caught:
        load_file(path, max_bytes=20, display="big.yaml")
    assert caught.value.diagnostics[0].code == "yaml.too-large"
    assert caught.value.diagnostics[0].file == "big.yaml"


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing to parse
    with pytest.raises(LoadError) as caught:
        load_file(path)
    assert [d.code for d in caught.value.diagnostics] == ["yaml.too-large"]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as caught:
        load_file(tmp_path / "missing.yaml", display="missing.yaml")
    diagnostic = caught.value.diagnostics[0]
    assert diagnostic.code == "yaml.unreadable" and diagnostic.file == "missing.yaml"
    assert "cannot read file" in diagnostic.message


@pytest.mark.parametrize(("raw", "line", "column"), [
    (b"a: \xff\n", 1, 4),
    (b"entity: lead\nlabel: Pr\xe9sentation\n", 2, 10),
    (b"a: 1\nb: \xe7\xb7\x9a\nc: \xe7\xb7\n", 3, 4),  # a character cut in half
    (b"\xfe\xff\x00a", 1, 1),
])
def test_invalid_utf8(raw: bytes, line: int, column: int) -> None:
    diagnostic = only(refusal(raw), "yaml.encoding")
    assert (diagnostic.line, diagnostic.column) == (line, column)
    assert "file is not valid UTF-8" in diagnostic.message
    assert f"on line {line}" in diagnostic.message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "  \n# one\n# two\n"])
def test_empty_file(text: str) -> None:
    diagnostic = only(refusal(text), "yaml.empty")
    assert (diagnostic.line, diagnostic.column) == (1, 1)
    assert "file is empty" in diagnostic.message


@pytest.mark.parametrize(("text", "line"), [
    ("a: 1\n---\nb: 2\n", 2),
    ("---\na: 1\n---\nb: 2\n", 3),
    ("a: 1\n...\n---\nb: 2\n", 3),
])
def test_multi_document(text: str, line: int) -> None:
    diagnostic = only(refusal(text), "yaml.syntax")
    assert diagnostic.line == line
    assert "holds one YAML document; found a second one" in diagnostic.message


def test_one_document_with_markers_is_fine() -> None:
    assert load("---\na: 1\n...\n").data == {"a": 1}


@pytest.mark.parametrize(("text", "line", "message"), [
    ("a: {b: 1\nc: 2\n", 2, "expected `,` or `}` in the `{ ... }` that starts on line 1"),
    ("a: [1, 2\nb: 3\n", 2, "expected `,` or `]` in the `[ ... ]` that starts on line 1"),
    ("a:\n\tb: 1\n", 2, "a tab character is used for indentation"),
    ('a: "open\nb: 1\n', 3, "the quoted text that starts on line 1 is never closed"),
    ("title: Lead: {company}\n", 1, "found `key: value` where a plain value was expected"),
    ("a:\n  b: 1\n c: 2\n", 3, "indentation"),
    ("a: *missing\n", 1, "refers to an anchor (`&name`) that is not defined"),
    ("a: `x`\n", 1, "a value cannot start with '`'"),
    ('a: "\\q"\n', 1, "unknown escape sequence"),
    ("a: b\x07c\n", 1, "control character U+0007 is not allowed"),
    ("a: {: z}\n", 1, "a value is missing here"),
    ("a: ]\n", 1, "a value is missing here"),
])
def test_syntax_errors_say_what_and_where(text: str, line: int, message: str) -> None:
    diagnostic = only(refusal(text), "yaml.syntax")
    assert diagnostic.line == line
    assert message in diagnostic.message
    assert "Traceback" not in diagnostic.message


def test_load_error_lists_every_problem_it_found() -> None:
    error = refusal("a: 1\na: 2\nb: !!python/object:x {}\n<<: {c: 1}\n3: x\n")
    assert [d.code for d in error.diagnostics] == [
        "yaml.duplicate-key", "yaml.unknown-tag", "yaml.merge-key", "yaml.non-string-key"]
    assert [d.line for d in error.diagnostics] == [2, 3, 4, 5]


# -- properties -----------------------------------------------------------------------------

IDENTIFIER = st.from_regex(r"\A[a-z][a-z0-9_]{0,15}\Z")

# safe_dump writes YAML 1.1: it quotes a string exactly when a YAML 1.1 reader would take it
# for something else (`yes`, `on`, `0777`, `1_000`, `2025-01-31`, `0x1F`, `1.5`), and this
# loader reads those quoted strings back as the same text. The one gap is the other way round:
# scalars that YAML 1.2's core schema reads as numbers but YAML 1.1 reads as text, so
# safe_dump leaves them plain: `0o17`, `1e3`, `2.5E10`, `+.5`. Those are the only strings the
# round-trip property leaves out, and the test below pins that they do come back as numbers.
# (The pattern is the YAML 1.2 core schema's, without leading zeros: `0123` stays text here.)
CORE_1_2_NUMBER = re.compile(
    r"[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|0o[0-7]+"
    r"|0x[0-9a-fA-F]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
YAML_1_1 = yaml.resolver.Resolver()


def number_only_in_yaml_1_2(text: str) -> bool:
    """True for text that YAML 1.2 reads as a number and YAML 1.1 (safe_dump) as a string."""
    tag_1_1 = YAML_1_1.resolve(yaml.ScalarNode, text, (True, False))
    return bool(CORE_1_2_NUMBER.fullmatch(text)) and tag_1_1 == "tag:yaml.org,2002:str"


def test_yaml_1_2_only_numbers_are_the_known_exceptions() -> None:
    for text, value in (("0o17", 15), ("1e3", 1000.0), ("2.5E10", 2.5e10), ("-1e-2", -0.01),
                        ("+.5", 0.5)):
        assert number_only_in_yaml_1_2(text)
        dumped = yaml.safe_dump({"v": text})
        assert dumped == f"v: {text}\n"  # plain: a YAML 1.1 reader takes it for text
        assert load(dumped).data == {"v": value}
    for text in ("yes", "on", "NO", "0777", "1_000", "2025-01-31", "0x1F", "~", "true", "1.5",
                 "1.0e+3", ".inf", "01234"):
        assert not number_only_in_yaml_1_2(text)
        dumped = yaml.safe_dump({"v": text})
        assert dumped != f"v: {text}\n"  # quoted by safe_dump
        assert load(dumped).data == {"v": text}


TEXT_VALUES = st.text(max_size=60).filter(lambda s: not number_only_in_yaml_1_2(s))
VALUES = st.one_of(st.integers(), st.booleans(), TEXT_VALUES,
                   st.sampled_from(["yes", "no", "on", "off", "y", "n", "NO", "01234", "0777",
                                    "0x1F", "null", "~", "true", "1.5", ".inf", "", " x ",
                                    "a: b", "- x", "#c", "線索", "it's", 'say "hi"']))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_double_quoted_text_loads_back_exactly(text: str) -> None:
    dumped = yaml.safe_dump({"v": text}, default_style='"', allow_unicode=True)
    assert load(dumped).data == {"v": text}


def raw_nel(data: dict) -> bool:
    """With allow_unicode, safe_dump writes U+0085 (NEL) raw inside single quotes, and YAML
    1.1 readers (PyYAML's own safe_load included) fold it into a space: an emitter bug, so
    those values are only round-tripped in safe_dump's default, escaped form."""
    return any(isinstance(v, str) and "\x85" in v for v in data.values())


def test_raw_nel_is_a_pyyaml_emitter_problem() -> None:
    dumped = yaml.safe_dump({"v": "a\x85b"}, allow_unicode=True)
    assert yaml.safe_load(dumped) != {"v": "a\x85b"}
    assert load(yaml.safe_dump({"v": "a\x85b"})).data == {"v": "a\x85b"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(IDENTIFIER, VALUES, min_size=1, max_size=8), st.booleans())
def test_safe_dump_loads_back_equal_with_key_positions(data: dict, allow_unicode: bool) -> None:
    allow_unicode = allow_unicode and not raw_nel(data)
    dumped = yaml.safe_dump(data, sort_keys=False, allow_unicode=allow_unicode)
    doc = load(dumped)
    assert doc.data == data
    assert [type(v) for v in doc.data.values()] == [type(v) for v in data.values()]
    # each top-level entry is dumped on its own lines: the key's line is one past the lines
    # of every entry before it
    line = 1
    for key, value in data.items():
        assert doc.pos((key,), key=True) == (line, 1), (key, dumped)
        line += yaml.safe_dump({key: value}, allow_unicode=allow_unicode).count("\n")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from([*string.printable, "線", "·", "\ufeff"]),
               max_size=80))
def test_any_text_loads_or_is_refused_with_a_diagnostic(text: str) -> None:
    try:
        doc = load(text)
    except LoadError as error:
        assert error.diagnostics
        for diagnostic in error.diagnostics:
            assert diagnostic.code.startswith("yaml.")
            assert diagnostic.line >= 1 and diagnostic.column >= 1
    else:
        assert doc.file == "test.yaml"
