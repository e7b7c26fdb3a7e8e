"""Read manifest text (YAML or JSON) the way calicoctl does, with bounds a hostile file cannot pass.

Every manifest input (``calicoctl create|apply|replace|delete|get|validate -f``,
files and stdin, and the lab, which applies through calicoctl) comes through
:func:`read_text` and :func:`load_yaml_documents`. Calico parses manifests
with ``sigs.k8s.io/yaml`` (go-yaml v2, then ``encoding/json``); this module
reproduces the parts of that which change what a manifest means, and bounds
the parts that a crafted file could abuse:

* **Input size.** At most :data:`MAX_INPUT_BYTES` are read from one file or
  from stdin, and one resource may take at most :data:`MAX_RESOURCE_BYTES`
  (3 MiB, the Kubernetes API server's request-body limit; etcd's own default
  request limit is smaller still). A longer input is refused before it is
  parsed.
* **Alias expansion.** A YAML alias (``*a``) repeats its anchor's subtree,
  so 87 KB of nested aliases ("billion laughs") stand for gigabytes. Like
  go-yaml (``decode.go``, ``allowedAliasRatio``), a document is refused when
  the nodes that come from expanding aliases exceed a ratio of all its
  nodes: 99% for up to 400,000 nodes, falling linearly to 10% at 4,000,000.
  The check runs on the composed node graph (where an alias is a shared
  node), before anything is built from it, so refusing costs time linear in
  the file. A recursive alias (an anchor inside its own value) is refused.
* **Nesting.** At most :data:`MAX_DEPTH` levels of mappings and sequences
  (Calico's resources need fewer than 15). Go's ``encoding/json`` stops at
  10,000; Python's parser and validators recurse, so our bound is lower,
  and a 100,000-deep ``[[[...]]]`` gets an error instead of a RecursionError.
* **Duplicate keys** in one mapping are refused, as ``yaml.UnmarshalStrict``
  refuses them (PyYAML would silently keep the last one).

And what go-yaml v2 resolves differently from PyYAML:

* no YAML 1.1 base-60 numbers: ``20:30`` is the string ``"20:30"`` (a port
  range), not the integer 1230;
* no timestamps: ``2024-01-02`` stays the text it is;
* floats follow go-yaml's pattern (``1e3`` is a number);
* ``=`` is a plain string;
* map keys that are numbers or booleans become strings (``1: a`` is
  ``"1": a``), as ``sigs.k8s.io/yaml`` converts them.

The conversion of numbers and booleans written where a string field is
expected happens in the models (``libcalico.api.fields``), because only
they know the field types.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Hashable, Iterator
from typing import IO, Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from libcalico.errors import ErroredField, ValidationError

MAX_INPUT_BYTES = 32 * 1024 * 1024
"""Largest file (or stdin) calicoctl reads."""
MAX_RESOURCE_BYTES = 3 * 1024 * 1024
"""Largest single resource: the Kubernetes API server's request-body limit."""
MAX_DEPTH = 100
"""Deepest nesting of mappings and sequences in a document."""
ALIAS_RATIO_RANGE_LOW = 400_000
ALIAS_RATIO_RANGE_HIGH = 4_000_000


def allowed_alias_ratio(decoded: int) -> float:
    """go-yaml's allowedAliasRatio: the share of a document's nodes that may come from aliases."""
    if decoded <= ALIAS_RATIO_RANGE_LOW:
        return 0.99
    if decoded >= ALIAS_RATIO_RANGE_HIGH:
        return 0.10
    span = ALIAS_RATIO_RANGE_HIGH - ALIAS_RATIO_RANGE_LOW
    return 0.99 - 0.89 * (decoded - ALIAS_RATIO_RANGE_LOW) / span


def _refuse(source: str, reason: str) -> ValidationError:
    return ValidationError([ErroredField("(document)", f"cannot parse {source}: {reason}")])


# --- reading -----------------------------------------------------------------------------


