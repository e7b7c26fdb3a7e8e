"""Datastore backends behind one contract (:mod:`libcalico.backend.api`).

``connect(config)`` picks the backend for a :class:`DatastoreConfig`:
``etcdv3`` or ``kubernetes`` (KUBECONFIG, else the in-cluster service account).
"""

from __future__ import annotations

from libcalico.backend.api import Backend, EventType, WatchEvent
from libcalico.backend.config import DatastoreConfig
from libcalico.errors import OperationNotSupported


def connect(config: DatastoreConfig) -> Backend:
    """A backend for ``config``. Connections open lazily, on first use."""
    if config.datastore_type == "etcdv3":
        from libcalico.backend.etcdv3 import EtcdBackend

        return EtcdBackend(config.etcd)
    if config.datastore_type == "kubernetes":
        from libcalico.backend.kubernetes import KubeConfig, KubernetesBackend

        return KubernetesBackend(KubeConfig(config.kubeconfig, config.k8s_api_endpoint, config.api_group))
    raise OperationNotSupported("connect", f"datastore type {config.datastore_type!r}",
                                "use DATASTORE_TYPE=etcdv3 or kubernetes")


__all__ = ["Backend", "DatastoreConfig", "EventType", "WatchEvent", "connect"]
