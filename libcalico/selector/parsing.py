"""Calico's label selector language: tokenizer, parser, AST, evaluation.

Selectors pick endpoints for policy, nodes for IP pools and BGP peers. The
grammar is Calico's (libcalico-go ``lib/selector``)::

    or_expr   := and_expr ( "||" and_expr )*
    and_expr  := operation ( "&&" operation )*
    operation := "!"* ( "(" or_expr ")" | "all()" | "global()" | "has(" label ")"
                      | label ( "==" | "!=" | "contains" | "starts with"
                              | "ends with" ) string
                      | label ( "in" | "not in" ) "{" [ string ( "," string )* ] "}" )

Strings take either quote style. A selector is parsed once into an immutable
AST; ``evaluate(labels)`` walks it. ``str(selector)`` gives the canonical
form Calico prints (``(a == "b" && has(c))``): equal selectors print equal,
which makes the canonical form usable as a cache key. An empty selector means
``all()``, as in Calico.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

MAX_LABEL_LENGTH = 512
MAX_NESTING = 100
"""Deepest nesting of parentheses. Calico's (Go) parser has no bound; ours recurses in
Python, so a hostile selector gets an error instead of a RecursionError."""


class SelectorError(ValueError):
    """The text is not a valid selector. The message says where and why."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"invalid selector {text!r}: {reason}")


class _Tok(enum.Enum):
    EOF = "end of selector"
    LPAREN = "("
    RPAREN = ")"
    LBRACE = "{"
    RBRACE = "}"
    COMMA = ","
    EQ = "=="
    NE = "!="
    NOT = "!"
    AND = "&&"
    OR = "||"
    IN = "in"
    NOT_IN = "not in"
    CONTAINS = "contains"
    STARTS_WITH = "starts with"
    ENDS_WITH = "ends with"
    HAS = "has()"
    ALL = "all()"
    GLOBAL = "global()"
    LABEL = "label"
    STRING = "string"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Tok
    value: str = ""

    def describe(self) -> str:
        if self.kind in (_Tok.LABEL, _Tok.STRING):
            return f"{self.kind.value} {self.value!r}"
        return repr(self.kind.value)