def decode_text(data: bytes, *, source: str) -> str:
    """Bytes of a manifest as text: UTF-8 (a BOM is dropped), or a clear error naming the source."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _refuse(source, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                              "a manifest is YAML or JSON") from exc


def read_text(stream: IO[bytes] | IO[str], *, source: str) -> str:
    """Read one manifest input (a file or stdin), at most :data:`MAX_INPUT_BYTES` of it."""
    data = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise _refuse(source, f"it is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
    return data if isinstance(data, str) else decode_text(data, source=source)


# --- go-yaml's scalar resolution -----------------------------------------------------------------


class _GoResolver(BaseResolver):
    """Implicit tags as go-yaml v2 resolves them (see the module docstring)."""


_GoResolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"),
    list("yYnNtTfFoO"))
# Integers before floats: go-yaml's float pattern also matches plain integers.
_GoResolver.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_GoResolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))
_GoResolver.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])
_GoResolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])


_SURROGATE = re.compile("[\ud800-\udfff]")


class _DepthExceeded(Exception):
    def __init__(self, mark: Any) -> None:
        super().__init__("too deep")
        self.mark = mark


class _Loader(Reader, Scanner, Parser, Composer, SafeConstructor, _GoResolver):
    """PyYAML's safe loader with go-yaml's resolution and a bound on nesting."""

    def __init__(self, text: str, *, source: str) -> None:
        self._source = source
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        _GoResolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self._depth >= MAX_DEPTH:
            raise _DepthExceeded(self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_scalar(self, node: Any) -> Any:
        value = super().construct_scalar(node)
        if isinstance(value, str) and _SURROGATE.search(value):
            # JSON writes a character beyond U+FFFF as a pair of \u escapes, which YAML reads as two
            # surrogates: join the pairs, and make a lone one U+FFFD, as Go's decoder does.
            value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return value

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        # Keys become strings as they are built (sigs.k8s.io/yaml), so that 1 and true stay two keys.
        if isinstance(node, MappingNode):
            self.flatten_mapping(node)
        out: dict[Hashable, Any] = {}
        for key_node, value_node in node.value:
            key = _key_text(self.construct_object(key_node, deep=True), source=self._source)
            out[key] = self.construct_object(value_node, deep=deep)
        return out


def _unsupported_tag(loader: _Loader, node: Node) -> Any:
    raise yaml.constructor.ConstructorError(None, None, f"the tag {node.tag} is not supported in a manifest",
                                            node.start_mark)


# Tags that would build values JSON cannot hold (bytes, sets, pairs, datetimes).
for _tag in ("binary", "timestamp", "omap", "pairs", "set"):
    # The stubs accept only yaml.Loader and its kin as a loader type.
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _unsupported_tag)  # type: ignore[type-var]


# --- checks on the composed document ------------------------------------------------------------


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _duplicate_key(node: MappingNode) -> str | None:
    seen: set[tuple[str, str]] = set()
    for key, _ in node.value:
        if isinstance(key, ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            ident = (key.tag, key.value)
            if ident in seen:
                return str(key.value)
            seen.add(ident)
    return None


def _check_graph(root: Node, *, source: str) -> None:
    """Duplicate keys, recursive aliases and go-yaml's alias-expansion ratio, without expanding anything."""
    size: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        ident = id(node)
        if children_done:
            on_path.discard(ident)
            size[ident] = 1 + sum(size[id(c)] for c in _children(node))
            continue
        if ident in size:
            continue
        if ident in on_path:
            raise _refuse(source, f"line {node.start_mark.line + 1}: an anchor's value contains an alias to itself")
        if isinstance(node, MappingNode):
            dup = _duplicate_key(node)
            if dup is not None:
                raise _refuse(source, f"line {node.start_mark.line + 1}: key {dup!r} already set in map")
        on_path.add(ident)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise _refuse(source, f"line {child.start_mark.line + 1}: an anchor's value contains an alias "
                                      "to itself")
            if id(child) not in size:
                stack.append((child, False))
    decoded = size[id(root)]
    from_aliases = decoded - len(size)  # every distinct node is decoded once without aliases
    if from_aliases > 100 and decoded > 1000 and from_aliases / decoded > allowed_alias_ratio(decoded):
        raise _refuse(source, f"document contains excessive aliasing ({decoded} nodes once aliases are expanded, "
                              f"{len(size)} written)")


