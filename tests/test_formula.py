"""Tests for the sandboxed formula language in metacrm.metadata.formula."""

from __future__ import annotations

import datetime
import pickle
import re
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from metacrm.metadata import formula as formula_module
from metacrm.metadata.formula import (
    MAX_DEPTH,
    MAX_NODES,
    MAX_STRING_LENGTH,
    MAX_TEXT_LENGTH,
    Binary,
    Call,
    FieldRef,
    Formula,
    FormulaError,
    Literal,
    Node,
    Unary,
    function_names,
    parse_formula,
)

TODAY = datetime.date(2024, 5, 17)
NOW = datetime.datetime(2024, 5, 17, 9, 30, tzinfo=datetime.UTC)


def ev(text: str, record: dict[str, object] | None = None) -> object:
    """Parse and evaluate ``text`` against ``record`` with a fixed clock."""
    return parse_formula(text).evaluate(record or {}, today=TODAY, now=NOW)


def same(value: object, expected: object) -> bool:
    """Equal in value and in type (so 1, True and Decimal('1') are told apart)."""
    return type(value) is type(expected) and value == expected


def f(*path: str) -> FieldRef:
    return FieldRef(path)


def lit(value: object) -> Literal:
    return Literal(value)


def b(op: str, left: Node, right: Node) -> Binary:
    return Binary(op, left, right)


# -- literals and tokens --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("007", 7),
        ("12.5", Decimal("12.5")),
        ("0.10", Decimal("0.10")),
        ("'it\\'s'", "it's"),
        ('"say \\"hi\\""', 'say "hi"'),
        ("'a\\\\b'", "a\\b"),
        ("'tab\\there'", "tab\there"),
        ("'line\\nbreak\\r'", "line\nbreak\r"),
        ("\"single ' inside\"", "single ' inside"),
        ("''", ""),
        ("true", True),
        ("false", False),
        ("null", None),
    ],
)
def test_literals(text: str, expected: object) -> None:
    assert same(ev(text), expected)
    assert parse_formula(text).root == Literal(expected)


def test_whitespace_is_ignored() -> None:
    assert ev(" \t1 +\n 2\r\n") == 3


def test_field_paths() -> None:
    formula = parse_formula("amount * probability / 100 + customer.region.score + amount")
    assert formula.field_paths() == frozenset(
        {("amount",), ("probability",), ("customer", "region", "score")}
    )
    assert parse_formula("1 + 2").field_paths() == frozenset()
    assert parse_formula("coalesce(-a, not b, upper(c.d))").field_paths() == frozenset(
        {("a",), ("b",), ("c", "d")}
    )


def test_field_names_may_contain_digits_and_underscores() -> None:
    assert parse_formula("_x1.y_2").root == f("_x1", "y_2")
    assert ev("line_2 + _x", {"line_2": 2, "_x": 3}) == 5


def test_function_names_can_be_field_names() -> None:
    assert parse_formula("min + len").root == b("+", f("min"), f("len"))
    assert ev("min + len", {"min": 1, "len": 2}) == 3


# -- precedence and associativity -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a + b * c", b("+", f("a"), b("*", f("b"), f("c")))),
        ("a * b + c", b("+", b("*", f("a"), f("b")), f("c"))),
        ("(a + b) * c", b("*", b("+", f("a"), f("b")), f("c"))),
        ("a - b - c", b("-", b("-", f("a"), f("b")), f("c"))),
        ("a / b / c", b("/", b("/", f("a"), f("b")), f("c"))),
        ("a * b % c", b("%", b("*", f("a"), f("b")), f("c"))),
        ("a - (b - c)", b("-", f("a"), b("-", f("b"), f("c")))),
        ("a & b + c", b("+", b("&", f("a"), f("b")), f("c"))),
        ("a + b & c", b("&", b("+", f("a"), f("b")), f("c"))),
        ("-a * b", b("*", Unary("-", f("a")), f("b"))),
        ("a * -b", b("*", f("a"), Unary("-", f("b")))),
        ("- -a", Unary("-", Unary("-", f("a")))),
        ("a - -b", b("-", f("a"), Unary("-", f("b")))),
        ("a + b == c * d", b("==", b("+", f("a"), f("b")), b("*", f("c"), f("d")))),
        ("a < b and c >= d", b("and", b("<", f("a"), f("b")), b(">=", f("c"), f("d")))),
        ("a or b and c", b("or", f("a"), b("and", f("b"), f("c")))),
        ("a and b or c", b("or", b("and", f("a"), f("b")), f("c"))),
        ("a or b or c", b("or", b("or", f("a"), f("b")), f("c"))),
        ("a and b and c", b("and", b("and", f("a"), f("b")), f("c"))),
        ("not a and b", b("and", Unary("not", f("a")), f("b"))),
        ("not a or b", b("or", Unary("not", f("a")), f("b"))),
        ("not a == b", Unary("not", b("==", f("a"), f("b")))),
        ("not not a", Unary("not", Unary("not", f("a")))),
        ("not (a or b)", Unary("not", b("or", f("a"), f("b")))),
        ("(a == b) == c", b("==", b("==", f("a"), f("b")), f("c"))),
        ("((a))", f("a")),
        (
            "if(a > 1, b, c) + 1",
            b("+", Call("if", (b(">", f("a"), lit(1)), f("b"), f("c"))), lit(1)),
        ),
        ("round(-a, 2)", Call("round", (Unary("-", f("a")), lit(2)))),
        ("today()", Call("today", ())),
    ],
)
def test_precedence_and_associativity(text: str, tree: Node) -> None:
    assert parse_formula(text).root == tree


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("2 * 3 % 4", 2),
        ("2 * (3 % 4)", 6),
        ("100 / 10 / 5", Decimal(2)),
        ("-2 * 3", -6),
        ("-(2 - 3)", 1),
        ("- - 4", 4),
        ("1 + 2 == 3", True),
        ("not 1 == 2", True),
        ("true or false and false", True),
        ("(true or false) and false", False),
        ("not true or true", True),
        ("not (true or true)", False),
        ("1 + 2 & 'x'", "3x"),
        ("'x' & (1 + 2)", "x3"),
    ],
)
def test_precedence_values(text: str, expected: object) -> None:
    assert same(ev(text), expected)


