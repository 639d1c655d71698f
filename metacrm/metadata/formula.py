"""A small, sandboxed expression language for read-only formula fields.

A formula such as ``amount * probability / 100`` is declared in YAML and evaluated against a
record.  The text is read by a hand-written tokenizer and a Pratt (precedence-climbing)
parser into a tree of frozen dataclasses; nothing here uses Python's ``eval``, ``exec``,
``compile`` or ``ast``, and evaluation only ever looks values up in ``Mapping`` objects, so a
formula cannot reach Python attributes or objects.

Operators, lowest to highest precedence::

    or
    and
    not                          (prefix)
    ==  !=  <  <=  >  >=         (cannot be chained)
    +  -  &                      (& joins text)
    *  /  %
    -                            (prefix)

Nulls behave as in SQL: arithmetic and comparisons with null give null, ``and``/``or`` use
three-valued logic, ``&`` and ``concat`` treat null as empty text.  Division (or ``%``) by
zero gives null.  ``/`` always gives a ``Decimal``; mixing integers and decimals gives a
``Decimal``; ``%`` takes the sign of the left operand, as in SQL.
"""

from __future__ import annotations

import datetime
import decimal
import difflib
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "DECIMAL_PRECISION",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_STRING_LENGTH",
    "MAX_TEXT_LENGTH",
    "Binary",
    "Call",
    "FieldRef",
    "Formula",
    "FormulaError",
    "Literal",
    "Node",
    "Unary",
    "function_names",
    "parse_formula",
]

MAX_TEXT_LENGTH: Final = 2_000
"""Longest formula text accepted, in characters."""
MAX_DEPTH: Final = 50
"""Deepest nesting of parentheses, function calls and prefix operators."""
MAX_NODES: Final = 500
"""Most parts (literals, fields, operators, calls) one formula may have."""
MAX_STRING_LENGTH: Final = 10_000
"""Longest text a formula may produce."""
DECIMAL_PRECISION: Final = 28
"""Significant digits kept by decimal arithmetic."""


class FormulaError(ValueError):
    """A formula could not be parsed or evaluated.

    ``message`` is meant for the person who wrote the formula; ``offset`` is the 0-based
    character position in the formula text where the problem is.
    """

    message: str
    offset: int

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message, offset)
        self.message = message
        self.offset = offset

    def __str__(self) -> str:
        return self.message


# -- syntax tree ----------------------------------------------------------------------------
# ``offset`` records where a node starts (for operators: where the operator is) so that
# evaluation errors can point into the text.  It takes no part in equality or hashing.


