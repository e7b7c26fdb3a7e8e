"""Datastore configuration, read the way Calico's tools read it.

Like libcalico-go's ``apiconfig.LoadClientConfig``: if the config file exists
(``/etc/calico/calicoctl.cfg`` or the path given with ``--config``), it is the
whole configuration, a ``CalicoAPIConfig`` document::

    apiVersion: projectcalico.org/v3
    kind: CalicoAPIConfig
    spec:
      datastoreType: etcdv3
      etcdEndpoints: http://127.0.0.1:2379

Otherwise the environment is read: ``DATASTORE_TYPE`` (``etcdv3`` default,
or ``kubernetes``), ``ETCD_ENDPOINTS``, ``ETCD_CA_CERT_FILE``,
``ETCD_CERT_FILE``, ``ETCD_KEY_FILE``, ``ETCD_USERNAME``, ``ETCD_PASSWORD``,
``KUBECONFIG``, ``K8S_API_ENDPOINT``, ``CALICO_API_GROUP``. Calico also accepts each variable with a ``CALICO_`` prefix;
so do we.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from libcalico.backend.etcdv3 import EtcdConfig
from libcalico.errors import ErroredField, ValidationError

DEFAULT_CONFIG_PATH = "/etc/calico/calicoctl.cfg"
DATASTORE_TYPES = ("etcdv3", "kubernetes")

_SPEC_FIELDS = {
    "datastoreType": "DATASTORE_TYPE",
    "etcdEndpoints": "ETCD_ENDPOINTS",
    "etcdCACertFile": "ETCD_CA_CERT_FILE",
    "etcdCertFile": "ETCD_CERT_FILE",
    "etcdKeyFile": "ETCD_KEY_FILE",
    "etcdUsername": "ETCD_USERNAME",
    "etcdPassword": "ETCD_PASSWORD",
    "kubeconfig": "KUBECONFIG",
    "k8sAPIEndpoint": "K8S_API_ENDPOINT",
    "calicoAPIGroup": "CALICO_API_GROUP",
}


@dataclass(frozen=True, slots=True)
class DatastoreConfig:
    datastore_type: str = "etcdv3"
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    kubeconfig: str = ""
    k8s_api_endpoint: str = ""
    source: str = "environment"
    api_group: str = ""  # CALICO_API_GROUP; "" = discover (Kubernetes datastore only)


def _from_values(values: Mapping[str, str], source: str) -> DatastoreConfig:
    dtype = (values.get("DATASTORE_TYPE") or "etcdv3").strip()
    if dtype not in DATASTORE_TYPES:
        raise ValidationError([ErroredField("datastoreType", "must be etcdv3 or kubernetes", dtype)],
                              context=f"datastore configuration from {source}")
    endpoints = tuple(e.strip() for e in (values.get("ETCD_ENDPOINTS") or "http://127.0.0.1:2379").split(",")
                      if e.strip())
    etcd = EtcdConfig(
        endpoints=endpoints,
        ca_cert_file=values.get("ETCD_CA_CERT_FILE", ""),
        cert_file=values.get("ETCD_CERT_FILE", ""),
        key_file=values.get("ETCD_KEY_FILE", ""),
        username=values.get("ETCD_USERNAME", ""),
        password=values.get("ETCD_PASSWORD", ""),
    )
    kubeconfig = values.get("KUBECONFIG", "")
    api_group = values.get("CALICO_API_GROUP", "").strip()
    if api_group and api_group not in ("crd.projectcalico.org/v1", "projectcalico.org/v3"):
        raise ValidationError([ErroredField("calicoAPIGroup", "must be crd.projectcalico.org/v1 or "
                                                              "projectcalico.org/v3", api_group)],
                              context=f"datastore configuration from {source}")
    return DatastoreConfig(dtype, etcd, kubeconfig, values.get("K8S_API_ENDPOINT", ""), source, api_group)


def from_environment(env: Mapping[str, str] | None = None) -> DatastoreConfig:
    env = os.environ if env is None else env
    values: dict[str, str] = {}
    for name in _SPEC_FIELDS.values():
        value = env.get(name) or (env.get(f"CALICO_{name}") if not name.startswith("CALICO_") else None)
        if value:
            values[name] = value
    return _from_values(values, "environment")


def from_file(path: str) -> DatastoreConfig:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise ValidationError([ErroredField("(document)", f"cannot parse {path}: {exc}")]) from None
    if not isinstance(doc, dict) or doc.get("kind") != "CalicoAPIConfig":
        raise ValidationError([ErroredField("kind", "must be CalicoAPIConfig", doc.get("kind") if isinstance(
            doc, dict) else None)], context=f"config file {path}")
    spec = doc.get("spec") or {}
    unknown = sorted(set(spec) - set(_SPEC_FIELDS))
    if unknown:
        raise ValidationError([ErroredField(f"spec.{k}", "unknown field") for k in unknown],
                              context=f"config file {path}")
    values = {env_name: str(spec[key]) for key, env_name in _SPEC_FIELDS.items() if spec.get(key)}
    return _from_values(values, path)


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> DatastoreConfig:
    """The file if it exists, else the environment (Calico's precedence)."""
    path = path or DEFAULT_CONFIG_PATH
    if os.path.exists(path):
        return from_file(path)
    return from_environment(env)