def test_concatenation_shares_the_level_of_addition() -> None:
    # ('x' & 1) + 2: the addition sees text on its left.
    with pytest.raises(FormulaError) as info:
        ev("'x' & 1 + 2")
    assert info.value.message == (
        "cannot use '+' with text and number at position 8; use '&' to join text"
    )


def test_parentheses_do_not_appear_in_the_tree() -> None:
    assert parse_formula("(((1)))").root == lit(1)


# -- arithmetic -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 + 3", 5),
        ("2 - 3", -1),
        ("2 * 3", 6),
        ("99999999999999999999 * 99999999999999999999", 99999999999999999999**2),
        ("1 + 0.5", Decimal("1.5")),
        ("0.5 + 1", Decimal("1.5")),
        ("2 * 1.5", Decimal("3.0")),
        ("3 - 0.5", Decimal("2.5")),
        ("6 / 3", Decimal(2)),
        ("10 / 4", Decimal("2.5")),
        ("1 / 3", Decimal("0.3333333333333333333333333333")),
        ("2 / 3", Decimal("0.6666666666666666666666666667")),
        ("7 % 3", 1),
        ("-7 % 3", -1),
        ("7 % -3", 1),
        ("7.5 % 2", Decimal("1.5")),
        ("-7.5 % 2", Decimal("-1.5")),
        ("-2.5", Decimal("-2.5")),
        ("0.1 + 0.2", Decimal("0.3")),
    ],
)
def test_arithmetic(text: str, expected: object) -> None:
    assert same(ev(text), expected)


def test_division_always_gives_decimal_with_28_digits() -> None:
    value = ev("1 / 7")
    assert isinstance(value, Decimal)
    assert len(value.as_tuple().digits) == 28


@pytest.mark.parametrize(
    "text", ["1 / 0", "0 / 0", "1.5 / 0", "1 / 0.0", "1 % 0", "1.5 % 0", "a / b", "a % b"]
)
def test_division_by_zero_is_null(text: str) -> None:
    assert ev(text, {"a": 5, "b": 0}) is None


def test_division_by_zero_inside_larger_expression() -> None:
    assert ev("coalesce(amount / quantity, 0) + 1", {"amount": 10, "quantity": 0}) == 1


def test_example_from_the_docs() -> None:
    formula = parse_formula("amount * probability / 100")
    assert formula.evaluate({"amount": Decimal("2500.00"), "probability": 40}) == Decimal(1000)
    assert formula.evaluate({"amount": 2500}) is None


def test_record_floats_become_decimals() -> None:
    assert same(ev("x + 0.2", {"x": 0.1}), Decimal("0.3"))


def test_huge_numbers_overflow_cleanly() -> None:
    with pytest.raises(FormulaError, match="too large") as info:
        ev("x * x", {"x": Decimal("1E+999998")})
    assert info.value.offset == 2
    with pytest.raises(FormulaError, match="too large"):
        ev("x % 7", {"x": Decimal("1E+40")})


# -- comparisons ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 == 1", True),
        ("1 == 1.0", True),
        ("1 != 2", True),
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 2.5", True),
        ("2 >= 3", False),
        ("'abc' == 'abc'", True),
        ("'abc' < 'abd'", True),
        ("'b' > 'a'", True),
        ("true == true", True),
        ("true != false", True),
        ("d1 < d2", True),
        ("d1 == d1", True),
        ("t1 < t2", True),
    ],
)
def test_comparisons(text: str, expected: bool) -> None:
    record = {
        "d1": datetime.date(2024, 1, 1),
        "d2": datetime.date(2024, 2, 1),
        "t1": datetime.datetime(2024, 1, 1, 8),
        "t2": datetime.datetime(2024, 1, 1, 9),
    }
    assert ev(text, record) is expected