@dataclass(frozen=True, slots=True, eq=False)
class Literal:
    """A constant: ``None``, ``bool``, ``int``, ``Decimal`` or ``str``."""

    value: object
    offset: int = field(default=0, repr=False)

    def __eq__(self, other: object) -> bool:
        # Compare the value's type too, so ``true`` and ``1`` are different literals.
        if not isinstance(other, Literal):
            return NotImplemented
        return type(self.value) is type(other.value) and self.value == other.value

    def __hash__(self) -> int:
        return hash((Literal, type(self.value).__name__, self.value))


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field of the record, or a dotted path through references (``customer.city``)."""

    path: tuple[str, ...]
    offset: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Unary:
    """A prefix operator: ``-`` or ``not``."""

    op: str
    operand: Node
    offset: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Binary:
    """An infix operator applied to two operands."""

    op: str
    left: Node
    right: Node
    offset: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Call:
    """A call of one of the built-in functions."""

    name: str
    args: tuple[Node, ...]
    offset: int = field(default=0, compare=False, repr=False)


Node = Literal | FieldRef | Unary | Binary | Call


@dataclass(frozen=True, slots=True)
class Formula:
    """A parsed formula: its source text and syntax tree."""

    text: str
    root: Node

    def field_paths(self) -> frozenset[tuple[str, ...]]:
        """Every field path the formula refers to."""
        paths: set[tuple[str, ...]] = set()
        stack: list[Node] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, FieldRef):
                paths.add(node.path)
            elif isinstance(node, Unary):
                stack.append(node.operand)
            elif isinstance(node, Binary):
                stack.extend((node.left, node.right))
            elif isinstance(node, Call):
                stack.extend(node.args)
        return frozenset(paths)

    def evaluate(
        self,
        record: Mapping[str, object],
        *,
        today: datetime.date | None = None,
        now: datetime.datetime | None = None,
    ) -> object:
        """Compute the formula's value for ``record``.

        ``now`` defaults to the current time in UTC and ``today`` to ``now``'s date.  The
        result is ``None``, ``bool``, ``int``, ``Decimal``, ``str``, ``date`` or ``datetime``.
        """
        if now is None:
            now = datetime.datetime.now(datetime.UTC)
        if today is None:
            today = now.date()
        evaluator = _Evaluator(record, today, now)
        try:
            result = evaluator.evaluate(self.root)
        except RecursionError:
            raise FormulaError("formula is nested too deeply to evaluate", 0) from None
        if isinstance(result, str):
            _check_text_length(len(result), self.root)
        return result


def parse_formula(text: str) -> Formula:
    """Parse formula text, raising ``FormulaError`` if it is not a valid formula."""
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be text, not {type(text).__name__}", 0)
    if len(text) > MAX_TEXT_LENGTH:
        raise FormulaError(
            f"formula is too long ({len(text):,} characters; the limit is "
            f"{MAX_TEXT_LENGTH:,})",
            MAX_TEXT_LENGTH,
        )
    if not text.strip():
        raise FormulaError("formula is empty", 0)
    parser = _Parser(_tokenize(text))
    try:
        root = parser.parse()
    except RecursionError:
        raise FormulaError("formula is nested too deeply", 0) from None
    return Formula(text, root)


def function_names() -> frozenset[str]:
    """Names of the functions formulas may call."""
    return frozenset(_FUNCTIONS)


# -- tokenizer ------------------------------------------------------------------------------

_DIGITS: Final = frozenset("0123456789")
_NAME_START: Final = frozenset("abcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS: Final = _NAME_START | _DIGITS
_WORD_CHARS: Final = _NAME_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SPACE: Final = frozenset(" \t\r\n")
_KEYWORDS: Final = frozenset({"and", "or", "not", "true", "false", "null"})
_CONSTANTS: Final[Mapping[str, object]] = MappingProxyType(
    {"true": True, "false": False, "null": None}
)
_OPERATORS: Final = (
    "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "&", "(", ")", ",",
)
_ESCAPES: Final[Mapping[str, str]] = MappingProxyType(
    {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
)
_OPERATOR_HINTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "&&": "use 'and'",
        "||": "use 'or'",
        "|": "use 'or'",
        "=": "use '==' to compare",
        "!": "use 'not', or '!=' to compare",
    }
)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "string", "name", "keyword", "op" or "end"
    value: object
    offset: int
    text: str


def _tokenize(text: str) -> Iterator[_Token]:
    """Yield tokens one at a time, so the leftmost problem in the text is reported first."""
    pos = 0
    size = len(text)
    while pos < size:
        char = text[pos]
        if char in _SPACE:
            pos += 1
            continue
        if char in _DIGITS:
            token, pos = _read_number(text, pos)
        elif char in _NAME_START:
            token, pos = _read_name(text, pos)
        elif char in "'\"":
            token, pos = _read_string(text, pos)
        else:
            token, pos = _read_operator(text, pos)
        yield token
    yield _Token("end", None, size, "")


def _read_operator(text: str, pos: int) -> tuple[_Token, int]:
    doubled = text[pos : pos + 2]
    if doubled in _OPERATOR_HINTS:
        raise FormulaError(
            f"unexpected '{doubled}' at position {pos}; {_OPERATOR_HINTS[doubled]}", pos
        )
    for op in _OPERATORS:
        if text.startswith(op, pos):
            return _Token("op", op, pos, op), pos + len(op)
    char = text[pos]
    if char in _OPERATOR_HINTS:
        raise FormulaError(f"unexpected '{char}' at position {pos}; {_OPERATOR_HINTS[char]}", pos)
    raise _bad_character(text, pos)


def _bad_character(text: str, pos: int) -> FormulaError:
    char = text[pos]
    if char in _WORD_CHARS:
        end = pos
        while end < len(text) and text[end] in _WORD_CHARS:
            end += 1
        word = text[pos:end]
        lower = word.lower()
        if lower in _KEYWORDS:
            hint = f"did you mean '{lower}'?"
        else:
            hint = f"names are written in lowercase, e.g. '{lower}'"
        return FormulaError(f"unexpected '{word}' at position {pos}; {hint}", pos)
    return FormulaError(f"unexpected character {char!r} at position {pos}", pos)


def _read_number(text: str, pos: int) -> tuple[_Token, int]:
    start = pos
    while pos < len(text) and text[pos] in _DIGITS:
        pos += 1
    if pos < len(text) and text[pos] == ".":
        if pos + 1 < len(text) and text[pos + 1] in _DIGITS:
            pos += 1
            while pos < len(text) and text[pos] in _DIGITS:
                pos += 1
            literal = text[start:pos]
            return _Token("number", Decimal(literal), start, literal), pos
        pos += 1
        raise FormulaError(f"expected digits after the decimal point at position {pos}", pos)
    literal = text[start:pos]
    return _Token("number", int(literal), start, literal), pos


def _read_name(text: str, pos: int) -> tuple[_Token, int]:
    start = pos
    parts: list[tuple[str, int]] = []
    while True:
        part_start = pos
        while pos < len(text) and text[pos] in _NAME_CHARS:
            pos += 1
        parts.append((text[part_start:pos], part_start))
        if pos >= len(text) or text[pos] != ".":
            break
        pos += 1
        if pos < len(text) and text[pos] in _NAME_START:
            continue
        if pos < len(text) and text[pos] in _WORD_CHARS - _NAME_CHARS:
            raise _bad_character(text, pos)
        raise FormulaError(f"expected a field name after '.' at position {pos}", pos)
    source = text[start:pos]
    if len(parts) == 1:
        kind = "keyword" if source in _KEYWORDS else "name"
        return _Token(kind, source, start, source), pos
    for part, offset in parts:
        if part in _KEYWORDS:
            raise FormulaError(
                f"'{part}' is a reserved word and cannot be a field name at position {offset}",
                offset,
            )
    return _Token("name", source, start, source), pos


def _read_string(text: str, pos: int) -> tuple[_Token, int]:
    start = pos
    quote = text[pos]
    pos += 1
    chunks: list[str] = []
    while True:
        if pos >= len(text):
            raise FormulaError(f"unterminated string starting at position {start}", start)
        char = text[pos]
        if char == quote:
            pos += 1
            break
        if char == "\\":
            if pos + 1 >= len(text):
                raise FormulaError(f"unterminated string starting at position {start}", start)
            escaped = text[pos + 1]
            if escaped not in _ESCAPES:
                raise FormulaError(
                    f"unknown escape '\\{escaped}' at position {pos}; "
                    "use \\\\, \\', \\\", \\n, \\t or \\r",
                    pos,
                )
            chunks.append(_ESCAPES[escaped])
            pos += 2
        else:
            chunks.append(char)
            pos += 1
    return _Token("string", "".join(chunks), start, text[start:pos]), pos


# -- parser ---------------------------------------------------------------------------------

_COMPARE: Final[Mapping[str, Callable[[Any, Any], object]]] = MappingProxyType(
    {
        "==": operator.eq,
        "!=": operator.ne,
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
    }
)
_COMPARISONS: Final = frozenset(_COMPARE)
_INFIX_POWER: Final[Mapping[str, int]] = MappingProxyType(
    {
        "or": 10,
        "and": 20,
        **dict.fromkeys(_COMPARISONS, 40),
        "+": 50,
        "-": 50,
        "&": 50,
        "*": 60,
        "/": 60,
        "%": 60,
    }
)
_NOT_POWER: Final = 30
_NEGATE_POWER: Final = 70


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "end of formula"
    shown = token.text if len(token.text) <= 20 else token.text[:17] + "..."
    return f"text {shown}" if token.kind == "string" else f"'{shown}'"


def _infix_power(token: _Token) -> int:
    if token.kind in ("op", "keyword"):
        return _INFIX_POWER.get(token.text, 0)
    return 0


def _is_op(token: _Token, text: str) -> bool:
    return token.kind == "op" and token.text == text


class _Parser:
    __slots__ = ("_next", "_nodes", "_tokens")

    def __init__(self, tokens: Iterator[_Token]) -> None:
        self._tokens = tokens
        self._next: _Token | None = None
        self._nodes = 0

    def parse(self) -> Node:
        root = self._expression(0, 0)
        token = self._peek()
        if token.kind != "end":
            raise self._unexpected(token)
        return root

    # helpers

    def _peek(self) -> _Token:
        # Read a token only when the grammar needs to look at it.
        if self._next is None:
            self._next = next(self._tokens)
        return self._next

    def _advance(self) -> _Token:
        token = self._peek()
        if token.kind != "end":
            self._next = None
        return token

    def _unexpected(self, token: _Token, expected: str = "") -> FormulaError:
        suffix = f"; expected {expected}" if expected else ""
        return FormulaError(
            f"unexpected {_describe(token)} at position {token.offset}{suffix}", token.offset
        )

    def _node(self, node: Node) -> Node:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise FormulaError(
                f"formula is too complex (more than {MAX_NODES} parts) "
                f"at position {node.offset}",
                node.offset,
            )
        return node

    @staticmethod
    def _nest(depth: int, token: _Token) -> int:
        depth += 1
        if depth > MAX_DEPTH:
            raise FormulaError(
                f"formula is nested too deeply (the limit is {MAX_DEPTH} levels) "
                f"at position {token.offset}",
                token.offset,
            )
        return depth

    # grammar

    def _expression(self, min_power: int, depth: int) -> Node:
        left = self._prefix(self._advance(), depth)
        while True:
            op_token = self._peek()
            power = _infix_power(op_token)
            if power <= min_power:
                return left
            self._advance()
            right = self._expression(power, depth)
            left = self._node(Binary(op_token.text, left, right, op_token.offset))
            following = self._peek()
            if op_token.text in _COMPARISONS and _infix_power(following) == power:
                raise FormulaError(
                    f"comparisons cannot be chained: unexpected '{following.text}' at "
                    f"position {following.offset}; combine them with 'and'",
                    following.offset,
                )

    def _prefix(self, token: _Token, depth: int) -> Node:
        if token.kind in ("number", "string"):
            return self._node(Literal(token.value, token.offset))
        if token.kind == "keyword":
            if token.text in _CONSTANTS:
                return self._node(Literal(_CONSTANTS[token.text], token.offset))
            if token.text == "not":
                operand = self._expression(_NOT_POWER, self._nest(depth, token))
                return self._node(Unary("not", operand, token.offset))
        elif token.kind == "name":
            if _is_op(self._peek(), "("):
                return self._call(token, depth)
            return self._node(FieldRef(tuple(token.text.split(".")), token.offset))
        elif _is_op(token, "-"):
            operand = self._expression(_NEGATE_POWER, self._nest(depth, token))
            return self._node(Unary("-", operand, token.offset))
        elif _is_op(token, "("):
            inner = self._expression(0, self._nest(depth, token))
            closing = self._advance()
            if _is_op(closing, ")"):
                return inner
            if closing.kind == "end":
                raise FormulaError(
                    f"missing ')' to close the '(' at position {token.offset}", token.offset
                )
            raise self._unexpected(closing, "')'")
        raise self._unexpected(token)

    def _call(self, name_token: _Token, depth: int) -> Node:
        name = name_token.text
        spec = _FUNCTIONS.get(name)
        if spec is None:
            raise _unknown_function(name, name_token.offset)
        opening = self._advance()
        inner_depth = self._nest(depth, opening)
        args: list[Node] = []
        if _is_op(self._peek(), ")"):
            self._advance()
        else:
            while True:
                args.append(self._expression(0, inner_depth))
                token = self._advance()
                if _is_op(token, ")"):
                    break
                if _is_op(token, ","):
                    continue
                if token.kind == "end":
                    raise FormulaError(
                        f"missing ')' to close '{name}(' at position {opening.offset}",
                        opening.offset,
                    )
                raise self._unexpected(token, "',' or ')'")
        _check_arity(name, spec, len(args), name_token.offset)
        return self._node(Call(name, tuple(args), name_token.offset))


def _unknown_function(name: str, offset: int) -> FormulaError:
    message = f"unknown function '{name}'"
    if "." in name:
        return FormulaError(f"{message}; only built-in functions can be called", offset)
    matches = difflib.get_close_matches(name, sorted(_FUNCTIONS), n=1)
    if matches:
        message += f"; did you mean '{matches[0]}'?"
    return FormulaError(message, offset)


def _check_arity(name: str, spec: _Function, count: int, offset: int) -> None:
    low, high = spec.min_args, spec.max_args
    if low <= count and (high is None or count <= high):
        return
    if high is None:
        expected = f"at least {_plural(low, 'argument')}"
    elif low == high:
        expected = "no arguments" if low == 0 else _plural(low, "argument")
    else:
        expected = f"{low} to {high} arguments"
    raise FormulaError(f"'{name}' takes {expected}, got {count}", offset)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# -- values ---------------------------------------------------------------------------------


def _kind(value: object) -> str:
    """The name of a value's type, as shown in error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | Decimal):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, datetime.datetime):
        return "date-time"
    if isinstance(value, datetime.date):
        return "date"
    return type(value).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def _check_text_length(length: int, node: Node) -> None:
    if length > MAX_STRING_LENGTH:
        raise FormulaError(
            f"text result is too long ({length:,} characters; the limit is "
            f"{MAX_STRING_LENGTH:,}) at position {node.offset}",
            node.offset,
        )


