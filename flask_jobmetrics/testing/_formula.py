"""A parser for the subset of Airtable's formula language used in ``filterByFormula``.

Tokenizer plus recursive descent; nothing is ever ``eval``-ed. The grammar, loosest
binding first::

    formula    := comparison EOF
    comparison := concat (("=" | "!=" | "<" | ">" | "<=" | ">=") concat)*
    concat     := additive ("&" additive)*
    additive   := term (("+" | "-") term)*
    term       := unary (("*" | "/") unary)*
    unary      := "-" unary | primary
    primary    := NUMBER | STRING | FIELD | NAME "(" args ")" | NAME | "(" comparison ")"

``FIELD`` is ``{Field Name}`` (``\\}`` stands for ``}``, as ``pyairtable.formulas`` writes
it); a bare ``NAME`` not followed by ``(`` is a one-word field name. Strings use single or
double quotes; a backslash makes the next character literal (``\\n``/``\\t`` excepted), the
exact inverse of ``pyairtable.formulas.quoted``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Binary",
    "Call",
    "FieldRef",
    "FormulaSyntaxError",
    "Literal",
    "Negate",
    "Node",
    "field_names",
    "parse_formula",
]

#: Function name -> (minimum, maximum) argument count (``None``: any number).
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "AND": (1, None),
    "OR": (1, None),
    "XOR": (1, None),
    "NOT": (1, 1),
    "IF": (2, 3),
    "TRUE": (0, 0),
    "FALSE": (0, 0),
    "BLANK": (0, 0),
    "RECORD_ID": (0, 0),
    "CREATED_TIME": (0, 0),
    "FIND": (2, 3),
    "SEARCH": (2, 3),
    "LEN": (1, 1),
    "LOWER": (1, 1),
    "UPPER": (1, 1),
    "TRIM": (1, 1),
    "CONCATENATE": (1, None),
    "VALUE": (1, 1),
    "ISERROR": (1, 1),
    "DATETIME_PARSE": (1, 3),
    "IS_BEFORE": (2, 2),
    "IS_AFTER": (2, 2),
}

_COMPARISONS = ("=", "!=", "<", ">", "<=", ">=")
_SINGLE = "=<>&+-*/(),"
_ESCAPES = {"n": "\n", "t": "\t"}


class FormulaSyntaxError(ValueError):
    """The formula cannot be parsed; the message says where and why."""


@dataclass(frozen=True)
class Literal:
    value: str | float | int


@dataclass(frozen=True)
class FieldRef:
    name: str


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Negate:
    operand: Node


Node = Literal | FieldRef | Call | Binary | Negate


@dataclass(frozen=True)
class _Token:
    kind: str  # "num", "str", "field", "name", "op", "eof"
    value: str
    pos: int


def _read_quoted(text: str, start: int, close: str, escapes: bool) -> tuple[str, int]:
    """Read from after the opening delimiter up to ``close``; return (value, next index)."""
    out: list[str] = []
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and (escapes or text[i + 1] == close):
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, nxt) if escapes else nxt)
            i += 2
            continue
        if char == close:
            return "".join(out), i + 1
        out.append(char)
        i += 1
    raise FormulaSyntaxError(f"unterminated {'string' if escapes else 'field reference'} at {start - 1}")


def _read_number(text: str, i: int) -> int:
    seen_dot = False
    while i < len(text) and (text[i].isdigit() or (text[i] == "." and not seen_dot)):
        seen_dot = seen_dot or text[i] == "."
        i += 1
    return i


def tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens; raises ``FormulaSyntaxError``."""
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "'\"":
            value, end = _read_quoted(text, i + 1, char, escapes=True)
            tokens.append(_Token("str", value, i))
            i = end
        elif char == "{":
            value, end = _read_quoted(text, i + 1, "}", escapes=False)
            tokens.append(_Token("field", value, i))
            i = end
        elif char.isdigit() or (char == "." and i + 1 < len(text) and text[i + 1].isdigit()):
            end = _read_number(text, i)
            tokens.append(_Token("num", text[i:end], i))
            i = end
        elif char.isalpha() or char == "_":
            end = i
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            tokens.append(_Token("name", text[i:end], i))
            i = end
        elif text.startswith(("!=", "<=", ">="), i):
            tokens.append(_Token("op", text[i : i + 2], i))
            i += 2
        elif char in _SINGLE:
            tokens.append(_Token("op", char, i))
            i += 1
        else:
            raise FormulaSyntaxError(f"unexpected character {char!r} at {i}")
    tokens.append(_Token("eof", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, *ops: str) -> str | None:
        token = self.peek()
        if token.kind == "op" and token.value in ops:
            self.index += 1
            return token.value
        return None

    def expect(self, op: str) -> None:
        if self.accept(op) is None:
            token = self.peek()
            found = token.value or "end of formula"
            raise FormulaSyntaxError(f"expected {op!r} at {token.pos}, found {found!r}")

    def binary_level(self, ops: tuple[str, ...], parse_operand: Callable[[], Node]) -> Node:
        node = parse_operand()
        while (op := self.accept(*ops)) is not None:
            node = Binary(op, node, parse_operand())
        return node

    def formula(self) -> Node:
        if self.peek().kind == "eof":
            raise FormulaSyntaxError("empty formula")
        node = self.comparison()
        token = self.peek()
        if token.kind != "eof":
            raise FormulaSyntaxError(f"unexpected {token.value!r} at {token.pos}")
        return node

    def comparison(self) -> Node:
        return self.binary_level(_COMPARISONS, self.concat)

    def concat(self) -> Node:
        return self.binary_level(("&",), self.additive)

    def additive(self) -> Node:
        return self.binary_level(("+", "-"), self.term)

    def term(self) -> Node:
        return self.binary_level(("*", "/"), self.unary)

    def unary(self) -> Node:
        if self.accept("-") is not None:
            return Negate(self.unary())
        return self.primary()

    def primary(self) -> Node:
        token = self.advance()
        if token.kind == "num":
            return Literal(float(token.value) if "." in token.value else int(token.value))
        if token.kind == "str":
            return Literal(token.value)
        if token.kind == "field":
            return FieldRef(token.value)
        if token.kind == "name":
            if self.accept("(") is not None:
                return self.call(token)
            return FieldRef(token.value)
        if token.kind == "op" and token.value == "(":
            node = self.comparison()
            self.expect(")")
            return node
        found = token.value or "end of formula"
        raise FormulaSyntaxError(f"unexpected {found!r} at {token.pos}")

    def call(self, name_token: _Token) -> Node:
        name = name_token.value.upper()
        if name not in FUNCTIONS:
            raise FormulaSyntaxError(f"unknown function {name_token.value}() at {name_token.pos}")
        args: list[Node] = []
        if self.accept(")") is None:
            args.append(self.comparison())
            while self.accept(",") is not None:
                args.append(self.comparison())
            self.expect(")")
        low, high = FUNCTIONS[name]
        if len(args) < low or (high is not None and len(args) > high):
            raise FormulaSyntaxError(f"{name}() does not take {len(args)} argument(s)")
        return Call(name, tuple(args))


def parse_formula(text: str) -> Node:
    """Parse ``text`` into a syntax tree; raises ``FormulaSyntaxError``."""
    return _Parser(text).formula()


def field_names(node: Node) -> set[str]:
    """Every field name referenced in ``node``."""
    if isinstance(node, FieldRef):
        return {node.name}
    if isinstance(node, Call):
        return set().union(*(field_names(arg) for arg in node.args))
    if isinstance(node, Binary):
        return field_names(node.left) | field_names(node.right)
    if isinstance(node, Negate):
        return field_names(node.operand)
    return set()