# -- null semantics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "missing + 1",
        "1 - missing",
        "missing * 2",
        "missing / 2",
        "missing % 2",
        "-missing",
        "not missing",
        "null + null",
        "missing == 1",
        "missing != 1",
        "null == null",
        "missing < 1",
        "'a' >= missing",
        "missing * 'text'",
        "round(missing)",
        "round(1.5, missing)",
        "abs(missing)",
        "min(1, missing)",
        "max(missing, 2)",
        "upper(missing)",
        "lower(missing)",
        "trim(missing)",
        "len(missing)",
        "days_between(missing, today())",
        "year(missing)",
        "month(missing)",
        "day(missing)",
        "coalesce(missing, null)",
        "customer.city",
        "customer.missing",
        "amount.city",
        "missing.city.name",
    ],
)
def test_null_propagates(text: str) -> None:
    assert ev(text, {"customer": {"name": "Acme"}, "amount": 10}) is None


@pytest.mark.parametrize(
    ("left", "right", "and_result", "or_result"),
    [
        ("true", "true", True, True),
        ("true", "false", False, True),
        ("true", "null", None, True),
        ("false", "true", False, True),
        ("false", "false", False, False),
        ("false", "null", False, None),
        ("null", "true", None, True),
        ("null", "false", False, None),
        ("null", "null", None, None),
    ],
)
def test_three_valued_logic(
    left: str, right: str, and_result: bool | None, or_result: bool | None
) -> None:
    assert ev(f"{left} and {right}") is and_result
    assert ev(f"{left} or {right}") is or_result


def test_logic_short_circuits() -> None:
    assert ev("false and 'a' * 2 == 1") is False
    assert ev("true or 'a' * 2 == 1") is True
    with pytest.raises(FormulaError):
        ev("null and 'a' * 2 == 1")


def test_concatenation_treats_null_as_empty() -> None:
    assert ev("missing & 'x' & null") == "x"
    assert ev("concat(null, 'a', missing)") == "a"
    assert ev("null & null") == ""


def test_missing_and_non_mapping_paths_are_null() -> None:
    record = {"customer": "not a mapping", "account": {"owner": None}}
    assert ev("customer.city", record) is None
    assert ev("account.owner.name", record) is None
    assert ev("account.owner", record) is None
    assert ev("nothing.here", record) is None


def test_paths_follow_nested_mappings() -> None:
    record = {"customer": MappingProxyType({"address": {"city": "Oslo"}})}
    assert ev("upper(customer.address.city)", record) == "OSLO"


# -- functions ------------------------------------------------------------------------------


def test_function_registry_is_fixed_and_read_only() -> None:
    assert function_names() == frozenset(
        {
            "if", "coalesce", "round", "abs", "min", "max", "upper", "lower", "trim", "len",
            "concat", "today", "now", "days_between", "year", "month", "day",
        }
    )
    registry = formula_module._FUNCTIONS
    assert isinstance(registry, MappingProxyType)
    with pytest.raises(TypeError):
        registry["eval"] = registry["abs"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("if(a > 1, 'big', 'small')", "big"),
        ("if(a > 5, 'big', 'small')", "small"),
        ("if(missing, 'yes', 'no')", "no"),
        ("if(true, 1, 'a' * 2)", 1),
        ("if(false, 'a' * 2, 2)", 2),
        ("coalesce(missing, a, 0)", 2),
        ("coalesce(missing, null, 0)", 0),
        ("coalesce(a)", 2),
        ("coalesce(1, 'a' * 2)", 1),
        ("round(2.5)", Decimal(3)),
        ("round(-2.5)", Decimal(-3)),
        ("round(2.4)", Decimal(2)),
        ("round(2.345, 2)", Decimal("2.35")),
        ("round(2.344, 2)", Decimal("2.34")),
        ("round(2, 2)", 2),
        ("round(1234, -2)", 1200),
        ("round(1250, -2)", 1300),
        ("round(1250.5, -2)", Decimal(1300)),
        ("round(10 / 3, 2)", Decimal("3.33")),
        ("abs(-3)", 3),
        ("abs(3)", 3),
        ("abs(-2.5)", Decimal("2.5")),
        ("min(3, 1, 2)", 1),
        ("max(3, 1, 2)", 3),
        ("min(7)", 7),
        ("min(2, 1.5)", Decimal("1.5")),
        ("max(2, 1.5)", Decimal(2)),
        ("min('pear', 'apple')", "apple"),
        ("max(d1, d2)", datetime.date(2024, 2, 1)),
        ("upper('Straße')", "STRASSE"),
        ("lower('MiXed')", "mixed"),
        ("trim('  padded \\t')", "padded"),
        ("len('hello')", 5),
        ("len('')", 0),
        ("concat('a', 1, 2.5, true, false, d1)", "a12.5truefalse2024-01-01"),
        ("concat('x')", "x"),
        ("concat(t1)", "2024-01-01T08:00:00"),
        ("today()", TODAY),
        ("now()", NOW),
        ("days_between(d1, d2)", 31),
        ("days_between(d2, d1)", -31),
        ("days_between(t1, d2)", 31),
        ("days_between(d1, today())", 137),
        ("year(d2)", 2024),
        ("month(d2)", 2),
        ("day(d2)", 1),
        ("year(t1)", 2024),
        ("month(now())", 5),
        ("day(today())", 17),
    ],
)
def test_functions(text: str, expected: object) -> None:
    record = {
        "a": 2,
        "d1": datetime.date(2024, 1, 1),
        "d2": datetime.date(2024, 2, 1),
        "t1": datetime.datetime(2024, 1, 1, 8),
    }
    assert same(ev(text, record), expected)