def _to_text(value: object, node: Node) -> str:
    """Text form of a value for ``&`` and ``concat``; null becomes empty text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:
            raise FormulaError(
                f"number is too long to show as text at position {node.offset}", node.offset
            ) from None
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        if not isinstance(exponent, int) or not -MAX_STRING_LENGTH < exponent < MAX_STRING_LENGTH:
            raise FormulaError(
                f"number is too long to show as text at position {node.offset}", node.offset
            )
        return format(value, "f")
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise FormulaError(f"cannot show {_kind(value)} as text at position {node.offset}", node.offset)


def _record_value(value: object, node: FieldRef) -> object:
    """Check and normalise a value read from a record."""
    name = ".".join(node.path)
    if value is None or isinstance(value, bool | int | str | datetime.date):
        return value
    if isinstance(value, float | Decimal):
        number = Decimal(repr(value)) if isinstance(value, float) else value
        if not number.is_finite():
            raise FormulaError(
                f"field '{name}' is not a finite number at position {node.offset}", node.offset
            )
        return number
    if isinstance(value, Mapping):
        raise FormulaError(
            f"field '{name}' is a related record; use one of its fields, e.g. "
            f"'{name}.name', at position {node.offset}",
            node.offset,
        )
    raise FormulaError(
        f"field '{name}' holds a value of unsupported type '{type(value).__name__}' "
        f"at position {node.offset}",
        node.offset,
    )


# -- evaluation -----------------------------------------------------------------------------


def _decimal_context() -> decimal.Context:
    return decimal.Context(
        prec=DECIMAL_PRECISION,
        rounding=decimal.ROUND_HALF_EVEN,
        traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
    )


class _Evaluator:
    __slots__ = ("context", "now", "record", "today")

    def __init__(
        self, record: Mapping[str, object], today: datetime.date, now: datetime.datetime
    ) -> None:
        self.record = record
        self.today = today
        self.now = now
        self.context = _decimal_context()

    def evaluate(self, node: Node) -> object:
        """Value of ``node``; one Python frame per tree level."""
        match node:
            case Literal(value=value):
                return value
            case FieldRef(path=path):
                current: object = self.record
                for name in path:
                    if not isinstance(current, Mapping):
                        return None
                    current = current.get(name)
                return _record_value(current, node)
            case Unary(op=op, operand=operand):
                return self._unary(op, self.evaluate(operand), node)
            case Binary(op="and" | "or" as op, left=left, right=right):
                first = _truth(op, self.evaluate(left), left)
                if first is (op == "or"):
                    return first
                second = _truth(op, self.evaluate(right), right)
                if second is (op == "or"):
                    return second
                if first is None or second is None:
                    return None
                return op == "and"
            case Binary(op=op, left=left, right=right):
                return self._binary(op, self.evaluate(left), self.evaluate(right), node)
            case Call(name=name, args=args):
                spec = _FUNCTIONS.get(name)
                if spec is None:
                    raise _unknown_function(name, node.offset)
                _check_arity(name, spec, len(args), node.offset)
                return spec.function(self, node)
        raise FormulaError(f"unsupported formula part {type(node).__name__}", 0)

    def values(self, node: Call) -> list[object]:
        """Evaluate every argument of a call."""
        return [self.evaluate(arg) for arg in node.args]

    def _unary(self, op: str, value: object, node: Unary) -> object:
        if value is None:
            return None
        if op == "-" and _is_number(value):
            return -value if isinstance(value, int) else self.context.minus(value)
        if op == "not" and isinstance(value, bool):
            return not value
        expected = "a number" if op == "-" else "a true/false value"
        raise FormulaError(
            f"'{op}' needs {expected}, got {_kind(value)} at position {node.offset}", node.offset
        )

    def _binary(self, op: str, left: object, right: object, node: Binary) -> object:
        if op == "&":
            left_text, right_text = _to_text(left, node), _to_text(right, node)
            _check_text_length(len(left_text) + len(right_text), node)
            return left_text + right_text
        if op in _COMPARISONS:
            return _compare(op, left, right, node)
        if left is None or right is None:
            return None
        if not (
            isinstance(left, int | Decimal)
            and isinstance(right, int | Decimal)
            and _is_number(left)
            and _is_number(right)
        ):
            hint = "; use '&' to join text" if op == "+" and isinstance(left, str) else ""
            raise FormulaError(
                f"cannot use '{op}' with {_kind(left)} and {_kind(right)} "
                f"at position {node.offset}{hint}",
                node.offset,
            )
        try:
            return self._arithmetic(op, left, right)
        except decimal.DecimalException:
            raise FormulaError(
                f"cannot calculate '{op}': the numbers are too large at position {node.offset}",
                node.offset,
            ) from None

    def _arithmetic(self, op: str, left: int | Decimal, right: int | Decimal) -> object:
        context = self.context
        if op in ("/", "%") and right == 0:
            return None
        both_int = isinstance(left, int) and isinstance(right, int)
        if op == "/":
            return context.divide(Decimal(left), Decimal(right))
        if op == "%":
            if isinstance(left, int) and isinstance(right, int):
                remainder = abs(left) % abs(right)
                return -remainder if left < 0 else remainder
            return context.remainder(Decimal(left), Decimal(right))
        if op == "+":
            return left + right if both_int else context.add(Decimal(left), Decimal(right))
        if op == "-":
            return left - right if both_int else context.subtract(Decimal(left), Decimal(right))
        if op == "*":
            return left * right if both_int else context.multiply(Decimal(left), Decimal(right))
        raise FormulaError(f"unknown operator '{op}'", 0)


def _truth(op: str, value: object, node: Node) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise FormulaError(
        f"'{op}' needs true/false values, got {_kind(value)} at position {node.offset}",
        node.offset,
    )


def _compare(op: str, left: object, right: object, node: Binary) -> bool | None:
    if left is None or right is None:
        return None
    kind = _kind(left)
    if kind != _kind(right):
        raise FormulaError(
            f"cannot compare {kind} with {_kind(right)} at position {node.offset}", node.offset
        )
    if kind == "true/false" and op not in ("==", "!="):
        raise FormulaError(
            f"'{op}' cannot compare true/false values at position {node.offset}", node.offset
        )
    try:
        return bool(_COMPARE[op](left, right))
    except TypeError:
        raise FormulaError(
            f"cannot compare date-times with and without a time zone at position {node.offset}",
            node.offset,
        ) from None


# -- functions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Function:
    min_args: int
    max_args: int | None
    function: Callable[[_Evaluator, Call], object]


def _argument_error(call: Call, index: int, expected: str, value: object) -> FormulaError:
    offset = call.args[index].offset
    return FormulaError(
        f"'{call.name}' needs {expected}, got {_kind(value)} at position {offset}", offset
    )


def _fn_if(ev: _Evaluator, call: Call) -> object:
    condition = ev.evaluate(call.args[0])
    if condition is not None and not isinstance(condition, bool):
        raise _argument_error(call, 0, "a true/false condition", condition)
    return ev.evaluate(call.args[1] if condition else call.args[2])


def _fn_coalesce(ev: _Evaluator, call: Call) -> object:
    for arg in call.args:
        value = ev.evaluate(arg)
        if value is not None:
            return value
    return None


def _fn_round(ev: _Evaluator, call: Call) -> object:
    values = ev.values(call)
    number = values[0]
    places = values[1] if len(values) > 1 else 0
    if number is None or places is None:
        return None
    if not isinstance(places, int) or isinstance(places, bool):
        raise _argument_error(call, 1, "a whole number of decimal places", places)
    if not -DECIMAL_PRECISION <= places <= DECIMAL_PRECISION:
        raise FormulaError(
            f"'round' takes between {-DECIMAL_PRECISION} and {DECIMAL_PRECISION} decimal "
            f"places, got {places} at position {call.args[1].offset}",
            call.args[1].offset,
        )
    if not isinstance(number, int | Decimal) or isinstance(number, bool):
        raise _argument_error(call, 0, "a number", number)
    if isinstance(number, int) and places >= 0:
        return number
    try:
        rounded = Decimal(number).quantize(
            Decimal(1).scaleb(-places), rounding=decimal.ROUND_HALF_UP, context=ev.context
        )
        if places < 0:
            rounded = rounded.quantize(Decimal(1), context=ev.context)
    except decimal.DecimalException:
        raise FormulaError(
            f"'round' cannot round a number this large at position {call.offset}", call.offset
        ) from None
    return int(rounded) if isinstance(number, int) else rounded


def _fn_abs(ev: _Evaluator, call: Call) -> object:
    value = ev.evaluate(call.args[0])
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value)
    if isinstance(value, Decimal):
        return ev.context.abs(value)
    raise _argument_error(call, 0, "a number", value)


def _extreme(pick: Callable[..., object]) -> Callable[[_Evaluator, Call], object]:
    def function(ev: _Evaluator, call: Call) -> object:
        values = ev.values(call)
        if any(value is None for value in values):
            return None
        kind = _kind(values[0])
        for index, value in enumerate(values):
            if _kind(value) == "true/false" or _kind(value) != kind:
                expected = "numbers, texts, dates or date-times of one kind"
                raise _argument_error(call, index, expected, value)
        try:
            result = pick(values)
        except TypeError:
            raise FormulaError(
                f"'{call.name}' cannot compare date-times with and without a time zone "
                f"at position {call.offset}",
                call.offset,
            ) from None
        if isinstance(result, int) and any(isinstance(value, Decimal) for value in values):
            return Decimal(result)
        return result

    return function


def _text_function(transform: Callable[[str], object]) -> Callable[[_Evaluator, Call], object]:
    def function(ev: _Evaluator, call: Call) -> object:
        value = ev.evaluate(call.args[0])
        if value is None:
            return None
        if not isinstance(value, str):
            raise _argument_error(call, 0, "text", value)
        result = transform(value)
        if isinstance(result, str):
            _check_text_length(len(result), call)
        return result

    return function


def _fn_concat(ev: _Evaluator, call: Call) -> object:
    parts: list[str] = []
    length = 0
    for arg in call.args:
        part = _to_text(ev.evaluate(arg), arg)
        length += len(part)
        _check_text_length(length, call)
        parts.append(part)
    return "".join(parts)


def _fn_today(ev: _Evaluator, call: Call) -> object:
    return ev.today


def _fn_now(ev: _Evaluator, call: Call) -> object:
    return ev.now


def _as_date(call: Call, index: int, value: object) -> datetime.date:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    raise _argument_error(call, index, "a date", value)


def _fn_days_between(ev: _Evaluator, call: Call) -> object:
    start, end = ev.values(call)
    if start is None or end is None:
        return None
    return (_as_date(call, 1, end) - _as_date(call, 0, start)).days


def _date_part(attribute: str) -> Callable[[_Evaluator, Call], object]:
    def function(ev: _Evaluator, call: Call) -> object:
        value = ev.evaluate(call.args[0])
        if value is None:
            return None
        return getattr(_as_date(call, 0, value), attribute)

    return function


def _build_functions() -> Mapping[str, _Function]:
    """The read-only registry of functions formulas may call."""
    return MappingProxyType(
        {
            "if": _Function(3, 3, _fn_if),
            "coalesce": _Function(1, None, _fn_coalesce),
            "round": _Function(1, 2, _fn_round),
            "abs": _Function(1, 1, _fn_abs),
            "min": _Function(1, None, _extreme(min)),
            "max": _Function(1, None, _extreme(max)),
            "upper": _Function(1, 1, _text_function(str.upper)),
            "lower": _Function(1, 1, _text_function(str.lower)),
            "trim": _Function(1, 1, _text_function(str.strip)),
            "len": _Function(1, 1, _text_function(len)),
            "concat": _Function(1, None, _fn_concat),
            "today": _Function(0, 0, _fn_today),
            "now": _Function(0, 0, _fn_now),
            "days_between": _Function(2, 2, _fn_days_between),
            "year": _Function(1, 1, _date_part("year")),
            "month": _Function(1, 1, _date_part("month")),
            "day": _Function(1, 1, _date_part("day")),
        }
    )


_FUNCTIONS: Final = _build_functions()
