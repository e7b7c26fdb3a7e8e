"""Field types and checks shared by the projectcalico.org/v3 models.

Each check follows a rule of libcalico-go's validator (``lib/validator/v3``)
or of the CEL rules on Calico's CRDs, with Calico's reason text where it has
one, so a rejected manifest reads the way Calico would word it.

Two helpers shape every error:

* a field validator raises ``ValueError(reason)``; pydantic puts the field's
  location on it;
* a model validator (a rule across fields) raises :func:`field_error`, which
  names the field the rule is about, so the error still points at a field
  and not just at ``spec``.

:mod:`libcalico.api.loading` turns both into :class:`libcalico.errors.ValidationError`.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import types
import typing
from typing import Annotated, Any

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, GetCoreSchemaHandler, PlainSerializer,
                      ValidationInfo, model_validator)
from pydantic.alias_generators import to_camel
from pydantic_core import CoreSchema, PydanticCustomError

from libcalico import selector as selector_mod
from libcalico.api.manifests import go_float_string

# --- model base -----------------------------------------------------------------

MANIFEST = "manifest"
"""Validation context key: the input is a manifest, decoded as sigs.k8s.io/yaml decodes one."""

_DROP = object()


def _strip(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``Annotated`` and ``| None``, and whether None was allowed."""
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) < len(typing.get_args(annotation)):
                nullable = True
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation, nullable


def _shape(annotation: Any) -> tuple[str, bool]:
    """What Go would decode a field into: "str", "int", "list_str", "dict_str" or "" (anything else)."""
    inner, nullable = _strip(annotation)
    if inner is str:
        return "str", nullable
    if inner is int:
        return "int", nullable
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin is list and args and _strip(args[0])[0] is str:
        return "list_str", nullable
    if origin is dict and len(args) == 2 and _strip(args[1])[0] is str:
        return "dict_str", nullable
    return "", nullable


_SHAPES: dict[type, dict[str, tuple[str, bool]]] = {}


def _shapes(cls: type[BaseModel]) -> dict[str, tuple[str, bool]]:
    shapes = _SHAPES.get(cls)
    if shapes is None:
        shapes = {}
        for name, info in cls.model_fields.items():
            shape = _shape(info.annotation)
            shapes[name] = shape
            if info.alias:
                shapes[info.alias] = shape
        _SHAPES[cls] = shapes
    return shapes