def test_decimals_are_joined_without_exponents() -> None:
    assert ev("concat(big)", {"big": Decimal("1E+3")}) == "1000"
    assert ev("small & ''", {"small": Decimal("1E-3")}) == "0.001"


def test_clock_defaults() -> None:
    before = datetime.datetime.now(datetime.UTC)
    now = parse_formula("now()").evaluate({})
    assert isinstance(now, datetime.datetime)
    assert now.tzinfo is not None
    assert before <= now <= datetime.datetime.now(datetime.UTC)
    today = parse_formula("today()").evaluate({})
    assert isinstance(today, datetime.date)
    assert not isinstance(today, datetime.datetime)
    fixed = datetime.datetime(2020, 2, 29, 23, 59)
    assert parse_formula("today()").evaluate({}, now=fixed) == datetime.date(2020, 2, 29)


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ("(1 + 2))", "unexpected ')' at position 7", 7),
        ("", "formula is empty", 0),
        ("   ", "formula is empty", 0),
        ("1 +", "unexpected end of formula at position 3", 3),
        ("1 2", "unexpected '2' at position 2", 2),
        ("and b", "unexpected 'and' at position 0", 0),
        ("a not b", "unexpected 'not' at position 2", 2),
        ("* 2", "unexpected '*' at position 0", 0),
        ("+2", "unexpected '+' at position 0", 0),
        ("'abc' 'd'", "unexpected text 'd' at position 6", 6),
        (
            "'a long piece of text here' 1",
            "unexpected '1' at position 28",
            28,
        ),
        ("x 'a long piece of text here'", "unexpected text 'a long piece of ... at position 2", 2),
        ("(1 + 2", "missing ')' to close the '(' at position 0", 0),
        ("(1 2)", "unexpected '2' at position 3; expected ')'", 3),
        ("round(1, 2", "missing ')' to close 'round(' at position 5", 5),
        ("round(1 2)", "unexpected '2' at position 8; expected ',' or ')'", 8),
        ("upper('a',)", "unexpected ')' at position 10", 10),
        ("upper(,'a')", "unexpected ',' at position 6", 6),
        ("name & 'abc", "unterminated string starting at position 7", 7),
        ('"abc\\"', "unterminated string starting at position 0", 0),
        ("'abc\\", "unterminated string starting at position 0", 0),
        (
            "'a\\qb'",
            "unknown escape '\\q' at position 2; use \\\\, \\', \\\", \\n, \\t or \\r",
            2,
        ),
        ("sum_all(1)", "unknown function 'sum_all'", 0),
        ("1 + uper(x)", "unknown function 'uper'; did you mean 'upper'?", 4),
        ("ifs(a, b, c)", "unknown function 'ifs'; did you mean 'if'?", 0),
        ("a.b(1)", "unknown function 'a.b'; only built-in functions can be called", 0),
        ("round(1, 2, 3)", "'round' takes 1 to 2 arguments, got 3", 0),
        ("round()", "'round' takes 1 to 2 arguments, got 0", 0),
        ("x + today(1)", "'today' takes no arguments, got 1", 4),
        ("now(1, 2)", "'now' takes no arguments, got 2", 0),
        ("abs()", "'abs' takes 1 argument, got 0", 0),
        ("upper('a', 'b')", "'upper' takes 1 argument, got 2", 0),
        ("days_between(a)", "'days_between' takes 2 arguments, got 1", 0),
        ("if(a, b)", "'if' takes 3 arguments, got 2", 0),
        ("min()", "'min' takes at least 1 argument, got 0", 0),
        ("coalesce()", "'coalesce' takes at least 1 argument, got 0", 0),
        ("concat()", "'concat' takes at least 1 argument, got 0", 0),
        (
            "a < b < c",
            "comparisons cannot be chained: unexpected '<' at position 6; "
            "combine them with 'and'",
            6,
        ),
        (
            "a == b != c",
            "comparisons cannot be chained: unexpected '!=' at position 7; "
            "combine them with 'and'",
            7,
        ),
        ("a = 1", "unexpected '=' at position 2; use '==' to compare", 2),
        ("a && b", "unexpected '&&' at position 2; use 'and'", 2),
        ("a || b", "unexpected '||' at position 2; use 'or'", 2),
        ("a | b", "unexpected '|' at position 2; use 'or'", 2),
        ("!a", "unexpected '!' at position 0; use 'not', or '!=' to compare", 0),
        (
            "Amount * 2",
            "unexpected 'Amount' at position 0; names are written in lowercase, e.g. 'amount'",
            0,
        ),
        ("a AND b", "unexpected 'AND' at position 2; did you mean 'and'?", 2),
        ("x == True", "unexpected 'True' at position 5; did you mean 'true'?", 5),
        (
            "customer.City",
            "unexpected 'City' at position 9; names are written in lowercase, e.g. 'city'",
            9,
        ),
        ("a @ b", "unexpected character '@' at position 2", 2),
        ("a ; b", "unexpected character ';' at position 2", 2),
        ("a + é", "unexpected character 'é' at position 4", 4),
        ("1 + ²", "unexpected character '²' at position 4", 4),
        ("12.", "expected digits after the decimal point at position 3", 3),
        ("1.x", "expected digits after the decimal point at position 2", 2),
        (".5", "unexpected character '.' at position 0", 0),
        ("customer.", "expected a field name after '.' at position 9", 9),
        ("customer..city", "expected a field name after '.' at position 9", 9),
        ("customer.1", "expected a field name after '.' at position 9", 9),
        (
            "customer.null",
            "'null' is a reserved word and cannot be a field name at position 9",
            9,
        ),
        ("and.x", "'and' is a reserved word and cannot be a field name at position 0", 0),
    ],
)
def test_parse_errors(text: str, message: str, offset: int) -> None:
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    assert info.value.message == message
    assert str(info.value) == message
    assert info.value.offset == offset
    assert isinstance(info.value, ValueError)


