"""Felix's settings, with Calico's precedence.

Highest first: ``FELIX_<NAME>`` environment variables (name as Calico's, upper
case: ``FELIX_FELIXHOSTNAME``, ``FELIX_HEALTHPORT``...), the config file
(``/etc/calico/felix.cfg``, ``[global]`` section, or ``FELIX_CONFIGFILE``), the
FelixConfiguration ``node.<hostname>``, then FelixConfiguration ``default``,
then the defaults below. The datastore is configured as calicoctl's is
(``DATASTORE_TYPE``, ``ETCD_ENDPOINTS``, ``KUBECONFIG``...), with Felix's own
``FELIX_DATASTORETYPE`` / ``FELIX_ETCDENDPOINTS`` taking precedence.
"""

from __future__ import annotations

import configparser
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from libcalico import api

# Setting -> (FelixConfiguration field, Calico's env/file name)
_NAMES = {
    "hostname": (None, "FelixHostname"),
    "interface_prefix": ("interface_prefix", "InterfacePrefix"),
    "vxlan_vni": ("vxlan_vni", "VXLANVNI"),
    "vxlan_port": ("vxlan_port", "VXLANPort"),
    "vxlan_mtu": ("vxlan_mtu", "VXLANMTU"),
    "health_host": ("health_host", "HealthHost"),
    "health_port": ("health_port", "HealthPort"),
    "prometheus_metrics_enabled": ("prometheus_metrics_enabled", "PrometheusMetricsEnabled"),
    "prometheus_metrics_host": ("prometheus_metrics_host", "PrometheusMetricsHost"),
    "prometheus_metrics_port": ("prometheus_metrics_port", "PrometheusMetricsPort"),
    "route_refresh_interval": ("route_refresh_interval", "RouteRefreshInterval"),
    "program_cluster_routes": ("program_cluster_routes", "ProgramClusterRoutes"),
}


@dataclass(frozen=True)
class FelixSettings:
    hostname: str = ""
    interface_prefix: str = "cali"
    vxlan_vni: int = 4096
    vxlan_port: int = 4789
    vxlan_mtu: int = 1450
    health_host: str = "127.0.0.1"
    health_port: int = 9099
    prometheus_metrics_enabled: bool = True
    prometheus_metrics_host: str = "127.0.0.1"
    prometheus_metrics_port: int = 9091
    route_refresh_interval: float = 90.0
    program_cluster_routes: str = "EnabledIPIPOnly"


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(FelixSettings)}[name]
    if hasattr(value, "value"):
        value = value.value
    text = str(value).strip()
    if kind in ("int", int):
        return int(text)
    if kind in ("float", float):
        if text.endswith("ms"):
            return float(text[:-2]) / 1000
        if text.endswith("s"):
            return float(text[:-1])
        if text.endswith("m"):
            return float(text[:-1]) * 60
        return float(text)
    if kind in ("bool", bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} must be true or false, not {text!r}")
        return text.lower() in ("true", "1")
    return text


def _from_resource(res: api.FelixConfiguration | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if res is None:
        return out
    for name, (field, _) in _NAMES.items():
        if field is None:
            continue
        value = getattr(res.spec, field, None)
        if value not in (None, ""):
            out[name] = _coerce(name, value)
    return out


def _from_mapping(values: Mapping[str, str], prefix: str) -> dict[str, Any]:
    lowered = {k.lower(): v for k, v in values.items()}
    out: dict[str, Any] = {}
    for name, (_, calico_name) in _NAMES.items():
        key = f"{prefix}{calico_name}".lower()
        if key in lowered and lowered[key] != "":
            try:
                out[name] = _coerce(name, lowered[key])
            except ValueError as exc:
                raise ValueError(f"{prefix}{calico_name.upper() if prefix else calico_name}: {exc}") from None
    return out


def settings(env: Mapping[str, str] | None = None, *, default: api.FelixConfiguration | None = None,
             node: api.FelixConfiguration | None = None) -> FelixSettings:
    """Felix's settings from every source, highest precedence winning."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    merged.update(_from_resource(default))
    merged.update(_from_resource(node))
    path = env.get("FELIX_CONFIGFILE", "/etc/calico/felix.cfg")
    if os.path.exists(path):
        parser = configparser.ConfigParser()
        parser.read(path)
        if parser.has_section("global"):
            merged.update(_from_mapping(dict(parser.items("global")), ""))
    merged.update(_from_mapping(env, "FELIX_"))
    out = replace(FelixSettings(), **merged)
    if not out.hostname:
        out = replace(out, hostname=env.get("NODENAME") or socket.gethostname())
    return out
