"""What a CNI invocation says: the network config on stdin, the CNI_* environment, CNI_ARGS.

The network config is Calico's own, as in its ``10-calico.conflist``::

    {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
     "datastore_type": "etcdv3", "etcd_endpoints": "http://10.0.0.1:2379",
     "nodename": "node1", "mtu": 1450, "log_level": "info",
     "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "ipv4_pools": ["10.244.0.0/16"]},
     "policy": {"type": "k8s"}, "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}}

Unknown keys are ignored (runtimes add ``capabilities``, ``runtimeConfig``...),
as Calico's Go decoder ignores them. Anything wrong becomes a :class:`CNIError`
with the spec's code before the plugin touches anything, checked in the order
of the CNI library's ``skel`` that Calico's plugins run under: the CNI_*
variables (a container ID of the spec's characters only, a valid interface
name, none missing: 4), then stdin (5 when it cannot be read, 6 when it is not
a JSON object, 7 when the network name or another field is wrong, 1 for an
unsupported version). The CNI_* variables are a pydantic-settings model
(:class:`CNIEnvironment`), the network config a pydantic model (:class:`NetConf`);
the datastore settings are the environment's with the network config's
``etcd_*`` / ``datastore_type`` / ``kubernetes`` keys laid over them, as
Calico's ``CreateClient`` sets them into its environment.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

import pydantic
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from libcalico.backend import config as dsconfig
from libcalico.errors import ValidationError

SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
MAX_STDIN = 16 * 1024 * 1024  # a network config is a few KB; more is not one

# The spec's well-known error codes.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_FAILURE = 100  # codes from 100 are the plugin's own

# The spec's (and skel's) characters for a container ID and a network name.
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")


class CNIError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def result(self, version: str) -> dict[str, Any]:
        return {"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details}


def _boolish(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise ValueError("must be true or false")


class IPAMConf(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    assign_ipv4: bool = True
    assign_ipv6: bool = False
    ipv4_pools: list[str] = Field(default_factory=list)

    @field_validator("assign_ipv4", "assign_ipv6", mode="before")
    @classmethod
    def _bool(cls, v: Any) -> bool:
        return _boolish(v)


class KubernetesConf(BaseModel):
    model_config = ConfigDict(extra="ignore")
    kubeconfig: str = ""
    k8s_api_root: str = ""


# How long one datastore request of the plugins may take. A CNI ADD comes when the node is busiest
# (a node starting, many pods scheduled at once), so the library's 10 s, made for long-running
# daemons that retry, is too short here: Calico's plugins give a single datastore look-up 30 s
# (cni-plugin/pkg/ipamplugin: ResolvePools, IPsByHandle) and an assignment as a whole 90 s, which
# cni.plugin's IPAM_TIMEOUT bounds here. A datastore that does not answer still fails the ADD,
# named, within the runtime's patience.
DATASTORE_TIMEOUT = 30.0

# The network config's keys that Calico's CreateClient sets as these variables.
_OVERLAY = {"datastore_type": "DATASTORE_TYPE", "etcd_endpoints": "ETCD_ENDPOINTS",
            "etcd_key_file": "ETCD_KEY_FILE", "etcd_cert_file": "ETCD_CERT_FILE",
            "etcd_ca_cert_file": "ETCD_CA_CERT_FILE"}


class NetConf(BaseModel):
    model_config = ConfigDict(extra="ignore")
    cni_version: str = Field(alias="cniVersion")
    name: str
    type: str
    datastore_type: str = ""
    etcd_endpoints: str = ""
    etcd_key_file: str = ""
    etcd_cert_file: str = ""
    etcd_ca_cert_file: str = ""
    nodename: str = ""
    nodename_file: str = DEFAULT_NODENAME_FILE
    ipam_lock_file: str = ""  # Calico's; "" = /var/run/calico/ipam.lock
    mtu: int = Field(default=1500, ge=68, le=65535)
    log_level: str = "info"
    ipam: IPAMConf | None = None
    kubernetes: KubernetesConf = Field(default_factory=KubernetesConf)
    policy: dict[str, Any] = Field(default_factory=dict)
    prev_result: dict[str, Any] | None = Field(default=None, alias="prevResult")

    @field_validator("cni_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported CNI version {v!r}; this plugin supports {', '.join(SUPPORTED_VERSIONS)}")
        return v

    def datastore(self, env: Mapping[str, str]) -> dsconfig.DatastoreConfig:
        """The environment's datastore settings (as calicoctl reads them), overridden by the config's."""
        overlay = {var: getattr(self, key) for key, var in _OVERLAY.items() if getattr(self, key)}
        names = {var: key for key, var in _OVERLAY.items() if var in overlay}
        if self.kubernetes.kubeconfig:
            overlay["KUBECONFIG"], names["KUBECONFIG"] = self.kubernetes.kubeconfig, "kubernetes.kubeconfig"
        if self.kubernetes.k8s_api_root:
            overlay["K8S_API_ENDPOINT"], names["K8S_API_ENDPOINT"] = self.kubernetes.k8s_api_root, \
                "kubernetes.k8s_api_root"
        try:
            ds = dsconfig.from_environment({**env, **overlay}, source="CNI network config and environment",
                                           names=names)
        except ValidationError as exc:  # whose value was wrong decides the code: the config's, or the runtime's
            code = INVALID_NETWORK_CONFIG if any(n in str(f) for f in exc.fields for n in names.values()) \
                else INVALID_ENVIRONMENT
            raise CNIError(code, str(exc)) from exc
        return replace(ds, etcd=replace(ds.etcd, timeout=DATASTORE_TIMEOUT))

    def node_name(self) -> str:
        """``nodename``, else the contents of ``nodename_file``, else the host name (Calico's order)."""
        if self.nodename:
            return self.nodename
        try:
            with open(self.nodename_file, encoding="utf-8") as f:
                name = f.read().strip()
            if name:
                return name
        except OSError:
            pass
        return socket.gethostname()


@dataclass
class Invocation:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: list[str]
    conf: NetConf
    raw: bytes
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pod_namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE", "")

    @property
    def pod_name(self) -> str:
        return self.args.get("K8S_POD_NAME", "")


def parse_args(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(";"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise CNIError(INVALID_ENVIRONMENT, f"CNI_ARGS: {part!r} is not KEY=VALUE")
        out[key] = value
    return out


def _var(name: str) -> Any:
    return Field("", validation_alias=AliasChoices(name))


class CNIEnvironment(BaseSettings):
    """The CNI_* variables of one invocation, checked as the CNI library's skel checks them."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True)

    command: str = _var("CNI_COMMAND")
    container_id: str = _var("CNI_CONTAINERID")
    netns: str = _var("CNI_NETNS")
    ifname: str = _var("CNI_IFNAME")
    args: str = _var("CNI_ARGS")
    path: str = _var("CNI_PATH")

    @field_validator("container_id")
    @classmethod
    def _container_id(cls, v: str) -> str:
        if v and not _NAME.fullmatch(v):
            raise ValueError("invalid characters in containerID")
        return v

    @field_validator("ifname")
    @classmethod
    def _ifname(cls, v: str) -> str:
        if len(v) > 15:
            raise ValueError("interface name is too long")
        if v in (".", ".."):
            raise ValueError("interface name is . or ..")
        if any(c in "/:" or c.isspace() for c in v):
            raise ValueError("interface name contains / or : or whitespace characters")
        return v


# Which variables each command needs (skel's table, less CNI_PATH, which calico-ipam does not use).
NEEDED = {"ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"), "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
          "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")}


def environment(env: Mapping[str, str]) -> CNIEnvironment:
    """The CNI_* variables, or the spec's error (code 4) naming what is wrong or missing."""
    try:
        cni = dsconfig.settings_from(CNIEnvironment, env)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        variable = str(first["loc"][0]) if first["loc"] else ""
        raise CNIError(INVALID_ENVIRONMENT, f"{variable}: {first['msg'].removeprefix('Value error, ')}",
                       str(first.get("input", ""))) from exc
    if not cni.command:
        raise CNIError(INVALID_ENVIRONMENT, "required env variables [CNI_COMMAND] missing")
    if cni.command not in COMMANDS:
        raise CNIError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND: {cni.command}")
    missing = [k for k in NEEDED.get(cni.command, ()) if not env.get(k)]
    if missing:
        raise CNIError(INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")
    return cni


def read_stdin(stream: BinaryIO | None) -> bytes:
    """All of stdin; the spec's I/O error (5) when there is no stdin to read (``0<&-``) or it fails."""
    if stream is None:
        raise CNIError(IO_FAILURE, "error reading from stdin: stdin is closed")
    try:
        data = stream.read(MAX_STDIN + 1)
    except (OSError, ValueError) as exc:  # EBADF, EIO; ValueError: a closed file object
        raise CNIError(IO_FAILURE, f"error reading from stdin: {exc}") from exc
    if len(data) > MAX_STDIN:
        raise CNIError(DECODING_FAILURE, f"the network config on stdin is larger than {MAX_STDIN} bytes")
    return data


def parse_netconf(stdin: bytes) -> NetConf:
    """The network config, or the spec's error: 6 not a JSON object, 7 a field is wrong, 1 its version."""
    if not stdin.strip():
        raise CNIError(DECODING_FAILURE, "error unmarshall network config: the network config on stdin is empty")
    try:
        doc = json.loads(stdin)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(DECODING_FAILURE, f"the network config on stdin is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise CNIError(DECODING_FAILURE, "the network config on stdin is not JSON Calico reads: "
                                         "nested too deeply") from exc
    if not isinstance(doc, dict):
        raise CNIError(DECODING_FAILURE, "the network config on stdin must be a JSON object")
    name = doc.get("name")
    if not name:
        raise CNIError(INVALID_NETWORK_CONFIG, "missing network name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CNIError(INVALID_NETWORK_CONFIG, "invalid characters found in network name", str(name))
    try:
        return NetConf.model_validate(doc)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        code = INCOMPATIBLE_VERSION if where == "cniVersion" and first["type"] == "value_error" \
            else INVALID_NETWORK_CONFIG
        raise CNIError(code, f"invalid network config: {where}: {first['msg']}") from exc
    except RecursionError as exc:
        raise CNIError(DECODING_FAILURE, "the network config is nested too deeply") from exc


def read(stdin: bytes | BinaryIO | None, env: Mapping[str, str] | None = None) -> Invocation:
    """Parse an invocation; raise CNIError (and do nothing else) when it is not valid.

    ``stdin`` is the network config, or the stream to read it from (None: stdin is closed).
    """
    env = dict(os.environ if env is None else env)
    cni = environment(env)
    raw = stdin if isinstance(stdin, bytes) else read_stdin(stdin)
    conf = parse_netconf(raw)
    return Invocation(cni.command, cni.container_id, cni.netns, cni.ifname or "eth0", parse_args(cni.args),
                      [p for p in cni.path.split(":") if p], conf, raw, env)