def test_non_text_formula_is_rejected() -> None:
    with pytest.raises(FormulaError, match="a formula must be text, not int") as info:
        parse_formula(42)  # type: ignore[arg-type]
    assert info.value.offset == 0


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ("'a' * 2", "cannot use '*' with text and number at position 4", 4),
        ("2 - 'a'", "cannot use '-' with number and text at position 2", 2),
        ("'a' + 'b'", "cannot use '+' with text and text at position 4; use '&' to join text", 4),
        ("true + 1", "cannot use '+' with true/false and number at position 5", 5),
        ("d1 + 1", "cannot use '+' with date and number at position 3", 3),
        ("'a' < 1", "cannot compare text with number at position 4", 4),
        ("1 == 'a'", "cannot compare number with text at position 2", 2),
        ("1 == true", "cannot compare number with true/false at position 2", 2),
        ("d1 < t1", "cannot compare date with date-time at position 3", 3),
        ("true < false", "'<' cannot compare true/false values at position 5", 5),
        (
            "t1 < aware",
            "cannot compare date-times with and without a time zone at position 3",
            3,
        ),
        ("1 and true", "'and' needs true/false values, got number at position 0", 0),
        ("false or 'x'", "'or' needs true/false values, got text at position 9", 9),
        ("'x' and true", "'and' needs true/false values, got text at position 0", 0),
        ("-'a'", "'-' needs a number, got text at position 0", 0),
        ("-true", "'-' needs a number, got true/false at position 0", 0),
        ("not 1", "'not' needs a true/false value, got number at position 0", 0),
        ("if(1, 2, 3)", "'if' needs a true/false condition, got number at position 3", 3),
        ("round('a')", "'round' needs a number, got text at position 6", 6),
        ("round(true)", "'round' needs a number, got true/false at position 6", 6),
        (
            "round(1.5, 1.5)",
            "'round' needs a whole number of decimal places, got number at position 11",
            11,
        ),
        (
            "round(1.5, 29)",
            "'round' takes between -28 and 28 decimal places, got 29 at position 11",
            11,
        ),
        ("round(big, 5)", "'round' cannot round a number this large at position 0", 0),
        ("abs('a')", "'abs' needs a number, got text at position 4", 4),
        (
            "min(1, 'a')",
            "'min' needs numbers, texts, dates or date-times of one kind, got text "
            "at position 7",
            7,
        ),
        (
            "max(true, false)",
            "'max' needs numbers, texts, dates or date-times of one kind, got true/false "
            "at position 4",
            4,
        ),
        (
            "max(t1, aware)",
            "'max' cannot compare date-times with and without a time zone at position 0",
            0,
        ),
        ("upper(1)", "'upper' needs text, got number at position 6", 6),
        ("len(d1)", "'len' needs text, got date at position 4", 4),
        ("trim(true)", "'trim' needs text, got true/false at position 5", 5),
        ("lower(1.5)", "'lower' needs text, got number at position 6", 6),
        ("year('2024')", "'year' needs a date, got text at position 5", 5),
        ("days_between(d1, 5)", "'days_between' needs a date, got number at position 17", 17),
        ("month(1)", "'month' needs a date, got number at position 6", 6),
        ("day(true)", "'day' needs a date, got true/false at position 4", 4),
        ("1 + items", "field 'items' holds a value of unsupported type 'list' at position 4", 4),
        (
            "customer",
            "field 'customer' is a related record; use one of its fields, e.g. "
            "'customer.name', at position 0",
            0,
        ),
        ("nan + 1", "field 'nan' is not a finite number at position 0", 0),
        ("inf", "field 'inf' is not a finite number at position 0", 0),
        ("huge & 'x'", "number is too long to show as text at position 5", 5),
    ],
)
def test_evaluation_errors(text: str, message: str, offset: int) -> None:
    record = {
        "d1": datetime.date(2024, 1, 1),
        "t1": datetime.datetime(2024, 1, 1, 8),
        "aware": datetime.datetime(2024, 1, 1, 8, tzinfo=datetime.UTC),
        "big": Decimal("1E+30"),
        "items": [1, 2],
        "customer": {"name": "Acme"},
        "nan": float("nan"),
        "inf": Decimal("Infinity"),
        "huge": 10**5000,
    }
    formula = parse_formula(text)
    with pytest.raises(FormulaError) as info:
        formula.evaluate(record, today=TODAY, now=NOW)
    assert info.value.message == message
    assert info.value.offset == offset