def go_string(value: Any) -> Any:
    """A YAML number or boolean written where Go expects a string, as sigs.k8s.io/yaml converts it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float_string(value)
    return value


def _go_value(value: Any, shape: str, manifest: bool) -> Any:
    if not manifest:
        return value
    if shape == "str":
        return go_string(value)
    if shape == "list_str" and isinstance(value, list):
        return [go_string(v) for v in value]
    if shape == "dict_str" and isinstance(value, dict):
        return {k: go_string(v) for k, v in value.items()}
    if shape == "int" and isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)  # YAML 26.0 reaches Go's encoding/json as 26
    return value


class CalicoModel(BaseModel):
    """Base of every v3 model: camelCase on the wire, unknown fields rejected, types strict.

    Calico decodes manifests with ``sigs.k8s.io/yaml`` then ``encoding/json``,
    and we decode the way that pair does:

    * an unknown field is an error;
    * a string is never taken for a number or a boolean (``blockSize: "26"``,
      ``disabled: "on"`` are refused): pydantic's strict mode;
    * ``null`` leaves a field at its default (encoding/json ignores a null for
      a non-pointer field);
    * in a manifest (validation context :data:`MANIFEST`), a YAML number or
      boolean where the field is a string becomes that string, as
      sigs.k8s.io/yaml converts it (``version: 1`` is the label value ``"1"``),
      and a whole float where the field is an integer is that integer. Stored
      JSON gets no such conversion, as in Calico's backends.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=False,
        str_strip_whitespace=False,
        defer_build=True,
        strict=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _go_decoding(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        manifest = bool(info.context and info.context.get(MANIFEST))
        if not manifest and None not in data.values():
            return data  # stored JSON without nulls: nothing to do (the hot path: IPAM blocks)
        shapes = _shapes(cls)
        out: dict[str, Any] | None = None
        for key, value in data.items():
            known = shapes.get(key) if isinstance(key, str) else None
            if known is None:
                continue
            shape, nullable = known
            new = _DROP if value is None and not nullable else _go_value(value, shape, manifest)
            if new is not value:
                if out is None:
                    out = dict(data)
                if new is _DROP:
                    del out[key]
                else:
                    out[key] = new
        return data if out is None else out


class WireEnum(str, enum.Enum):
    """An enum written as its string value. Strings are accepted for it even in strict mode."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = dict(handler(source))
        schema["strict"] = False
        return typing.cast(CoreSchema, schema)


class EnabledDisabled(WireEnum):  # Calico's switch in FelixConfiguration, KubeControllersConfiguration...
    ENABLED = "Enabled"
    DISABLED = "Disabled"


def field_error(field: str, reason: str, value: Any = None) -> PydanticCustomError:
    """An error raised by a model validator that is about one named field.

    ``field`` is the wire (camelCase) name relative to the model raising it.
    """
    return PydanticCustomError("calico_field", reason, {"field": field, "value": value})


# --- names ------------------------------------------------------------------------

NAME_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
NAME_SUBDOMAIN_FMT = NAME_LABEL_FMT + r"(\." + NAME_LABEL_FMT + ")*"
NAME_RE = re.compile("^" + NAME_SUBDOMAIN_FMT + r"\Z")
LABEL_NAME_RE = re.compile("^" + NAME_LABEL_FMT + r"\Z")
DNS1123_SUBDOMAIN_MAX = 253
DNS1123_LABEL_MAX = 63

_NAME_REASON = (
    "name must consist of lower case alphanumeric characters, '-' or '.' (regex: " + NAME_SUBDOMAIN_FMT + ")"
)


def check_name(name: str) -> str:
    """A resource name: a DNS-1123 subdomain, as Calico requires for most kinds."""
    if len(name) > DNS1123_SUBDOMAIN_MAX:
        raise ValueError(f"name is too long by {len(name) - DNS1123_SUBDOMAIN_MAX} bytes")
    if not NAME_RE.match(name):
        raise ValueError(_NAME_REASON)
    return name


ResourceName = Annotated[str, AfterValidator(check_name)]

_INTERFACE_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}\Z")


def check_interface(name: str) -> str:
    if name and not _INTERFACE_RE.match(name):
        raise ValueError("invalid interface name (1-15 of a-z A-Z 0-9 _ . -)")
    return name


InterfaceName = Annotated[str, AfterValidator(check_interface)]

# --- selectors --------------------------------------------------------------------


def check_selector(text: str) -> str:
    try:
        selector_mod.validate(text)
    except selector_mod.SelectorError as exc:
        raise ValueError(f"invalid selector: {exc.reason}") from None
    return text


SelectorText = Annotated[str, AfterValidator(check_selector)]

# --- IP addresses and networks ------------------------------------------------------


def is_decimal(text: str) -> bool:
    """ASCII digits only, as Go's strconv reads numbers (``str.isdigit`` also takes "١" and "²")."""
    return text.isascii() and text.isdigit()


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Go's net.ParseIP: an IPv4 or IPv6 address, without an IPv6 zone (``fe80::1%eth0``).

    Python's ipaddress takes a zone with any characters after the ``%``
    (quotes, newlines); Go refuses every zone, and so do we: addresses are
    written into BIRD's configuration.
    """
    if not isinstance(text, str) or "%" in text:
        raise ValueError("invalid IP address")
    return ipaddress.ip_address(text)


def parse_cidr_or_ip(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address,
                                         ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Calico's ParseCIDROrIP: ``a.b.c.d/n`` or a bare address (a full-length prefix).

    Returns the address as written and the network it lies in.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("invalid CIDR or IP address")
    addr_text, _, prefix = text.partition("/")
    try:
        addr = parse_ip(addr_text)
    except ValueError:
        raise ValueError("invalid CIDR or IP address") from None
    if not _:
        prefix = str(addr.max_prefixlen)
    if not is_decimal(prefix) or int(prefix) > addr.max_prefixlen:
        raise ValueError("invalid CIDR prefix length")
    net = ipaddress.ip_network(f"{addr}/{int(prefix)}", strict=False)
    return addr, net


def check_ip(text: str, *, version: int | None = None) -> str:
    try:
        addr = parse_ip(text)
    except ValueError:
        raise ValueError("invalid IP address") from None
    if version is not None and addr.version != version:
        raise ValueError(f"not an IPv{version} address")
    return text


def check_net(text: str) -> str:
    """Calico's ``net`` tag: an address, or a CIDR with no host bits set (``10.96.0.0/12``, not ``10.96.0.1/12``).

    "" is "not set" (omitempty).
    """
    if not text:
        return text
    addr, net = parse_cidr_or_ip(text)
    if addr != net.network_address:
        raise ValueError(f"invalid IP network: host bits are set (did you mean {net}?)")
    return text


def _cidr_checker(version: int | None) -> Any:
    def check(text: str) -> str:
        if not text:  # Go's omitempty: an empty string is "not set"
            return text
        addr, _ = parse_cidr_or_ip(text)
        if version is not None and addr.version != version:
            raise ValueError(f"invalid IPv{version} CIDR")
        return text

    return check


def _ip_checker(version: int | None) -> Any:
    def check(text: str) -> str:
        return check_ip(text, version=version) if text else text

    return check


IPAddr = Annotated[str, AfterValidator(_ip_checker(None))]
IPv4Addr = Annotated[str, AfterValidator(_ip_checker(4))]
IPv6Addr = Annotated[str, AfterValidator(_ip_checker(6))]
CIDR = Annotated[str, AfterValidator(_cidr_checker(None))]
CIDRv4 = Annotated[str, AfterValidator(_cidr_checker(4))]
CIDRv6 = Annotated[str, AfterValidator(_cidr_checker(6))]
Net = Annotated[str, AfterValidator(check_net)]

_MAC_RE = re.compile(r"^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}\Z")


def check_mac(text: str) -> str:
    if text and not _MAC_RE.match(text):
        raise ValueError("invalid MAC address")
    return text


MAC = Annotated[str, AfterValidator(check_mac)]

# --- AS numbers ---------------------------------------------------------------------

ASN_MAX = 2**32 - 1


def parse_asn(value: Any) -> int:
    """An AS number, plain (``64512``) or dotted (``1.10`` = 1*65536+10), as numorstring does."""
    if isinstance(value, bool):
        raise ValueError(f"invalid AS Number format ({value})")
    if isinstance(value, float):
        raise ValueError(f"invalid AS Number format ({value}): write a dotted AS number quoted, e.g. \"1.10\"")
    if isinstance(value, int):
        if 0 <= value <= ASN_MAX:
            return value
        raise ValueError(f"invalid AS Number format ({value}): out of range 0-{ASN_MAX}")
    if isinstance(value, str):
        if is_decimal(value):
            return parse_asn(int(value))
        hi, dot, lo = value.partition(".")
        if dot and is_decimal(hi) and is_decimal(lo) and int(hi) <= 0xFFFF and int(lo) <= 0xFFFF:
            return (int(hi) << 16) + int(lo)
    raise ValueError(f"invalid AS Number format ({value})")


ASNumber = Annotated[int, BeforeValidator(parse_asn)]

# --- ports and protocols ----------------------------------------------------------------

_PORT_NAME_RE = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?\Z")


def parse_port(value: Any) -> int | str:
    """numorstring.Port: a number, ``"min:max"`` or a named port. Numbers stay ints."""
    if isinstance(value, bool):
        raise ValueError("invalid port")
    if isinstance(value, int):
        if 1 <= value <= 65535:
            return value
        raise ValueError("port range invalid, port number must be between 1 and 65535")
    if isinstance(value, str):
        if is_decimal(value):
            return parse_port(int(value))
        lo, colon, hi = value.partition(":")
        if colon:
            if not (is_decimal(lo) and is_decimal(hi)):
                raise ValueError(f"invalid port range {value!r}")
            a, b = int(lo), int(hi)
            if not (1 <= a <= 65535 and 1 <= b <= 65535):
                raise ValueError("port range invalid, port number must be between 1 and 65535")
            if a > b:
                raise ValueError(f"port range invalid, min {a} is greater than max {b}")
            return value if a != b else a
        if len(value) <= 15 and _PORT_NAME_RE.match(value):
            return value
        raise ValueError(f"invalid port name {value!r}")
    raise ValueError("invalid port: must be a number, a range 'min:max' or a name")


Port = Annotated[int | str, BeforeValidator(parse_port)]


def port_is_named(port: int | str) -> bool:
    return isinstance(port, str) and ":" not in port


PROTOCOL_NAMES = ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")
PORT_PROTOCOLS = {"TCP", "UDP", "SCTP", 6, 17, 132}


def parse_protocol(value: Any) -> int | str:
    """numorstring.Protocol: a name Calico knows or a number 0-255."""
    if isinstance(value, bool):
        raise ValueError("protocol name invalid")
    if isinstance(value, int):
        if 0 <= value <= 255:
            return value
        raise ValueError("protocol number invalid (0-255)")
    if isinstance(value, str):
        if is_decimal(value):
            return parse_protocol(int(value))
        for name in PROTOCOL_NAMES:
            if value.lower() == name.lower():
                return name
    raise ValueError(f"protocol name invalid (one of {', '.join(PROTOCOL_NAMES)} or 0-255)")


Protocol = Annotated[int | str, BeforeValidator(parse_protocol)]

# --- durations --------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+\Z")


def check_duration(value: Any) -> str:
    """A Go duration string (``90s``, ``1m30s``), as metav1.Duration is written."""
    if isinstance(value, str) and (value == "0" or _DURATION_RE.match(value)):
        return value
    raise ValueError(f"invalid duration {value!r} (use Go syntax such as 90s, 1m30s, 500ms)")


Duration = Annotated[str, BeforeValidator(check_duration)]

# --- labels and annotations ---------------------------------------------------------------

_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
_QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")


def check_label_key(key: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix or len(prefix) > DNS1123_SUBDOMAIN_MAX or not NAME_RE.match(prefix):
            raise ValueError(f"label key {key!r}: prefix must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not _QUALIFIED_NAME_RE.match(name):
        raise ValueError(
            f"label key {key!r}: name part must be 63 characters or less, start and end with an "
            "alphanumeric character, with '-', '_' or '.' between"
        )
    return key


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        check_label_key(key)
        if len(value) > 63 or not _LABEL_VALUE_RE.match(value):
            raise ValueError(
                f"label value {value!r} for {key!r}: must be 63 characters or less, empty or starting "
                "and ending with an alphanumeric character"
            )
    return labels


Labels = Annotated[dict[str, str], AfterValidator(check_labels)]


def check_annotations(annotations: dict[str, str]) -> dict[str, str]:
    total = 0
    for key, value in annotations.items():
        check_label_key(key)
        total += len(key) + len(value)
    if total > 256 * 1024:
        raise ValueError("annotations may not exceed 256 kB in total")
    return annotations


Annotations = Annotated[dict[str, str], AfterValidator(check_annotations)]

# Serialise numbers that Calico writes as numbers but users may write as strings.
IntOut = PlainSerializer(lambda v: v, return_type=int)
