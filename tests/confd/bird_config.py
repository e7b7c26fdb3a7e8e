"""Read back what confd wrote as BIRD 1.6 reads it: the top-level ``protocol`` blocks of a config.

Tests of hostile values count protocols the way BIRD's lexer (``conf/cf-lex.l``)
would see them: ``#`` comments to the end of the line, ``/* */`` comments,
strings ``"[^"\\n]*"`` with no escapes, braces for nesting. A value that broke
out of its slot (a password closing its quotes, an address carrying a newline)
shows up here as a protocol nobody asked for, whether or not BIRD accepts it.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r'#[^\n]*|/\*.*?\*/|"[^"\n]*"|[{}]|[A-Za-z_][A-Za-z_0-9]*|\S', re.S)


def protocols(text: str) -> list[tuple[str, str]]:
    """(type, name) of each top-level ``protocol`` block, name "" when BIRD would choose one."""
    tokens = [t for t in _TOKEN.findall(text) if not t.startswith(("#", "/*"))]
    out: list[tuple[str, str]] = []
    depth = 0
    for i, tok in enumerate(tokens):
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
        elif tok == "protocol" and depth == 0:
            kind = tokens[i + 1] if i + 1 < len(tokens) else ""
            name = tokens[i + 2] if i + 2 < len(tokens) else ""
            out.append((kind, "" if name in ("from", "{") else name))
    return out


def all_protocols(files: dict[str, str], main: str = "bird.cfg") -> list[tuple[str, str]]:
    """The protocols of ``main`` and the files it includes (confd's ``bird_aggr.cfg``, ``bird_ipam.cfg``)."""
    six = "6" if main.startswith("bird6") else ""
    return [p for name in (main, f"bird{six}_aggr.cfg", f"bird{six}_ipam.cfg") if name in files
            for p in protocols(files[name])]


BASE_PROTOCOLS = [("kernel", ""), ("device", ""), ("direct", ""), ("static", "")]