def test_errors_survive_pickling() -> None:
    error = FormulaError("unexpected ')' at position 7", 7)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.offset, str(copy)) == (error.message, 7, error.message)


# -- resource limits ------------------------------------------------------------------------


def test_text_length_limit() -> None:
    longest = "'" + "x" * (MAX_TEXT_LENGTH - 2) + "'"
    assert len(ev(longest)) == MAX_TEXT_LENGTH - 2  # type: ignore[arg-type]
    with pytest.raises(FormulaError) as info:
        parse_formula(longest + " ")
    assert info.value.message == "formula is too long (2,001 characters; the limit is 2,000)"
    assert info.value.offset == MAX_TEXT_LENGTH


@pytest.mark.parametrize(
    ("opening", "closing"),
    [("(", ")"), ("abs(", ")"), ("-", ""), ("not ", "")],
)
def test_depth_limit(opening: str, closing: str) -> None:
    atom = "true" if opening == "not " else "1"
    deepest = opening * MAX_DEPTH + atom + closing * MAX_DEPTH
    assert parse_formula(deepest).evaluate({}) is not None
    too_deep = opening * (MAX_DEPTH + 1) + atom + closing * (MAX_DEPTH + 1)
    with pytest.raises(FormulaError) as info:
        parse_formula(too_deep)
    position = len(opening) * MAX_DEPTH + (len(opening) - 1 if opening.endswith("(") else 0)
    assert info.value.message == (
        f"formula is nested too deeply (the limit is 50 levels) at position {position}"
    )
    assert info.value.offset == position


def test_depth_counts_nesting_not_length() -> None:
    # A long flat chain has no nesting; a mixed expression nests only where it opens a level.
    flat = " + ".join(["1"] * 200)
    assert ev(flat) == 200
    mixed = "(" * 48 + "1 or 2 and 3 == 4 + 5 * -(6)" + ")" * 48
    parse_formula(mixed)
    with pytest.raises(FormulaError, match="nested too deeply"):
        parse_formula("(" + mixed + ")")


def test_node_count_limit() -> None:
    largest = " + ".join(["1"] * 250)  # 250 literals and 249 additions
    assert ev(largest) == 250
    too_many = " + ".join(["1"] * 251)
    with pytest.raises(FormulaError) as info:
        parse_formula(too_many)
    position = too_many.rindex("+")
    assert info.value.message == (
        f"formula is too complex (more than {MAX_NODES} parts) at position {position}"
    )
    assert info.value.offset == position


def test_deepest_left_chain_evaluates_and_pickles() -> None:
    formula = parse_formula(" - ".join(["a"] * 250))
    assert formula.evaluate({"a": 1}) == -248
    assert pickle.loads(pickle.dumps(formula)) == formula
    assert hash(formula) == hash(pickle.loads(pickle.dumps(formula)))


