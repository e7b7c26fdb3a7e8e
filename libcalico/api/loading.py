"""Turn manifest text into validated resources, or into errors that name fields.

What ``calicoctl create|apply|replace|delete -f`` accepts: YAML or JSON, one
or more documents (``---``), a ``*List`` kind with ``items``, or a top-level
sequence of resources. Every document is checked before anything is written,
so a file with one bad document changes nothing in the datastore.

pydantic reports a location and a message; here each becomes an
:class:`~libcalico.errors.ErroredField` whose name is the wire path
(``spec.ipipMode``), whose value is what the user wrote, and whose reason is
Calico's wording where we have it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pydantic

from libcalico.api import fields, manifests, registry
from libcalico.api.meta import API_VERSION, Resource
from libcalico.errors import ErroredField, ValidationError

_PYDANTIC_REASONS = {
    "extra_forbidden": "unknown field",
    "missing": "field is required",
}


def _path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part:
            out += ("." if out else "") + str(part)
    return out


_UNION_TAGS = {"int", "str", "float", "bool", "list", "dict", "none"}


def _is_pydantic_tag(part: str) -> bool:
    return part in _UNION_TAGS or part.startswith(("function-", "lax-", "json-or-python[", "union["))


# Strict type errors, worded as Go's encoding/json words them.
_GO_TYPES = {"int_type": "int", "bool_type": "bool", "string_type": "string", "float_type": "float64",
             "list_type": "slice", "dict_type": "map", "model_type": "struct", "model_attributes_type": "struct"}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _reason(err: Any) -> str:
    msg = str(err.get("msg", ""))
    if err["type"] in _PYDANTIC_REASONS:
        return _PYDANTIC_REASONS[err["type"]]
    if err["type"] in _GO_TYPES:
        return f"cannot unmarshal {_json_kind(err.get('input'))} into Go value of type {_GO_TYPES[err['type']]}"
    if err["type"] == "int_from_float":
        return f"cannot unmarshal {_json_kind(err.get('input'))} into Go value of type int"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def _scalar(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
        return value
    return None


def errored_fields(exc: pydantic.ValidationError) -> list[ErroredField]:
    """Map pydantic's errors to Calico-style errored fields."""
    out: list[ErroredField] = []
    for err in exc.errors():
        loc = list(err["loc"])
        # Drop pydantic's union-member and validator tags ("int", "function-before[...]"):
        # they are not field names.
        loc = [p for p in loc if isinstance(p, int) or not _is_pydantic_tag(str(p))]
        value = _scalar(err.get("input"))
        if err["type"] == "calico_field":
            ctx = err.get("ctx") or {}
            if ctx.get("field"):
                loc.append(ctx["field"])
            value = _scalar(ctx.get("value"))
        if err["type"] == "missing":
            value = None
        out.append(ErroredField(_path(loc) or "(document)", _reason(err), value))
    return out


def parse_resource(doc: Any, *, where: str = "") -> Resource:
    """Validate one document (a mapping) into its resource model."""
    ctx = where
    if not isinstance(doc, dict):
        raise ValidationError([ErroredField("(document)", "a resource must be a mapping with apiVersion and kind")],
                              context=ctx)
    kind = doc.get("kind")
    api_version = doc.get("apiVersion")
    if not kind or not isinstance(kind, str):
        raise ValidationError([ErroredField("kind", "kind is required")], context=ctx)
    cls = registry.by_kind(kind)
    if cls is None or cls.KIND != kind:
        known = ", ".join(sorted(registry.KINDS))
        raise ValidationError([ErroredField("kind", f"unknown kind (known kinds: {known})", kind)], context=ctx)
    if api_version != API_VERSION:
        raise ValidationError(
            [ErroredField("apiVersion", f"apiVersion must be {API_VERSION}", api_version)], context=ctx)
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    if name:
        ctx = f"{where + ' ' if where else ''}{kind}({name})"
    try:
        return cls.model_validate(doc, context={fields.MANIFEST: True})
    except pydantic.ValidationError as exc:
        raise ValidationError(errored_fields(exc), context=ctx) from None


def _expand(doc: Any) -> list[Any]:
    """Flatten ``*List`` kinds and top-level sequences into single documents."""
    if isinstance(doc, list):
        return [d for item in doc for d in _expand(item)]
    if isinstance(doc, dict):
        kind = doc.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
            items = doc.get("items") or []
            if not isinstance(items, list):
                raise ValidationError([ErroredField("items", "items must be a list")])
            return [d for item in items for d in _expand(item)]
    return [doc]


def load_documents(text: str, *, source: str = "-") -> list[Any]:
    """Parse YAML/JSON text into a flat list of documents (not yet validated).

    Parsing is bounded (size, nesting, alias expansion) and resolves scalars as
    go-yaml does: see :mod:`libcalico.api.manifests`.
    """
    docs = [d for d in manifests.load_yaml_documents(text, source=source) if d is not None]
    return [d for doc in docs for d in _expand(doc)]


def load_resources(text: str, *, source: str = "-") -> list[Resource]:
    """Parse and validate every document; raise on the first invalid one, naming it."""
    docs = load_documents(text, source=source)
    return [parse_resource(doc, where=f"{source} document {i + 1}") for i, doc in enumerate(docs)]
