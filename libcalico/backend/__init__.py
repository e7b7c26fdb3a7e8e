"""Datastore backends behind one contract (:mod:`libcalico.backend.api`).

``connect(config)`` picks the backend for a :class:`DatastoreConfig`:
``etcdv3`` today; ``kubernetes`` arrives with its own issue and plugs in here.
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
    raise OperationNotSupported(
        "connect", f"datastore type {config.datastore_type!r}",
        "the Kubernetes datastore backend is not available yet; use DATASTORE_TYPE=etcdv3")


__all__ = ["Backend", "DatastoreConfig", "EventType", "WatchEvent", "connect"]