def test_string_length_limit() -> None:
    half = "x" * (MAX_STRING_LENGTH // 2)
    assert len(ev("a & b", {"a": half, "b": half})) == MAX_STRING_LENGTH  # type: ignore[arg-type]
    message = "text result is too long (10,001 characters; the limit is 10,000) at position {}"
    cases = [
        ("a & b & 'x'", 6, {"a": half, "b": half}),
        ("concat(a, b, 'x')", 0, {"a": half, "b": half}),
        ("upper(a)", 0, {"a": "ß" * 5000 + "x"}),
        ("lower(a)", 0, {"a": "x" * (MAX_STRING_LENGTH + 1)}),
        ("a", 0, {"a": "x" * (MAX_STRING_LENGTH + 1)}),
        ("if(true, a, 'b')", 0, {"a": "x" * (MAX_STRING_LENGTH + 1)}),
    ]
    for text, offset, record in cases:
        with pytest.raises(FormulaError) as info:
            ev(text, record)
        assert info.value.message == message.format(offset), text
        assert info.value.offset == offset, text
    # Long field values can still be measured and compared.
    long_text = "x" * (MAX_STRING_LENGTH * 2)
    assert ev("len(a)", {"a": long_text}) == MAX_STRING_LENGTH * 2
    assert ev("a == a", {"a": long_text}) is True


# -- sandboxing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ("().__class__", "unexpected ')' at position 1", 1),
        ("''.__class__", "unexpected character '.' at position 2", 2),
        ("(1).real", "unexpected character '.' at position 3", 3),
        ("__import__('os')", "unknown function '__import__'", 0),
        ("eval('1')", "unknown function 'eval'", 0),
        ("exec('1')", "unknown function 'exec'", 0),
        ("getattr(a, 'b')", "unknown function 'getattr'", 0),
        ("open('/etc/passwd')", "unknown function 'open'", 0),
        ("a.__class__.__mro__(1)", "unknown function 'a.__class__.__mro__'; only built-in "
         "functions can be called", 0),
        ("upper.__globals__", None, None),
        ("a[0]", "unexpected character '[' at position 1", 1),
        ("lambda: 1", "unexpected character ':' at position 6", 6),
        ("{}", "unexpected character '{' at position 0", 0),
        ("`x`", "unexpected character '`' at position 0", 0),
        ("1 if a else 2", "unexpected 'if' at position 2", 2),
    ],
)
def test_python_objects_are_unreachable(
    text: str, message: str | None, offset: int | None
) -> None:
    if message is None:
        # Parses as a field path, which only ever looks keys up in mappings.
        assert ev(text, {"upper": "x"}) is None
        return
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    assert info.value.message == message
    assert info.value.offset == offset


def test_dunder_names_are_only_mapping_keys() -> None:
    class Obj:
        secret = "attribute"

    record = {"x": "abc", "obj": Obj(), "m": {"__class__": 5}}
    assert ev("x.__class__", record) is None
    assert ev("obj.secret", record) is None
    assert ev("m.__class__", record) == 5
    assert ev("__builtins__", record) is None
    assert ev("__class__.__name__", record) is None


def test_module_never_uses_python_evaluation() -> None:
    source = Path(formula_module.__file__).read_text(encoding="utf-8")
    assert not re.search(r"\b(eval|exec|compile|__import__)\s*\(", source)
    assert not re.search(r"^\s*(import|from)\s+ast\b", source, re.MULTILINE)
    assert "import builtins" not in source


# -- values: hashing, pickling, equality ----------------------------------------------------


def test_formulas_are_hashable_and_picklable() -> None:
    text = "if(amount > 1000, round(amount * 0.9, 2), coalesce(customer.discount, 0)) & 'x'"
    formula = parse_formula(text)
    copy = pickle.loads(pickle.dumps(formula))
    assert copy == formula
    assert hash(copy) == hash(formula)
    assert copy.text == text
    assert {formula, copy, parse_formula(text)} == {formula}
    assert copy.field_paths() == formula.field_paths()
    record = {"amount": 2000, "customer": {"discount": 5}}
    assert copy.evaluate(record) == formula.evaluate(record) == "1800.00x"


def test_pickled_formula_keeps_error_offsets() -> None:
    copy = pickle.loads(pickle.dumps(parse_formula("1 + 'a' * 2")))
    with pytest.raises(FormulaError) as info:
        copy.evaluate({})
    assert info.value.offset == 8


def test_formulas_are_immutable() -> None:
    formula = parse_formula("1 + 2")
    with pytest.raises(AttributeError):
        formula.text = "3"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        formula.root.op = "-"  # type: ignore[union-attr]


def test_tree_equality_ignores_offsets_and_spacing() -> None:
    assert parse_formula("1+2").root == parse_formula(" 1 +  2").root
    assert hash(parse_formula("a*b").root) == hash(parse_formula("(a) * (b)").root)
    assert parse_formula("1+2") != parse_formula("1 + 2")  # the text differs


def test_literals_compare_by_type() -> None:
    assert Literal(True) != Literal(1)
    assert Literal(1) != Literal(Decimal(1))
    assert Literal(None) != Literal(0)
    assert Literal("1") == Literal("1")
    assert len({Literal(True), Literal(1), Literal(Decimal(1))}) == 3
    assert Literal(1) != "1"


def test_hand_built_formula_is_checked_at_evaluation() -> None:
    unknown = Formula("x", Call("sum_all", (Literal(1),)))
    with pytest.raises(FormulaError, match="unknown function 'sum_all'"):
        unknown.evaluate({})
    wrong_arity = Formula("x", Call("abs", ()))
    with pytest.raises(FormulaError, match="'abs' takes 1 argument, got 0"):
        wrong_arity.evaluate({})


# -- property tests -------------------------------------------------------------------------

ARITHMETIC = ("+", "-", "*", "/", "%")
POWER = {"+": 50, "-": 50, "*": 60, "/": 60, "%": 60}

