"""Safe expression language for branching, edit checks, derived fields and eligibility.

The syntax is REDCap's "logic syntax"; the text is tokenized and parsed by hand into an immutable
AST and interpreted node by node. Nothing is ever handed to Python's ``eval``/``exec``/``compile``:
only the operators and functions listed here exist, and any other name is a parse error.

Syntax
------
- field references ``[field]``, cross-visit ``[visit][field]``, checkbox option ``[field(code)]``,
  repeat instance ``[field][2]`` and ``[visit][field(code)][2]`` (the bracket groups must touch);
- literals: numbers ``12``, ``1.5``, ``.5``; strings in ``'…'`` or ``"…"`` (no escapes: a string
  ends at the next quote of the same kind); ``true``, ``false``, ``null``;
- operators, lowest precedence first: ``or``; ``and``; ``not``; comparisons
  ``= == <> != < > <= >=`` (not chainable); ``+ -``; ``* /``; unary ``- +``; ``^`` (power, right
  associative, binds tighter than unary minus: ``-2^2`` is -4); parentheses;
- keywords and function names are case-insensitive; ``if(cond, a, b)`` is the only conditional.

Functions (arity checked at parse time): ``if(c, a, b)``; ``datediff(a, b, unit[, format[,
signed]])`` with unit ``'y'`` (days/365.2425), ``'M'`` (days/30.44), ``'d'``, ``'h'``, ``'m'``,
``'s'``, the text ``'today'`` for the evaluation day, format ignored, result ``b - a`` (signed
unless ``signed`` is given and false, then absolute); ``sum mean median stdev min max`` (any number
of arguments, blanks and non-numbers ignored, blank when nothing is left; stdev is the sample
standard deviation); ``round roundup rounddown(x[, decimals])`` (half away from zero, away from
zero, toward zero); ``sqrt abs exp mod(a, b)`` and ``log(x[, base])`` (natural by default);
``year month day(date)``; ``today()`` (ISO date text); ``isblank isblankormissingcode
hasmissingcode isnumber isinteger``; ``contains starts_with ends_with`` (case-insensitive);
``left(s, n) right(s, n) mid(s, start, n)`` (start is 1-based) ``length concat lower upper trim``;
``coalesce(...)`` (first non-blank argument).

Values and semantics
--------------------
A value is blank (``None``), a boolean, a number or a text. A stored value becomes: absent key,
``None``, ``''``, a missing-code dict ``{"missing": code}`` or an empty list → blank; a list of
checkbox codes → the codes joined by commas; numbers stay numbers (NaN/inf → blank); a date →
ISO text. Results are normalised: integral numbers come back as ``int``, blank text as ``None``.

- Equality (``=``, ``<>``) is loose like REDCap: numeric when both sides look numeric (``'1'``
  equals ``1`` and ``1.0``), otherwise text comparison (case-sensitive); booleans count as 1/0.
  Blank equals only blank, so ``[x] = ''`` is true exactly when ``[x]`` is blank and
  ``[x] <> ''`` exactly when it is not; ``[x] <> 5`` is true for a blank ``[x]``.
- Ordering (``< > <= >=``) is numeric when both sides look numeric, else by text (ISO dates
  compare correctly as text). When either side is blank the result is blank, which counts as
  false wherever a truth value is needed (branching, ``if``, eligibility) and does not fire an
  edit check (ecrf/model.py: a blank condition does not fire).
- ``and``/``or``/``not`` use three-valued logic: a blank operand behaves as false for the final
  truth value (``blank and x`` is never true, ``blank or x`` is true only when x is), but
  ``true and blank``, ``false or blank`` and ``not blank`` stay blank, so a check over missing
  inputs stays silent.
- Arithmetic on a blank or non-numeric operand yields blank; division or ``mod`` by zero, overflow,
  the square root or logarithm of a negative number and similar yield blank, never an exception.
- Checkbox ``[f(code)]`` is ``'1'`` when code is in the stored list, else ``'0'``; blank when the
  field was never asked (absent, ``None`` or a missing code).
- ``[f][n]`` reads instance n from a stored mapping ``{instance: value}`` (int or text keys);
  ``[visit][f]`` reads ``visits[visit][f]``; an unknown visit or instance is blank.
- Dates and datetimes are ISO texts (``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM[:SS[.fff]][offset]``,
  a space instead of ``T`` is accepted); a datetime without offset is taken as UTC. Text that is
  not a valid date makes ``datediff``/``year``/… blank.
- Truthiness (``truthy``): blank, false, 0 and numeric text equal to 0 are false; any other
  number or non-empty text is true.

``ecrf/static/expressions.js`` implements the same grammar and semantics for the browser;
``tests/ecrf/expression_cases.json`` holds the shared cases both must agree on.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "FUNCTIONS",
    "BinaryNode",
    "CallNode",
    "Expression",
    "ExpressionError",
    "LiteralNode",
    "Node",
    "RefNode",
    "Reference",
    "UnaryNode",
    "Value",
    "evaluate",
    "parse",
    "truthy",
]

Value = None | bool | int | float | str

MAX_NESTING = 32  # parentheses, unary operators and ``not`` nested in one another
MAX_DEPTH = 100  # depth of the finished syntax tree (long operator chains)
MAX_INSTANCE = 999_999
_SAFE_INTEGER = 2**53

DATEDIFF_UNITS: dict[str, float] = {
    "y": 86400 * 365.2425,
    "M": 86400 * 30.44,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
}

# name -> (minimum, maximum or None for any number of arguments)
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "if": (3, 3),
    "datediff": (3, 5),
    "sum": (1, None),
    "mean": (1, None),
    "median": (1, None),
    "stdev": (1, None),
    "min": (1, None),
    "max": (1, None),
    "round": (1, 2),
    "roundup": (1, 2),
    "rounddown": (1, 2),
    "sqrt": (1, 1),
    "abs": (1, 1),
    "log": (1, 2),
    "exp": (1, 1),
    "mod": (2, 2),
    "year": (1, 1),
    "month": (1, 1),
    "day": (1, 1),
    "today": (0, 0),
    "isblank": (1, 1),
    "isblankormissingcode": (1, 1),
    "hasmissingcode": (1, 1),
    "isnumber": (1, 1),
    "isinteger": (1, 1),
    "contains": (2, 2),
    "starts_with": (2, 2),
    "ends_with": (2, 2),
    "left": (2, 2),
    "right": (2, 2),
    "mid": (3, 3),
    "length": (1, 1),
    "concat": (1, None),
    "lower": (1, 1),
    "upper": (1, 1),
    "trim": (1, 1),
    "coalesce": (1, None),
}

_KEYWORDS = {"and", "or", "not", "true", "false", "null"}
_COMPARISONS = {"=", "==", "<>", "!=", "<", ">", "<=", ">="}


class ExpressionError(ValueError):
    """An expression that cannot be parsed (or evaluated), with the 0-based offset of the fault."""

    def __init__(self, message: str, expression: str, position: int) -> None:
        super().__init__(message, expression, position)
        self.message = message
        self.expression = expression
        self.position = position

    def __str__(self) -> str:
        return f"{self.message} at column {self.position + 1}"


@dataclass(frozen=True)
class Reference:
    """A field reference: ``[visit][field(option)][instance]`` with the optional parts None."""

    field: str
    visit: str | None = None
    option: str | None = None
    instance: int | None = None

    @property
    def text(self) -> str:
        """Return the reference in expression syntax, e.g. ``[visit][field(code)][2]``."""
        visit = f"[{self.visit}]" if self.visit is not None else ""
        option = f"({self.option})" if self.option is not None else ""
        instance = f"[{self.instance}]" if self.instance is not None else ""
        return f"{visit}[{self.field}{option}]{instance}"


@dataclass(frozen=True, slots=True)
class LiteralNode:
    value: Value
    position: int


@dataclass(frozen=True, slots=True)
class RefNode:
    reference: Reference
    position: int


@dataclass(frozen=True, slots=True)
class UnaryNode:
    op: str  # "-", "+" or "not"
    operand: Node
    position: int


@dataclass(frozen=True, slots=True)
class BinaryNode:
    op: str  # "or", "and", a comparison, "+", "-", "*", "/", "^"
    left: Node
    right: Node
    position: int


@dataclass(frozen=True, slots=True)
class CallNode:
    name: str  # lower case
    args: tuple[Node, ...]
    position: int


Node = LiteralNode | RefNode | UnaryNode | BinaryNode | CallNode


@dataclass(frozen=True)
class Expression:
    """A parsed expression: its source text, syntax tree and every field it references."""

    text: str
    ast: Node
    references: frozenset[Reference]

    @property
    def fields(self) -> frozenset[str]:
        """Return the ids of all referenced fields (of this and of other visits)."""
        return frozenset(ref.field for ref in self.references)


# --------------------------------------------------------------------------- tokenizer

_NUMBER_TOKEN = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+", re.ASCII)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_NAME_GROUP = re.compile(r"\[([A-Za-z_][A-Za-z0-9_-]*)(?:\(([A-Za-z0-9_.-]+)\))?\]", re.ASCII)
_INSTANCE_GROUP = re.compile(r"\[([0-9]+)\]", re.ASCII)
_TWO_CHAR_OPS = ("<>", "<=", ">=", "!=", "==")
_ONE_CHAR_OPS = "=<>+-*/^(),"
_WHITESPACE = " \t\r\n"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # num, str, ref, ident, op, end
    text: str
    position: int
    value: object = None


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch in _WHITESPACE:
            pos += 1
            continue
        start = pos
        if ch == "[":
            reference, pos = _scan_reference(text, pos)
            tokens.append(_Token("ref", text[start:pos], start, reference))
            continue
        if ch in "'\"":
            end = text.find(ch, pos + 1)
            if end < 0:
                raise ExpressionError("unterminated string", text, start)
            tokens.append(_Token("str", text[start : end + 1], start, text[pos + 1 : end]))
            pos = end + 1
            continue
        match = _NUMBER_TOKEN.match(text, pos)
        if match:
            number = float(match.group())
            if not math.isfinite(number):
                raise ExpressionError("number out of range", text, start)
            tokens.append(_Token("num", match.group(), start, _normalise_number(number)))
            pos = match.end()
            continue
        match = _IDENT.match(text, pos)
        if match:
            tokens.append(_Token("ident", match.group(), start))
            pos = match.end()
            continue
        if text.startswith(_TWO_CHAR_OPS, pos):
            tokens.append(_Token("op", text[pos : pos + 2], start))
            pos += 2
            continue
        if ch in _ONE_CHAR_OPS:
            tokens.append(_Token("op", ch, start))
            pos += 1
            continue
        raise ExpressionError(f"unexpected character {ch!r}", text, start)
    tokens.append(_Token("end", "", n))
    return tokens


def _scan_reference(text: str, pos: int) -> tuple[Reference, int]:
    names: list[tuple[str, str | None, int]] = []
    instance: int | None = None
    while pos < len(text) and text[pos] == "[":
        if instance is not None:
            raise ExpressionError("nothing may follow an instance number", text, pos)
        named = _NAME_GROUP.match(text, pos)
        if named:
            if len(names) == 2:
                raise ExpressionError("a reference has at most [visit][field]", text, pos)
            names.append((named.group(1), named.group(2), pos))
            pos = named.end()
            continue
        numbered = _INSTANCE_GROUP.match(text, pos)
        if numbered and names:
            digits = numbered.group(1)
            if len(digits) > 6 or not 1 <= int(digits) <= MAX_INSTANCE:
                raise ExpressionError("instance number out of range", text, pos)
            instance = int(digits)
            pos = numbered.end()
            continue
        raise ExpressionError("malformed field reference", text, pos)
    if len(names) == 2:
        (visit, visit_option, visit_pos), (field, option, _) = names
        if visit_option is not None:
            raise ExpressionError("a visit name cannot carry a checkbox code", text, visit_pos)
        return Reference(field=field, visit=visit, option=option, instance=instance), pos
    field, option, _ = names[0]
    return Reference(field=field, option=option, instance=instance), pos


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.nesting = 0
        self.references: set[Reference] = set()

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def _advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def _error(self, message: str, token: _Token | None = None) -> ExpressionError:
        return ExpressionError(message, self.text, (token or self.current).position)

    def _is_keyword(self, word: str) -> bool:
        token = self.current
        return token.kind == "ident" and token.text.lower() == word

    def _is_op(self, *ops: str) -> bool:
        return self.current.kind == "op" and self.current.text in ops

    def _enter(self, token: _Token) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self._error("expression nested too deeply", token)

    def parse(self) -> Node:
        if self.current.kind == "end":
            raise self._error("empty expression")
        node = self._parse_or()
        if self.current.kind != "end":
            raise self._error(f"unexpected {self._describe(self.current)}")
        return node

    def _describe(self, token: _Token) -> str:
        if token.kind == "end":
            return "end of expression"
        if token.kind == "ref":
            return f"field reference {token.text}"
        return repr(token.text)

    def _parse_or(self) -> Node:
        node = self._parse_and()
        while self._is_keyword("or"):
            token = self._advance()
            node = BinaryNode("or", node, self._parse_and(), token.position)
        return node

    def _parse_and(self) -> Node:
        node = self._parse_not()
        while self._is_keyword("and"):
            token = self._advance()
            node = BinaryNode("and", node, self._parse_not(), token.position)
        return node

    def _parse_not(self) -> Node:
        if self._is_keyword("not"):
            token = self._advance()
            self._enter(token)
            try:
                return UnaryNode("not", self._parse_not(), token.position)
            finally:
                self.nesting -= 1
        return self._parse_comparison()

    def _parse_comparison(self) -> Node:
        node = self._parse_additive()
        if self.current.kind == "op" and self.current.text in _COMPARISONS:
            token = self._advance()
            op = {"==": "=", "!=": "<>"}.get(token.text, token.text)
            node = BinaryNode(op, node, self._parse_additive(), token.position)
            if self.current.kind == "op" and self.current.text in _COMPARISONS:
                raise self._error("comparisons cannot be chained; use 'and'")
        return node

    def _parse_additive(self) -> Node:
        node = self._parse_multiplicative()
        while self._is_op("+", "-"):
            token = self._advance()
            node = BinaryNode(token.text, node, self._parse_multiplicative(), token.position)
        return node

    def _parse_multiplicative(self) -> Node:
        node = self._parse_unary()
        while self._is_op("*", "/"):
            token = self._advance()
            node = BinaryNode(token.text, node, self._parse_unary(), token.position)
        return node

    def _parse_unary(self) -> Node:
        if self._is_op("-", "+"):
            token = self._advance()
            self._enter(token)
            try:
                return UnaryNode(token.text, self._parse_unary(), token.position)
            finally:
                self.nesting -= 1
        return self._parse_power()

    def _parse_power(self) -> Node:
        node = self._parse_primary()
        if self._is_op("^"):
            token = self._advance()
            node = BinaryNode("^", node, self._parse_unary(), token.position)
        return node

    def _parse_primary(self) -> Node:
        token = self.current
        if token.kind == "num":
            self._advance()
            return LiteralNode(_as_value(token.value), token.position)
        if token.kind == "str":
            self._advance()
            return LiteralNode(_as_value(token.value) or None, token.position)
        if token.kind == "ref":
            self._advance()
            assert isinstance(token.value, Reference)
            self.references.add(token.value)
            return RefNode(token.value, token.position)
        if token.kind == "op" and token.text == "(":
            self._advance()
            self._enter(token)
            try:
                node = self._parse_or()
            finally:
                self.nesting -= 1
            self._expect_close(token)
            return node
        if token.kind == "ident":
            return self._parse_name()
        raise self._error(f"unexpected {self._describe(token)}")

    def _expect_close(self, opening: _Token) -> None:
        if not self._is_op(")"):
            if self.current.kind == "end":
                raise self._error("missing ')'", opening)
            raise self._error(f"expected ')' but found {self._describe(self.current)}")
        self._advance()

    def _parse_name(self) -> Node:
        token = self._advance()
        word = token.text.lower()
        if word in ("true", "false"):
            return LiteralNode(word == "true", token.position)
        if word == "null":
            return LiteralNode(None, token.position)
        if word in _KEYWORDS:
            raise self._error(f"unexpected {word!r}", token)
        if not self._is_op("("):
            raise self._error(
                f"unknown name {token.text!r} (field references need [brackets])", token
            )
        if word not in FUNCTIONS:
            raise self._error(f"unknown function {token.text!r}", token)
        opening = self._advance()
        args: list[Node] = []
        self._enter(opening)
        try:
            if not self._is_op(")"):
                args.append(self._parse_or())
                while self._is_op(","):
                    self._advance()
                    args.append(self._parse_or())
        finally:
            self.nesting -= 1
        self._expect_close(opening)
        low, high = FUNCTIONS[word]
        if len(args) < low or (high is not None and len(args) > high):
            if high is None:
                expected = f"{low} or more"
            else:
                expected = str(low) if low == high else f"{low} to {high}"
            raise self._error(f"{word}() takes {expected} argument(s), got {len(args)}", token)
        if word == "datediff":
            unit = args[2]
            if isinstance(unit, LiteralNode) and unit.value not in DATEDIFF_UNITS:
                raise ExpressionError(
                    "datediff unit must be one of 'y', 'M', 'd', 'h', 'm', 's'",
                    self.text,
                    unit.position,
                )
        return CallNode(word, tuple(args), token.position)


def _children(node: Node) -> Sequence[Node]:
    if isinstance(node, UnaryNode):
        return (node.operand,)
    if isinstance(node, BinaryNode):
        return (node.left, node.right)
    if isinstance(node, CallNode):
        return node.args
    return ()


def _check_depth(node: Node, text: str) -> None:
    stack: list[tuple[Node, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExpressionError("expression too long or deeply nested", text, current.position)
        stack.extend((child, depth + 1) for child in _children(current))


def parse(text: str) -> Expression:
    """Parse REDCap-style logic into an Expression; raise ExpressionError for any bad input."""
    if not isinstance(text, str):
        raise ExpressionError("an expression must be text", repr(text), 0)
    return _parse_text(text)


@functools.lru_cache(maxsize=2048)
def _parse_text(text: str) -> Expression:
    parser = _Parser(text)
    ast = parser.parse()
    _check_depth(ast, text)
    return Expression(text=text, ast=ast, references=frozenset(parser.references))


# --------------------------------------------------------------------------- values

_NUMERIC = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_DATE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?",
    re.ASCII,
)


def _normalise_number(number: float) -> int | float | None:
    if not math.isfinite(number):
        return None
    if number.is_integer() and abs(number) <= _SAFE_INTEGER:
        return int(number)
    return number


def _as_value(raw: object) -> Value:
    if raw is None or isinstance(raw, bool | str):
        return raw
    if isinstance(raw, int | float):
        return _normalise_number(float(raw))
    return None


def _from_stored(raw: object) -> Value:
    """Convert a stored value (ecrf/model.py conventions) into an expression value."""
    if raw is None or isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        return raw or None
    if isinstance(raw, int | float):
        try:
            return _normalise_number(float(raw))
        except OverflowError:
            return None
    if isinstance(raw, list | tuple):
        codes = [_text(_from_stored(item)) for item in raw if isinstance(item, str | int | float)]
        return ",".join(code for code in codes if code) or None
    if isinstance(raw, datetime.date):  # datetime.datetime is a subclass
        return raw.isoformat()
    return None


def _number(value: Value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    if _NUMERIC.fullmatch(value):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _format_number(number: float) -> str:
    """Format a number as JavaScript's Number.prototype.toString does (for parity)."""
    if number == 0:
        return "0"
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    sign = "-" if number < 0 else ""
    mantissa, _, exp_text = repr(abs(number)).partition("e")
    exponent = int(exp_text) if exp_text else 0
    whole, _, fraction = mantissa.partition(".")
    all_digits = (whole + fraction).lstrip("0")
    stripped = all_digits.rstrip("0")
    k = len(stripped)
    last_exponent = exponent - len(fraction) + (len(all_digits) - k)
    n = k + last_exponent
    if k <= n <= 21:
        body = stripped + "0" * (n - k)
    elif 0 < n <= 21:
        body = stripped[:n] + "." + stripped[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + stripped
    else:
        e = n - 1
        head = stripped if k == 1 else stripped[0] + "." + stripped[1:]
        body = f"{head}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + body


def _text(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return _format_number(float(value))
    return value


def _text_or_blank(text: str) -> str | None:
    return text or None


def truthy(value: object) -> bool:
    """Return the truth value used by branching, ``if`` and eligibility (blank is false)."""
    if isinstance(value, Mapping | list | tuple):
        value = _from_stored(value)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return math.isfinite(float(value)) and value != 0
    if isinstance(value, str):
        number = _number(value)
        return number != 0 if number is not None else value != ""
    return False


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-be", "surrogatepass")


def _equal(left: Value, right: Value) -> bool:
    if left is None or right is None:
        return left is None and right is None
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return a == b
    return _text(left) == _text(right)


def _compare(op: str, left: Value, right: Value) -> bool | None:
    if op == "=":
        return _equal(left, right)
    if op == "<>":
        return not _equal(left, right)
    if left is None or right is None:
        return None
    a, b = _number(left), _number(right)
    x: float | bytes
    y: float | bytes
    if a is not None and b is not None:
        x, y = a, b
    else:
        x, y = _utf16(_text(left)), _utf16(_text(right))
    if op == "<":
        return x < y  # type: ignore[operator]
    if op == ">":
        return x > y  # type: ignore[operator]
    if op == "<=":
        return x <= y  # type: ignore[operator]
    return x >= y  # type: ignore[operator]


def _arithmetic(op: str, left: Value, right: Value) -> Value:
    a, b = _number(left), _number(right)
    if a is None or b is None:
        return None
    try:
        if op == "+":
            result = a + b
        elif op == "-":
            result = a - b
        elif op == "*":
            result = a * b
        elif op == "/":
            if b == 0:
                return None
            result = a / b
        else:
            result = math.pow(a, b)
    except (OverflowError, ValueError, ZeroDivisionError):
        return None
    return _normalise_number(result)


# --------------------------------------------------------------------------- dates


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Return days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= 1 if month <= 2 else 0
    era = (year if year >= 0 else year - 399) // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _date_parts(value: Value) -> tuple[int, int, int] | None:
    match = _DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    year, month, day = int(match.group(1)), int(match.group(2)), int(match.group(3))
    if not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month):
        return None
    return year, month, day


def _epoch_seconds(value: Value, today: datetime.date) -> float | None:
    if isinstance(value, str) and value.lower() == "today":
        return _days_from_civil(today.year, today.month, today.day) * 86400.0
    parts = _date_parts(value)
    if parts is None:
        return None
    assert isinstance(value, str)
    match = _DATE.fullmatch(value)
    assert match is not None
    hour = int(match.group(4) or 0)
    minute = int(match.group(5) or 0)
    second = int(match.group(6) or 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    seconds = _days_from_civil(*parts) * 86400.0 + hour * 3600 + minute * 60 + second
    if match.group(7):
        seconds += float("0." + match.group(7))
    offset = match.group(8)
    if offset and offset != "Z":
        digits = offset[1:].replace(":", "")
        off_hours, off_minutes = int(digits[:2]), int(digits[2:])
        if off_hours > 23 or off_minutes > 59:
            return None
        shift = off_hours * 3600 + off_minutes * 60
        seconds -= shift if offset[0] == "+" else -shift
    return seconds


# --------------------------------------------------------------------------- evaluator


@dataclass(frozen=True, slots=True)
class _Context:
    values: Mapping[str, object]
    visits: Mapping[str, Mapping[str, object]]
    today: datetime.date


def _raw_value(ref: Reference, ctx: _Context) -> object:
    source: object = ctx.values if ref.visit is None else ctx.visits.get(ref.visit)
    if not isinstance(source, Mapping):
        return None
    raw = source.get(ref.field)
    if ref.instance is not None:
        if not isinstance(raw, Mapping) or "missing" in raw:
            return None
        raw = raw.get(ref.instance, raw.get(str(ref.instance)))
    return raw


def _is_missing_code(raw: object) -> bool:
    return isinstance(raw, Mapping) and "missing" in raw


def _reference_value(ref: Reference, ctx: _Context) -> Value:
    raw = _raw_value(ref, ctx)
    if ref.option is None:
        return _from_stored(raw)
    if raw is None or raw == "" or _is_missing_code(raw):
        return None
    if isinstance(raw, list | tuple):
        codes = {_text(_from_stored(item)) for item in raw if isinstance(item, str | int | float)}
        return "1" if ref.option in codes else "0"
    stored = _from_stored(raw)
    if stored is None:
        return None
    return "1" if _text(stored) == ref.option else "0"


def _eval(node: Node, ctx: _Context) -> Value:
    if isinstance(node, LiteralNode):
        return node.value
    if isinstance(node, RefNode):
        return _reference_value(node.reference, ctx)
    if isinstance(node, UnaryNode):
        operand = _eval(node.operand, ctx)
        if node.op == "not":
            return None if operand is None else not truthy(operand)
        number = _number(operand)
        if number is None:
            return None
        return _normalise_number(-number if node.op == "-" else number)
    if isinstance(node, BinaryNode):
        return _eval_binary(node, ctx)
    return _call(node, ctx)


def _eval_binary(node: BinaryNode, ctx: _Context) -> Value:
    if node.op == "and":
        left = _eval(node.left, ctx)
        if left is not None and not truthy(left):
            return False
        right = _eval(node.right, ctx)
        if right is not None and not truthy(right):
            return False
        return None if left is None or right is None else True
    if node.op == "or":
        left = _eval(node.left, ctx)
        if truthy(left):
            return True
        right = _eval(node.right, ctx)
        if truthy(right):
            return True
        return None if left is None or right is None else False
    left = _eval(node.left, ctx)
    right = _eval(node.right, ctx)
    if node.op in ("=", "<>", "<", ">", "<=", ">="):
        return _compare(node.op, left, right)
    return _arithmetic(node.op, left, right)


def _numbers(values: Sequence[Value]) -> list[float]:
    return [n for n in (_number(v) for v in values) if n is not None]


def _round(x: float, decimals: float, mode: str) -> Value:
    places = int(decimals)  # truncates toward zero, as JavaScript's Math.trunc
    if places > 15:
        return _normalise_number(x)
    if places < -15:
        return 0
    factor = math.pow(10, abs(places))
    scaled = abs(x) * factor if places >= 0 else abs(x) / factor
    if not math.isfinite(scaled):
        return _normalise_number(x)
    if mode == "round":
        rounded = math.floor(scaled + 0.5)
    elif mode == "up":
        rounded = math.ceil(scaled)
    else:
        rounded = math.floor(scaled)
    result = rounded / factor if places >= 0 else rounded * factor
    return _normalise_number(-result if x < 0 else result)


def _aggregate(name: str, numbers: list[float]) -> Value:
    if not numbers:
        return None
    total = 0.0
    for number in numbers:
        total += number
    if name == "sum":
        return _normalise_number(total)
    if name == "min":
        return _normalise_number(min(numbers))
    if name == "max":
        return _normalise_number(max(numbers))
    mean = total / len(numbers)
    if name == "mean":
        return _normalise_number(mean)
    if name == "median":
        ordered = sorted(numbers)
        middle = len(ordered) // 2
        if len(ordered) % 2:
            return _normalise_number(ordered[middle])
        return _normalise_number((ordered[middle - 1] + ordered[middle]) / 2)
    if len(numbers) < 2:
        return None
    squares = 0.0
    for number in numbers:
        squares += (number - mean) * (number - mean)
    return _normalise_number(math.sqrt(squares / (len(numbers) - 1)))


def _datediff(args: Sequence[Value], ctx: _Context) -> Value:
    start = _epoch_seconds(args[0], ctx.today)
    end = _epoch_seconds(args[1], ctx.today)
    unit = args[2]
    if start is None or end is None or not isinstance(unit, str) or unit not in DATEDIFF_UNITS:
        return None
    result = (end - start) / DATEDIFF_UNITS[unit]
    if len(args) == 5 and args[4] is not None and not truthy(args[4]):
        result = abs(result)
    return _normalise_number(result)


def _text_function(name: str, args: Sequence[Value]) -> Value:
    text = _text(args[0])
    if name in ("contains", "starts_with", "ends_with"):
        haystack, needle = text.lower(), _text(args[1]).lower()
        if name == "contains":
            return needle in haystack
        return haystack.startswith(needle) if name == "starts_with" else haystack.endswith(needle)
    if name == "length":
        return len(text)
    if name == "lower":
        return _text_or_blank(text.lower())
    if name == "upper":
        return _text_or_blank(text.upper())
    if name == "trim":
        return _text_or_blank(text.strip(" \t\r\n"))
    count_number = _number(args[1]) if name in ("left", "right") else _number(args[2])
    if count_number is None:
        return None
    count = max(int(count_number), 0)
    chars = list(text)  # code points, as Array.from() in JavaScript
    if name == "left":
        return _text_or_blank("".join(chars[:count]))
    if name == "right":
        return _text_or_blank("".join(chars[max(len(chars) - count, 0) :] if count else []))
    start_number = _number(args[1])
    if start_number is None:
        return None
    start = max(int(start_number), 1) - 1
    return _text_or_blank("".join(chars[start : start + count]))


def _math_function(name: str, args: Sequence[Value]) -> Value:
    x = _number(args[0])
    if x is None:
        return None
    try:
        if name == "sqrt":
            return None if x < 0 else _normalise_number(math.sqrt(x))
        if name == "abs":
            return _normalise_number(abs(x))
        if name == "exp":
            return _normalise_number(math.exp(x))
        if name == "log":
            if x <= 0:
                return None
            if len(args) == 1:
                return _normalise_number(math.log(x))
            base = _number(args[1])
            if base is None or base <= 0 or base == 1:
                return None
            return _normalise_number(math.log(x) / math.log(base))
        if name == "mod":
            y = _number(args[1])
            if y is None or y == 0:
                return None
            return _normalise_number(math.fmod(x, y))
    except (OverflowError, ValueError):
        return None
    decimals = _number(args[1]) if len(args) > 1 else 0.0
    if decimals is None:
        return None
    mode = {"round": "round", "roundup": "up", "rounddown": "down"}[name]
    return _round(x, decimals, mode)


_MATH = {"sqrt", "abs", "exp", "log", "mod", "round", "roundup", "rounddown"}
_TEXT = {
    "contains", "starts_with", "ends_with", "length", "lower", "upper", "trim",
    "left", "right", "mid",
}  # fmt: skip


def _call(node: CallNode, ctx: _Context) -> Value:
    name = node.name
    if name == "if":
        condition = _eval(node.args[0], ctx)
        return _eval(node.args[1] if truthy(condition) else node.args[2], ctx)
    if name in ("hasmissingcode", "isblankormissingcode"):
        target = node.args[0]
        is_missing = isinstance(target, RefNode) and _is_missing_code(
            _raw_value(target.reference, ctx)
        )
        if name == "hasmissingcode":
            return is_missing
        return is_missing or _eval(target, ctx) is None
    if name == "today":
        return ctx.today.isoformat()
    args = [_eval(arg, ctx) for arg in node.args]
    handler = _SIMPLE.get(name)
    if handler is not None:
        return handler(args)
    if name == "datediff":
        return _datediff(args, ctx)
    if name in _MATH:
        return _math_function(name, args)
    if name in _TEXT:
        return _text_function(name, args)
    return _aggregate(name, _numbers(args))


def _date_component(index: int) -> Callable[[Sequence[Value]], Value]:
    def component(args: Sequence[Value]) -> Value:
        parts = _date_parts(args[0])
        return None if parts is None else parts[index]

    return component


def _is_integer(args: Sequence[Value]) -> Value:
    number = _number(args[0])
    return number is not None and number.is_integer()


def _coalesce(args: Sequence[Value]) -> Value:
    return next((arg for arg in args if arg is not None), None)


_SIMPLE: dict[str, Callable[[Sequence[Value]], Value]] = {
    "isblank": lambda args: args[0] is None,
    "isnumber": lambda args: _number(args[0]) is not None,
    "isinteger": _is_integer,
    "concat": lambda args: _text_or_blank("".join(_text(arg) for arg in args)),
    "coalesce": _coalesce,
    "year": _date_component(0),
    "month": _date_component(1),
    "day": _date_component(2),
}


def evaluate(
    expr: Expression | str,
    values: Mapping[str, object],
    *,
    visits: Mapping[str, Mapping[str, object]] | None = None,
    today: datetime.date | None = None,
) -> object:
    """Evaluate an expression over stored values; raise only ExpressionError (for bad text).

    ``values`` maps field ids of the current form/participant to stored values, ``visits`` maps
    visit ids to other visits' values, ``today`` is the evaluation day (default: today in UTC).
    The result is None (blank), a bool, an int, a float or a str.
    """
    expression = parse(expr) if isinstance(expr, str) else expr
    if not isinstance(expression, Expression):
        raise ExpressionError("not an expression", repr(expr), 0)
    day = today if today is not None else datetime.datetime.now(datetime.UTC).date()
    context = _Context(
        values=values if isinstance(values, Mapping) else {}, visits=visits or {}, today=day
    )
    return _eval(expression.ast, context)


_KEYABLE = (type(None), bool, int, float, str, datetime.date, datetime.datetime)


class MemoEvaluator:
    """Evaluate one expression over many records (analysis datasets: every subject and visit),
    once per distinct combination of the raw values it references.

    The result of `evaluate` is a function of the referenced raw values and the evaluation day
    only, so a record whose referenced values equal (same types, same values) those of an
    earlier record gets the earlier result: identical by construction, missing values
    included. Records holding a value that cannot be a key (a checkbox list, a missing-code or
    instance mapping) are evaluated directly. ``today`` is fixed when the evaluator is made;
    the memo lives as long as the evaluator."""

    __slots__ = ("_expression", "_memo", "_references", "_today")

    def __init__(self, expr: Expression | str, *, today: datetime.date | None = None) -> None:
        expression = parse(expr) if isinstance(expr, str) else expr
        if not isinstance(expression, Expression):
            raise ExpressionError("not an expression", repr(expr), 0)
        self._expression = expression
        self._references = tuple(sorted(expression.references, key=lambda r: r.text))
        self._today = today if today is not None else datetime.datetime.now(datetime.UTC).date()
        self._memo: dict[tuple[object, ...], Value] = {}

    def __call__(
        self,
        values: Mapping[str, object],
        visits: Mapping[str, Mapping[str, object]] | None = None,
    ) -> Value:
        """Return ``evaluate(expr, values, visits=visits, today=today)``."""
        key: list[object] = []
        for ref in self._references:
            source: object = values if ref.visit is None else (visits or {}).get(ref.visit)
            if ref.instance is not None or not (source is None or isinstance(source, dict)):
                return self._slow(values, visits)  # instances, other mappings: no memo
            raw = None if source is None else source.get(ref.field)  # an unknown visit: blank
            if not isinstance(raw, _KEYABLE):
                return self._slow(values, visits)
            key += (type(raw), raw)
        found = self._memo.get(tuple(key), _MISS)
        if found is _MISS:
            found = self._memo[tuple(key)] = self._slow(values, visits)
        return found  # type: ignore[return-value]

    def _slow(
        self, values: Mapping[str, object], visits: Mapping[str, Mapping[str, object]] | None
    ) -> Value:
        context = _Context(
            values=values if isinstance(values, Mapping) else {}, visits=visits or {},
            today=self._today,
        )
        return _eval(self._expression.ast, context)


_MISS = object()