def _resource_nodes(root: Node) -> list[Node]:
    """The nodes that are single resources: the root, a top-level sequence's items, a List's items."""
    if isinstance(root, SequenceNode):
        return list(root.value)
    if isinstance(root, MappingNode):
        for key, value in root.value:
            if isinstance(key, ScalarNode) and key.value == "items" and isinstance(value, SequenceNode):
                return list(value.value)
    return [root]


def _check_sizes(root: Node, text: str, *, source: str) -> None:
    for node in _resource_nodes(root):
        start, end = node.start_mark.index, node.end_mark.index
        chars = end - start
        if chars > MAX_RESOURCE_BYTES // 4 and len(text[start:end].encode()) > MAX_RESOURCE_BYTES:
            raise _refuse(source, f"line {node.start_mark.line + 1}: a resource is larger than "
                                  f"{MAX_RESOURCE_BYTES // (1024 * 1024)} MiB")


# --- to JSON values, as sigs.k8s.io/yaml does ---------------------------------------------------


def go_float_string(value: float) -> str:
    """strconv.FormatFloat(value, 'g', -1, 32): how sigs.k8s.io/yaml writes a YAML float into a string field."""
    if math.isnan(value):
        return "NaN"
    try:
        as32 = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        as32 = math.copysign(math.inf, value)
    if math.isinf(as32):
        return "+Inf" if as32 > 0 else "-Inf"
    if as32 == 0:
        return "-0" if math.copysign(1.0, as32) < 0 else "0"
    # The shortest decimal that reads back as the same float32 (at most 9 digits).
    for ndigits in range(1, 10):
        text = f"{abs(as32):.{ndigits - 1}e}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == abs(as32):
            break
    mantissa, _, exp_text = text.partition("e")
    digits, exp = mantissa.replace(".", ""), int(exp_text)
    sign = "-" if as32 < 0 else ""
    if exp < -4 or exp >= 6:  # Go's %g switch to %e for the shortest form
        return f"{sign}{mantissa}e{exp:+03d}"
    point = exp + 1
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _key_text(key: Any, *, source: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(key)
    if isinstance(key, float):
        text = go_float_string(key)
        return {"+Inf": ".inf", "-Inf": "-.inf", "NaN": ".nan"}.get(text, text)
    raise _refuse(source, f"unsupported map key {key!r} (keys are strings, numbers or booleans)")


# --- the entry point --------------------------------------------------------------------------


def _one_line(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"unacceptable character #x{exc.character:04x} at position {exc.position}: special characters " \
               "are not allowed"
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem}{where}"


def load_yaml_documents(text: str, *, source: str = "-") -> Iterator[Any]:
    """Each YAML/JSON document of ``text`` as JSON values (None for an empty document), checked against the bounds."""
    if len(text) > MAX_INPUT_BYTES:
        raise _refuse(source, f"it is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
    try:
        loader = _Loader(text, source=source)
    except yaml.YAMLError as exc:
        raise ValidationError([ErroredField(
            "(document)", f"cannot parse {source} as YAML or JSON: {_one_line(exc)}")]) from exc
    try:
        while True:
            try:
                if not loader.check_node():
                    return
                root = loader.get_node()
            except _DepthExceeded as exc:
                raise _refuse(source, f"line {exc.mark.line + 1}: nested deeper than {MAX_DEPTH} levels") from None
            except yaml.YAMLError as exc:
                raise ValidationError([ErroredField(
                    "(document)", f"cannot parse {source} as YAML or JSON: {_one_line(exc)}")]) from exc
            if root is None:
                continue
            _check_graph(root, source=source)
            _check_sizes(root, text, source=source)
            try:
                doc = loader.construct_document(root)
            except yaml.YAMLError as exc:
                raise ValidationError([ErroredField(
                    "(document)", f"cannot parse {source} as YAML or JSON: {_one_line(exc)}")]) from exc
            yield doc
    finally:
        loader.dispose()