integer_leaves = st.builds(Literal, st.integers(min_value=0, max_value=10**9))
field_leaves = st.builds(FieldRef, st.sampled_from([("a",), ("b",), ("deal", "amount")]))


def arithmetic_trees(ops: tuple[str, ...], leaves: st.SearchStrategy[Node]) -> st.SearchStrategy:
    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        return st.builds(Binary, st.sampled_from(ops), children, children) | st.builds(
            Unary, st.just("-"), children
        )

    return st.recursive(leaves, extend, max_leaves=25)


def nesting(node: Node) -> int:
    """Depth of the tree (an upper bound of the parser's nesting when fully parenthesised)."""
    if isinstance(node, Unary):
        return 2 + nesting(node.operand)
    if isinstance(node, Binary):
        return 1 + max(nesting(node.left), nesting(node.right))
    return 0


def size(node: Node) -> int:
    if isinstance(node, Unary):
        return 1 + size(node.operand)
    if isinstance(node, Binary):
        return 1 + size(node.left) + size(node.right)
    return 1


def within_limits(tree: Node, text: str) -> bool:
    return nesting(tree) <= MAX_DEPTH and size(tree) <= MAX_NODES and len(text) <= MAX_TEXT_LENGTH


def render_full(node: Node) -> str:
    """Text with every operation in parentheses."""
    if isinstance(node, Literal):
        return str(node.value)
    if isinstance(node, FieldRef):
        return ".".join(node.path)
    if isinstance(node, Unary):
        return f"({node.op}{render_full(node.operand)})"
    assert isinstance(node, Binary)
    return f"({render_full(node.left)} {node.op} {render_full(node.right)})"


def render_minimal(node: Node, context: int = 0, right_side: bool = False) -> str:
    """Text with only the parentheses that precedence and left associativity need."""
    if isinstance(node, Literal):
        return str(node.value)
    if isinstance(node, FieldRef):
        return ".".join(node.path)
    if isinstance(node, Unary):
        return "-" + render_minimal(node.operand, 70)
    assert isinstance(node, Binary)
    power = POWER[node.op]
    text = (
        f"{render_minimal(node.left, power)} {node.op} "
        f"{render_minimal(node.right, power, right_side=True)}"
    )
    if power < context or (power == context and right_side):
        return f"({text})"
    return text


def reference(node: Node, env: dict[tuple[str, ...], int]) -> int:
    """Independent evaluation of an integer + - * tree."""
    if isinstance(node, Literal):
        assert isinstance(node.value, int)
        return node.value
    if isinstance(node, FieldRef):
        return env[node.path]
    if isinstance(node, Unary):
        return -reference(node.operand, env)
    assert isinstance(node, Binary)
    left, right = reference(node.left, env), reference(node.right, env)
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    assert node.op == "*"
    return left * right


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(arithmetic_trees(ARITHMETIC, integer_leaves | field_leaves))
def test_fully_parenthesised_rendering_round_trips(tree: Node) -> None:
    text = render_full(tree)
    assume(within_limits(tree, text))
    formula = parse_formula(text)
    assert formula.root == tree
    assert pickle.loads(pickle.dumps(formula)) == formula


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(arithmetic_trees(ARITHMETIC, integer_leaves | field_leaves))
def test_minimal_rendering_round_trips(tree: Node) -> None:
    text = render_minimal(tree)
    assume(within_limits(tree, text))
    assert parse_formula(text).root == tree


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    arithmetic_trees(("+", "-", "*"), integer_leaves | field_leaves),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.integers(min_value=-(10**12), max_value=10**12),
)
def test_integer_evaluation_matches_reference(tree: Node, a: int, b: int, amount: int) -> None:
    assume(within_limits(tree, render_full(tree)))
    env = {("a",): a, ("b",): b, ("deal", "amount"): amount}
    record = {"a": a, "b": b, "deal": {"amount": amount}}
    expected = reference(tree, env)
    assert same(parse_formula(render_full(tree)).evaluate(record), expected)
    assert same(parse_formula(render_minimal(tree)).evaluate(record), expected)


FORMULA_ALPHABET = st.sampled_from(
    [
        *"abcxyz_019 .,()+-*/%&<>=!'\"\\",
        *("and ", "or ", "not ", "null", "true", "if(", "round(", "concat(", "upper(", "min("),
        *("A", "é", "\n"),
    ]
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FORMULA_ALPHABET, max_size=40).map("".join))
def test_arbitrary_text_only_ever_raises_formula_error(text: str) -> None:
    try:
        formula = parse_formula(text)
    except FormulaError as error:
        assert 0 <= error.offset <= len(text)
        assert error.message
        return
    record = {"a": 3, "b": Decimal("1.5"), "c": "text", "x": None, "y": True, "z": {"a": 1}}
    try:
        formula.evaluate(record, today=TODAY, now=NOW)
    except FormulaError as error:
        assert 0 <= error.offset <= len(text)
