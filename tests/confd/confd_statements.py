"""BIRD configuration as statements: comments and whitespace dropped, so two configs compare by meaning.

Calico's confd test suite (tests/confd_suite) is compared this way: its BIRD
comments are Calico's prose, ours may differ; the statements, their order and
their values may not. A ``#`` comment runs to the end of the line and a
``/* */`` comment to its close, outside double-quoted strings (BIRD 1.6's
lexer has no escapes inside strings, so a quote always ends one). Each
remaining line has its whitespace runs collapsed to one space; empty lines go.
"""

from __future__ import annotations


def strip_comments(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    quoted = False
    while i < n:
        c = text[i]
        if quoted:
            out.append(c)
            quoted = c != '"'
        elif c == '"':
            out.append(c)
            quoted = True
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def statements(text: str) -> list[str]:
    """The non-empty lines of ``text`` without comments, whitespace runs collapsed."""
    lines = (" ".join(line.split()) for line in strip_comments(text).splitlines())
    return [line for line in lines if line]
