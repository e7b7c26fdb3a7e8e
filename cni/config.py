"""What a CNI invocation says: the network config on stdin, the CNI_* environment, CNI_ARGS.

The network config is Calico's own, as in its ``10-calico.conflist``::

    {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
     "datastore_type": "etcdv3", "etcd_endpoints": "http://10.0.0.1:2379",
     "nodename": "node1", "mtu": 1450, "log_level": "info",
     "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "ipv4_pools": ["10.244.0.0/16"]},
     "policy": {"type": "k8s"}, "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}}

Unknown keys are ignored (runtimes add ``capabilities``, ``runtimeConfig``...),
as Calico's Go decoder ignores them. Anything wrong becomes a :class:`CNIError`
with the spec's code (4 environment, 6 decoding, 7 network config) before the
plugin touches anything.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from libcalico.backend import config as dsconfig
from libcalico.backend.etcdv3 import EtcdConfig

SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"

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
        base = dsconfig.from_environment(env)
        dtype = self.datastore_type or base.datastore_type
        if dtype not in dsconfig.DATASTORE_TYPES:
            raise CNIError(INVALID_NETWORK_CONFIG, f"datastore_type must be etcdv3 or kubernetes, not {dtype!r}")
        etcd = base.etcd
        if self.etcd_endpoints:
            etcd = EtcdConfig(endpoints=tuple(e.strip() for e in self.etcd_endpoints.split(",") if e.strip()),
                              ca_cert_file=self.etcd_ca_cert_file or etcd.ca_cert_file,
                              cert_file=self.etcd_cert_file or etcd.cert_file,
                              key_file=self.etcd_key_file or etcd.key_file)
        kubeconfig = self.kubernetes.kubeconfig or base.kubeconfig
        return dsconfig.DatastoreConfig(dtype, etcd, kubeconfig, self.kubernetes.k8s_api_root or
                                        base.k8s_api_endpoint, "CNI network config", base.api_group)

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


def read(stdin: bytes, env: Mapping[str, str] | None = None) -> Invocation:
    """Parse an invocation; raise CNIError (and do nothing else) when it is not valid."""
    env = dict(os.environ if env is None else env)
    command = env.get("CNI_COMMAND", "")
    if command not in ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS"):
        raise CNIError(INVALID_ENVIRONMENT, f"CNI_COMMAND must be ADD, DEL, CHECK, GC, STATUS or VERSION, "
                                            f"not {command!r}")
    try:
        doc = json.loads(stdin)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(DECODING_FAILURE, f"the network config on stdin is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CNIError(DECODING_FAILURE, "the network config on stdin must be a JSON object")
    try:
        conf = NetConf.model_validate(doc)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        code = INCOMPATIBLE_VERSION if where == "cniVersion" and first["type"] == "value_error" \
            else INVALID_NETWORK_CONFIG
        raise CNIError(code, f"invalid network config: {where}: {first['msg']}") from None
    needed = {"ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"), "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
              "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")}.get(command, ())
    missing = [k for k in needed if not env.get(k)]
    if missing:
        raise CNIError(INVALID_ENVIRONMENT, f"required environment variable(s) not set: {', '.join(missing)}")
    return Invocation(command, env.get("CNI_CONTAINERID", ""), env.get("CNI_NETNS", ""),
                      env.get("CNI_IFNAME", "eth0"), parse_args(env.get("CNI_ARGS", "")),
                      [p for p in env.get("CNI_PATH", "").split(":") if p], conf, stdin, env)
