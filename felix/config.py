"""Felix's settings, with Calico's precedence, validated by one pydantic model.

Highest first: ``FELIX_<NAME>`` environment variables (name as Calico's, any
case: ``FELIX_FELIXHOSTNAME``, ``FELIX_HEALTHPORT``...), the config file
(``/etc/calico/felix.cfg``, ``[global]`` section, or ``FELIX_CONFIGFILE``), the
FelixConfiguration ``node.<hostname>``, then FelixConfiguration ``default``,
then the defaults below. The datastore is configured as calicoctl's is
(``DATASTORE_TYPE``, ``ETCD_ENDPOINTS``, ``KUBECONFIG``...), with Felix's own
``FELIX_DATASTORETYPE`` / ``FELIX_ETCDENDPOINTS`` taking precedence.

The model does the typed validation (it replaced a hand-written coercion);
each source only maps Calico's names (the field's alias) onto fields and
remembers where each value came from, so that a bad value's error names the
variable, the file's key or the FelixConfiguration that holds it. Not
pydantic-settings' own sources: two of Felix's four are datastore resources,
re-read on every change, and its env source reads only ``os.environ``, while
:func:`settings` takes any mapping (Felix folds its ``FELIX_ETCD*`` aliases in).
"""

from __future__ import annotations

import configparser
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from libcalico import api

# FelixConfiguration spec fields, where the model's name differs from the setting's.
_RESOURCE_FIELDS: dict[str, str | None] = {"hostname": None}


def _duration(value: Any) -> Any:
    """Calico's durations: a number of seconds, or Go's ``500ms`` / ``90s`` / ``2m`` / ``1h``."""
    if isinstance(value, str):
        text = value.strip()
        for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
            if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
                return float(text[: -len(suffix)]) * scale
    return value


class FelixSettings(BaseModel):
    """Felix's effective settings; each alias is Calico's name of the setting."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    hostname: str = Field("", alias="FelixHostname")
    interface_prefix: str = Field("cali", alias="InterfacePrefix")
    vxlan_vni: int = Field(4096, alias="VXLANVNI")
    vxlan_port: int = Field(4789, alias="VXLANPort")
    vxlan_mtu: int = Field(1450, alias="VXLANMTU")
    health_host: str = Field("127.0.0.1", alias="HealthHost")
    health_port: int = Field(9099, alias="HealthPort")
    prometheus_metrics_enabled: bool = Field(True, alias="PrometheusMetricsEnabled")
    prometheus_metrics_host: str = Field("127.0.0.1", alias="PrometheusMetricsHost")
    prometheus_metrics_port: int = Field(9091, alias="PrometheusMetricsPort")
    route_refresh_interval: float = Field(90.0, alias="RouteRefreshInterval")
    program_cluster_routes: str = Field("EnabledIPIPOnly", alias="ProgramClusterRoutes")
    ipv6_support: bool = Field(True, alias="Ipv6Support")  # FELIX_IPV6SUPPORT: the ip6 calico table too

    @field_validator("route_refresh_interval", mode="before")
    @classmethod
    def _go_duration(cls, value: Any) -> Any:
        return _duration(value)

    @field_validator("prometheus_metrics_enabled", "ipv6_support", mode="before")
    @classmethod
    def _calico_bool(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().lower()
            if text not in ("true", "false", "1", "0"):
                raise ValueError(f"must be true or false, not {value!r}")
            return text in ("true", "1")
        return value


@dataclass(frozen=True)
class _Source:
    """One of Calico's sources: values by field, and what to call each in an error."""

    values: dict[str, Any]
    origin: dict[str, str]


def _from_names(values: Mapping[str, str], *, prefix: str, where: str) -> _Source:
    lowered = {k.lower(): (k, v) for k, v in values.items()}
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, info in FelixSettings.model_fields.items():
        assert info.alias is not None
        hit = lowered.get(f"{prefix}{info.alias}".lower())
        if hit is not None and hit[1] != "":
            out[name] = hit[1]
            origin[name] = f"{where}{hit[0].upper() if prefix else hit[0]}"
    return _Source(out, origin)


def _from_resource(res: api.FelixConfiguration | None) -> _Source:
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if res is not None:
        for name in FelixSettings.model_fields:
            spec_field = _RESOURCE_FIELDS.get(name, name)
            if spec_field is None:
                continue
            value = getattr(res.spec, spec_field, None)
            if value not in (None, ""):
                out[name] = getattr(value, "value", value)  # enums by their value
                origin[name] = f"FelixConfiguration {res.metadata.name} spec.{spec_field}"
    return _Source(out, origin)


def settings(env: Mapping[str, str] | None = None, *, default: api.FelixConfiguration | None = None,
             node: api.FelixConfiguration | None = None) -> FelixSettings:
    """Felix's settings from every source, highest precedence winning; ValueError names a bad one."""
    env = os.environ if env is None else env
    sources = [_from_names(env, prefix="FELIX_", where="")]
    path = env.get("FELIX_CONFIGFILE", "/etc/calico/felix.cfg")
    if os.path.exists(path):
        parser = configparser.ConfigParser()
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep Calico's spelling for errors
        try:
            parser.read(path)
        except configparser.Error as exc:
            raise ValueError(f"{path}: {exc}") from exc
        if parser.has_section("global"):
            sources.append(_from_names(dict(parser.items("global")), prefix="", where=f"{path} [global] "))
    sources += [_from_resource(node), _from_resource(default)]
    merged: dict[str, Any] = {}
    for src in reversed(sources):  # lowest first, so a higher source overwrites
        merged.update(src.values)
    try:
        out = FelixSettings(**merged)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            name = str(err["loc"][0]) if err["loc"] else ""
            where = next((s.origin[name] for s in sources if name in s.origin), name)
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise ValueError("; ".join(problems)) from exc
    if not out.hostname:
        out = out.model_copy(update={"hostname": env.get("NODENAME") or socket.gethostname()})
    return out
