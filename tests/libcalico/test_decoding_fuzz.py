"""Property-based fuzzing of every kind's decoding: a value is decoded or refused, never a crash.

For each registered kind, hypothesis builds documents from the model's own
fields: random JSON values for every field, mixed with values of the right
shape (nested objects, lists, plausible strings such as CIDRs, selectors,
ports) so the fuzzing reaches the validators and not only the type checks.
Each document goes the way calicoctl reads a manifest (JSON text through the
bounded YAML loader, the model, then Calico's defaulting) and must either
come out as a resource or raise :class:`libcalico.errors.ValidationError`.
A resource that comes out must also read back from its stored form, as the
datastore backends read it.

Runs are derandomized (the same examples every run) and kept to a few
hundred examples per kind, so the whole file takes seconds.
"""

from __future__ import annotations

import enum
import functools
import json
import typing
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libcalico import api, client
from libcalico.api import fields
from libcalico.errors import ValidationError

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PER_KIND = settings(FUZZ, max_examples=100)

PLAUSIBLE = ["", "a", "default", "node-a", "10.0.0.0/8", "10.244.0.0/16", "10.244.1.0/16", "192.168.0.1",
             "fd00::/64", "fe80::1", "all()", "a == 'b'", "has(x)", "!has(x) && y in {'a'}", "global()", "Always",
             "Never", "CrossSubnet", "TCP", "UDP", "ICMP", "80", "80:90", "http", "1.10", "64512", "90s", "1m30s",
             "host:node-a", "kns.default", "eth0", "cali0123456789a", "ee:ee:ee:ee:ee:ee", "Allow", "Deny", "Pass",
             "Log", "Ingress", "Egress", "Workload", "Tunnel", "LoadBalancer", "Info", "Debug", "true", "on", "Enabled",
             "Disabled", "k8s", "\u00e9", "a" * 300]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-2, max_value=70000),
                    st.floats(allow_nan=False), st.text(max_size=12), st.sampled_from(PLAUSIBLE))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)


def _strip(annotation: Any) -> Any:
    return fields._strip(annotation)[0]


@functools.cache
def value_strategy(annotation: Any, depth: int) -> st.SearchStrategy[Any]:
    """Values of the field's own shape, or anything at all."""
    ann = _strip(annotation)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    shaped: list[st.SearchStrategy[Any]] = []
    if isinstance(ann, type) and issubclass(ann, pydantic.BaseModel) and depth < 4:
        shaped.append(model_strategy(ann, depth + 1))
    elif isinstance(ann, type) and issubclass(ann, enum.Enum):
        shaped.append(st.sampled_from([m.value for m in ann]))
    elif origin is list and args:
        shaped.append(st.lists(value_strategy(args[0], depth + 1), max_size=3))
    elif origin is dict and len(args) == 2:
        keys = st.one_of(st.text(max_size=10), st.sampled_from(["app", "x/y", "projectcalico.org/name", "10.0.0.0/8"]))
        shaped.append(st.dictionaries(keys, value_strategy(args[1], depth + 1), max_size=3))
    elif origin is typing.Literal:
        shaped.append(st.sampled_from(args))
    elif ann is str:
        shaped.append(st.sampled_from(PLAUSIBLE))
    elif ann is int:
        shaped.append(st.integers(min_value=-1, max_value=70000))
    elif ann is float:
        shaped.append(st.floats(allow_nan=False, allow_infinity=False))
    elif ann is bool:
        shaped.append(st.booleans())
    else:  # unions of shapes (ports, AS numbers), Any
        shaped.append(st.sampled_from(PLAUSIBLE + [80, 64512, 1.5]))
    return st.one_of(*shaped, *shaped, json_values)


@functools.cache
def model_strategy(model: type[pydantic.BaseModel], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """A few of the model's fields (wire names), each with a value from :func:`value_strategy`."""
    by_key = {info.alias or name: info.annotation for name, info in model.model_fields.items()}

    @functools.cache
    def pick(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({k: value_strategy(by_key[k], depth) for k in keys})

    return st.lists(st.sampled_from(sorted(by_key)), max_size=5, unique=True).map(tuple).flatmap(pick)


def documents(cls: type[api.Resource]) -> st.SearchStrategy[dict[str, Any]]:
    spec = cls.model_fields.get("spec")
    names = st.one_of(st.sampled_from(["default", "a", "node-a", "x.y", "knp.default.x"]), st.text(max_size=10))
    meta = st.fixed_dictionaries({"name": names}, optional={
        "namespace": st.sampled_from(["", "default", "Bad_NS"]),
        "labels": st.dictionaries(st.sampled_from(["app", "x/y", "bad key"]), json_values, max_size=2),
        "annotations": st.dictionaries(st.text(max_size=5), json_values, max_size=2)})
    body: dict[str, st.SearchStrategy[Any]] = {"apiVersion": st.just(api.API_VERSION), "kind": st.just(cls.KIND),
                                               "metadata": st.one_of(meta, meta, json_values)}
    if spec is not None:
        body["spec"] = st.one_of(value_strategy(spec.annotation, 0), value_strategy(spec.annotation, 0),
                                 json_values)
    return st.fixed_dictionaries(body)


def decode_like_calicoctl(doc: dict[str, Any]) -> api.Resource | None:
    """What ``calicoctl apply -f`` does with a document before writing it; None if it is refused."""
    try:
        (res,) = api.load_resources(json.dumps(doc))
        defaulted = client._revalidate(client.apply_defaults(res))
    except ValidationError:
        return None
    return defaulted


@pytest.mark.parametrize("kind", sorted(api.KINDS))
def test_decoding_any_document_of_a_kind_either_succeeds_or_names_what_is_wrong(kind: str) -> None:
    cls = api.KINDS[kind]

    @PER_KIND
    @given(documents(cls))
    def check(doc: dict[str, Any]) -> None:
        res = decode_like_calicoctl(doc)
        if res is None:
            return
        # What is stored reads back: the backends decode stored JSON with the model alone.
        stored = json.loads(json.dumps(res.to_wire()))
        again = type(res).model_validate(stored)
        assert again.to_wire() == res.to_wire()

    check()


@FUZZ
@given(json_values)
def test_any_json_value_as_a_manifest_is_refused_or_decoded(value: Any) -> None:
    try:
        api.load_resources(json.dumps(value))
    except ValidationError:
        pass


@FUZZ
@given(st.lists(st.sampled_from(list("ab:-[]{}&*!|>'\"#,? \n01.~") + ["- ", ": ", "&a ", "*a", "<<: ", "!!str "]),
                max_size=40).map("".join))
def test_any_yaml_ish_text_is_refused_or_decoded(text: str) -> None:
    try:
        api.load_resources(text)
    except ValidationError:
        pass