def _is_ident_char(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in "_./-"


def valid_label(label: str) -> bool:
    """True if ``label`` is usable as a label name inside a selector."""
    return 0 < len(label) <= MAX_LABEL_LENGTH and all(_is_ident_char(c) for c in label)


class _Tokenizer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.tokens: list[_Token] = []

    def fail(self, reason: str) -> SelectorError:
        return SelectorError(self.text, f"{reason} at offset {self.pos}")

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def ident(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and _is_ident_char(self.text[self.pos]):
            self.pos += 1
        name = self.text[start : self.pos]
        if not name:
            raise self.fail("expected a label name")
        if len(name) > MAX_LABEL_LENGTH:
            raise self.fail(f"label too long ({len(name)} > {MAX_LABEL_LENGTH} characters)")
        return name

    def word(self, *words: str) -> bool:
        """Consume the words (whitespace between them) if they end at a word boundary."""
        pos = self.pos
        for i, w in enumerate(words):
            if not self.text.startswith(w, pos):
                return False
            pos += len(w)
            if i < len(words) - 1:
                while pos < len(self.text) and self.text[pos] in " \t":
                    pos += 1
        if pos < len(self.text) and _is_ident_char(self.text[pos]):
            return False
        self.pos = pos
        return True

    def call(self, name: str) -> str | None:
        """Consume ``name(`` [ident] ``)``; returns the argument ('' for none)."""
        if not self.text.startswith(name + "(", self.pos):
            return None
        self.pos += len(name) + 1
        self.skip_ws()
        arg = self.ident() if name == "has" else ""
        self.skip_ws()
        if not self.text.startswith(")", self.pos):
            raise self.fail(f"no closing ')' after {name}(")
        self.pos += 1
        return arg

    def run(self) -> list[_Token]:
        simple = {"(": _Tok.LPAREN, ")": _Tok.RPAREN, "{": _Tok.LBRACE, "}": _Tok.RBRACE, ",": _Tok.COMMA}
        while True:
            self.skip_ws()
            if self.pos >= len(self.text):
                self.tokens.append(_Token(_Tok.EOF))
                return self.tokens
            c = self.text[self.pos]
            last = self.tokens[-1].kind if self.tokens else None
            if c in simple:
                self.tokens.append(_Token(simple[c]))
                self.pos += 1
            elif c in "\"'":
                end = self.text.find(c, self.pos + 1)
                if end < 0:
                    raise self.fail("unterminated string")
                self.tokens.append(_Token(_Tok.STRING, self.text[self.pos + 1 : end]))
                self.pos = end + 1
            elif self.text.startswith("==", self.pos):
                self.tokens.append(_Token(_Tok.EQ))
                self.pos += 2
            elif c == "=":
                raise self.fail("expected ==")
            elif self.text.startswith("!=", self.pos):
                self.tokens.append(_Token(_Tok.NE))
                self.pos += 2
            elif c == "!":
                self.tokens.append(_Token(_Tok.NOT))
                self.pos += 1
            elif self.text.startswith("&&", self.pos):
                self.tokens.append(_Token(_Tok.AND))
                self.pos += 2
            elif c == "&":
                raise self.fail("expected &&")
            elif self.text.startswith("||", self.pos):
                self.tokens.append(_Token(_Tok.OR))
                self.pos += 2
            elif c == "|":
                raise self.fail("expected ||")
            elif last is _Tok.LABEL:
                self.tokens.append(_Token(self.operator()))
            else:
                for name, kind in (("has", _Tok.HAS), ("all", _Tok.ALL), ("global", _Tok.GLOBAL)):
                    arg = self.call(name)
                    if arg is not None:
                        self.tokens.append(_Token(kind, arg))
                        break
                else:
                    if not _is_ident_char(c):
                        raise self.fail(f"unexpected character {c!r}")
                    self.tokens.append(_Token(_Tok.LABEL, self.ident()))

    def operator(self) -> _Tok:
        for words, kind in (
            (("contains",), _Tok.CONTAINS),
            (("starts", "with"), _Tok.STARTS_WITH),
            (("ends", "with"), _Tok.ENDS_WITH),
            (("not", "in"), _Tok.NOT_IN),
            (("in",), _Tok.IN),
        ):
            if self.word(*words):
                return kind
        label = self.tokens[-1].value
        raise self.fail(f"expected an operator after label {label!r}")


# --- AST ----------------------------------------------------------------------


def _quote(s: str) -> str:
    q = "'" if '"' in s else '"'
    return f"{q}{s}{q}"


class Node:
    """A node of the selector AST. Subclasses are frozen dataclasses."""

    __slots__ = ()

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        raise NotImplementedError

    def canonical(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class All(Node):
    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True

    def canonical(self) -> str:
        return "all()"


@dataclass(frozen=True, slots=True)
class Global(Node):
    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return True

    def canonical(self) -> str:
        return "global()"


@dataclass(frozen=True, slots=True)
class Has(Node):
    label: str

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self.label in labels

    def canonical(self) -> str:
        return f"has({self.label})"


class StrOp(enum.Enum):
    EQ = " == "
    NE = " != "
    CONTAINS = " contains "
    STARTS_WITH = " starts with "
    ENDS_WITH = " ends with "


@dataclass(frozen=True, slots=True)
class Compare(Node):
    label: str
    op: StrOp
    value: str

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label)
        if actual is None:
            # A missing label never matches, except that "!=" is satisfied by absence.
            return self.op is StrOp.NE
        if self.op is StrOp.EQ:
            return actual == self.value
        if self.op is StrOp.NE:
            return actual != self.value
        if self.op is StrOp.CONTAINS:
            return self.value in actual
        if self.op is StrOp.STARTS_WITH:
            return actual.startswith(self.value)
        return actual.endswith(self.value)

    def canonical(self) -> str:
        return f"{self.label}{self.op.value}{_quote(self.value)}"


@dataclass(frozen=True, slots=True)
class InSet(Node):
    label: str
    values: tuple[str, ...]  # sorted, unique
    negated: bool = False

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label)
        if actual is None:
            return self.negated
        return (actual in self.values) != self.negated

    def canonical(self) -> str:
        op = "not in" if self.negated else "in"
        return f"{self.label} {op} {{{', '.join(_quote(v) for v in self.values)}}}"


@dataclass(frozen=True, slots=True)
class Not(Node):
    operand: Node

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.evaluate(labels)

    def canonical(self) -> str:
        return "!" + self.operand.canonical()


@dataclass(frozen=True, slots=True)
class And(Node):
    operands: tuple[Node, ...]

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return all(o.evaluate(labels) for o in self.operands)

    def canonical(self) -> str:
        return "(" + " && ".join(o.canonical() for o in self.operands) + ")"


@dataclass(frozen=True, slots=True)
class Or(Node):
    operands: tuple[Node, ...]

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return any(o.evaluate(labels) for o in self.operands)

    def canonical(self) -> str:
        return "(" + " || ".join(o.canonical() for o in self.operands) + ")"


# --- parser -------------------------------------------------------------------

_STR_OPS = {
    _Tok.EQ: StrOp.EQ,
    _Tok.NE: StrOp.NE,
    _Tok.CONTAINS: StrOp.CONTAINS,
    _Tok.STARTS_WITH: StrOp.STARTS_WITH,
    _Tok.ENDS_WITH: StrOp.ENDS_WITH,
}


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.toks = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.toks[min(self.i, len(self.toks) - 1)]

    def take(self) -> _Token:
        tok = self.peek()
        self.i += 1
        return tok

    def fail(self, expected: str) -> SelectorError:
        return SelectorError(self.text, f"expected {expected}, found {self.peek().describe()}")

    def parse_or(self) -> Node:
        nodes = [self.parse_and()]
        while self.peek().kind is _Tok.OR:
            self.take()
            nodes.append(self.parse_and())
        return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))

    def parse_and(self) -> Node:
        nodes = [self.parse_operation()]
        while self.peek().kind is _Tok.AND:
            self.take()
            nodes.append(self.parse_operation())
        return nodes[0] if len(nodes) == 1 else And(tuple(nodes))

    def parse_operation(self) -> Node:
        negated = False
        while self.peek().kind is _Tok.NOT:
            self.take()
            negated = not negated
        node = self.parse_term()
        if not negated:
            return node
        # "!(!x)" is x: collapsing it keeps the canonical form a fixed point.
        return node.operand if isinstance(node, Not) else Not(node)

    def parse_term(self) -> Node:
        tok = self.take()
        if tok.kind is _Tok.HAS:
            return Has(tok.value)
        if tok.kind is _Tok.ALL:
            return All()
        if tok.kind is _Tok.GLOBAL:
            return Global()
        if tok.kind is _Tok.LPAREN:
            if self.depth >= MAX_NESTING:
                raise SelectorError(self.text, f"parentheses nested deeper than {MAX_NESTING} levels")
            self.depth += 1
            inner = self.parse_or()
            self.depth -= 1
            if self.peek().kind is not _Tok.RPAREN:
                raise self.fail("')'")
            self.take()
            return inner
        if tok.kind is _Tok.LABEL:
            op = self.take()
            if op.kind in _STR_OPS:
                value = self.take()
                if value.kind is not _Tok.STRING:
                    self.i -= 1
                    raise self.fail("a quoted string")
                return Compare(tok.value, _STR_OPS[op.kind], value.value)
            if op.kind in (_Tok.IN, _Tok.NOT_IN):
                return InSet(tok.value, self.parse_set(), negated=op.kind is _Tok.NOT_IN)
            self.i -= 1
            raise self.fail("an operator")
        self.i -= 1
        raise self.fail("a label, has(), all(), global(), '!' or '('")

    def parse_set(self) -> tuple[str, ...]:
        if self.peek().kind is not _Tok.LBRACE:
            raise self.fail("a set literal '{'")
        self.take()
        values: set[str] = set()
        if self.peek().kind is _Tok.RBRACE:
            self.take()
            return ()
        while True:
            tok = self.take()
            if tok.kind is not _Tok.STRING:
                self.i -= 1
                raise self.fail("a quoted string in the set")
            values.add(tok.value)
            sep = self.take()
            if sep.kind is _Tok.RBRACE:
                return tuple(sorted(values))
            if sep.kind is not _Tok.COMMA:
                self.i -= 1
                raise self.fail("',' or '}'")


class Selector:
    """A parsed selector. Immutable; compare and hash by canonical form."""

    __slots__ = ("root", "_canonical")

    def __init__(self, root: Node) -> None:
        self.root = root
        self._canonical = root.canonical()

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        return self.root.evaluate(labels)

    def __str__(self) -> str:
        return self._canonical

    def __repr__(self) -> str:
        return f"Selector({self._canonical!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selector) and other._canonical == self._canonical

    def __hash__(self) -> int:
        return hash(self._canonical)


def parse(text: str) -> Selector:
    """Parse ``text`` into a :class:`Selector`; raise :class:`SelectorError` if invalid."""
    tokens = _Tokenizer(text).run()
    if tokens[0].kind is _Tok.EOF:
        return Selector(All())
    parser = _Parser(text, tokens)
    root = parser.parse_or()
    if parser.peek().kind is not _Tok.EOF:
        raise parser.fail("'&&', '||' or the end of the selector")
    return Selector(root)


def validate(text: str) -> None:
    """Raise :class:`SelectorError` if ``text`` does not parse."""
    parse(text)
