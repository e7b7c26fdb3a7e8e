"""Output formats of ``calicoctl get``: the table (``ps``), ``wide``, yaml, json, name, custom-columns.

Calico prints its tables through Go's ``text/tabwriter`` with minwidth 5,
tabwidth 1, padding 3, padchar ' ' and every cell tab-terminated, the last one
included. So each column is ``max(5, widest cell + 3)`` wide and every line,
the last column included, is padded (lines end in spaces, as Calico's do).
:func:`tabwrite` reproduces exactly that, so our output can be diffed against
Calico's byte for byte. A blank line follows every table, as in Calico.

YAML is written as sigs.k8s.io/yaml writes it (keys sorted, strings that
would read back as another type double-quoted); JSON as Go's
``json.MarshalIndent`` (struct field order, two-space indent).
"""

from __future__ import annotations

import decimal
import enum
import json
from collections.abc import Sequence
from typing import Any

import yaml

MINWIDTH = 5
PADDING = 3


def tabwrite(rows: Sequence[Sequence[str]]) -> str:
    """Lay out rows of cells like Go's tabwriter.NewWriter(w, 5, 1, 3, ' ', 0)."""
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [MINWIDTH] * ncols
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell) + PADDING)
    lines = []
    for row in rows:
        lines.append("".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
    return "\n".join(lines) + "\n"


def _go_float(value: float) -> str:
    """Go's ``%v`` of a float64 (strconv 'g', shortest): ``100``, ``1.5``, ``1e+06``, ``1e-05``."""
    if value == 0 or value != value or value in (float("inf"), float("-inf")):
        return {0.0: "0"}.get(value, "NaN" if value != value else ("+Inf" if value > 0 else "-Inf"))
    sign, digits, exp = decimal.Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exp, int)
    text = "".join(str(d) for d in digits)
    x = exp + len(text) - 1  # the exponent in scientific notation
    minus = "-" if sign else ""
    if x < -4 or x >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{minus}{mantissa}e{'-' if x < 0 else '+'}{abs(x):02d}"
    return minus + format(decimal.Decimal(repr(abs(value))).normalize(), "f")


def go_value(value: Any) -> str:
    """How a Go template prints a value: bools lower-case, nil pointers as <nil>."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


# --- YAML like sigs.k8s.io/yaml ---------------------------------------------------------


class _GoYAMLDumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # Quote (with double quotes, as go-yaml does) a string that would read back as
    # another type: "123", "true", "null", "1.5", timestamps.
    try:
        reread = yaml.safe_load(data) if data else ""
    except yaml.YAMLError:
        reread = None
    if data and (not isinstance(reread, str) or reread != data):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_GoYAMLDumper.add_representer(str, _represent_str)


def to_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_GoYAMLDumper, sort_keys=True, default_flow_style=False, allow_unicode=True,
                     width=1 << 30)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


def box_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right_aligned: set[int] | None = None) -> str:
    """A boxed table as calicoctl's ``ipam show`` and ``node status`` draw them (olekukonko/tablewriter):
    ``+---+`` rules, headers centred (extra space on the right), cells left-aligned unless right-aligned."""
    right = right_aligned or set()
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"

    def centred(text: str, width: int) -> str:
        left = (width - len(text)) // 2
        return " " * left + text + " " * (width - len(text) - left)

    head = "|" + "|".join(f" {centred(h, w)} " for h, w in zip(headers, widths, strict=True)) + "|\n"
    body = "".join("|" + "|".join(f" {c.rjust(w) if i in right else c.ljust(w)} "
                                  for i, (c, w) in enumerate(zip(r, widths, strict=True))) + "|\n" for r in rows)
    return rule + head + rule + body + rule
