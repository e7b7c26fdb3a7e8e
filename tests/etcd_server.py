"""A real etcd for tests: the lab's (:mod:`lab.etcd`), which the tests share."""

from lab.etcd import EtcdServer, free_port

__all__ = ["EtcdServer", "free_port"]
