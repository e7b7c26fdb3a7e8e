"""The Typha daemon: one pipeline per syncer type (upstream syncer -> snapshot cache), one server.

As Calico's ``typha/pkg/daemon``: for each of ``felix``, ``bgp``,
``tunnel-ip-allocation`` and ``node-status`` an upstream syncer (the
library's definition, cluster-wide: :func:`libcalico.syncers.for_typha`)
feeds that type's :class:`~typha.snapcache.Cache`; the
:class:`~typha.server.Server` serves every cache on one port (5473). So the
datastore sees one watcher per resource type per Typha, however many Felix
and confd instances are behind it.

Typha runs under the one daemon runner (:mod:`libcalico.daemon`): each
syncer, each cache loop and the server are roots (if one ends, Typha exits
and is restarted). On SIGTERM the server sheds its clients gradually
(``TYPHA_SHUTDOWNTIMEOUTSECS``) before the process exits. Health on
``TYPHA_HEALTHPORT`` (9098; ready when every cache is in sync), metrics on
``TYPHA_PROMETHEUSMETRICSPORT`` (9093), each when enabled, as Calico's (the
runner serves :mod:`typha.metrics` as the Go client would: :mod:`libcalico.metrics`).
"""

from __future__ import annotations

import logging
import os

from libcalico import backend, daemon, syncers
from libcalico.backend.config import DatastoreConfig
from libcalico.watching import Syncer
from typha import metrics, rebalance, snapcache
from typha.config import TyphaSettings
from typha.server import Server

log = logging.getLogger("typha")


class Typha:
    """The pipelines and the server, without the process around them (tests build it in-process too)."""

    def __init__(self, be: backend.Backend, cfg: TyphaSettings, *, health: daemon.Health | None = None) -> None:
        self.be = be
        self.cfg = cfg
        self.caches: dict[str, snapcache.Cache] = {}
        self.syncers: dict[str, Syncer] = {}
        for syncer_type in syncers.ALL_TYPES:
            cache = snapcache.Cache(syncer_type, max_batch=cfg.snapshot_cache_max_batch_size,
                                    max_message_size=cfg.server_max_message_size, health=health)
            self.caches[syncer_type] = cache
            self.syncers[syncer_type] = syncers.for_typha(syncer_type).syncer(be, cache)
        self.server = Server(self.caches, cfg.server_config(), health=health)

    def roots(self) -> list[tuple[str, daemon.Cleanup]]:
        out: list[tuple[str, daemon.Cleanup]] = []
        for t in syncers.ALL_TYPES:
            out.append((f"{t} syncer", self.syncers[t].run))
            out.append((f"{t} cache", self.caches[t].run))
        out.append(("server", self.server.serve))
        return out


def build(cfg: TyphaSettings, ds: DatastoreConfig) -> daemon.Daemon:
    """Typha under the one daemon runner."""
    d = daemon.Daemon("typha", graceful_timeout=cfg.shutdown_timeout_secs + 5)
    be = backend.connect(ds)
    typha = Typha(be, cfg, health=d.health)
    for name, fn in typha.roots():
        d.root(name, fn)
    if cfg.connection_rebalancing_mode == "kubernetes":
        counts = rebalance.KubernetesCounts(cfg, os.environ.get("KUBECONFIG", ""))
        d.root("k8s-poll", lambda: rebalance.poll(cfg, counts, typha.server, syncer_types=len(typha.caches)))
    d.cleanup("datastore", be.close)
    if cfg.health_enabled:
        d.serve_health(cfg.health_host, cfg.health_port)
    if cfg.prometheus_metrics_enabled:
        d.serve_metrics(cfg.prometheus_metrics_host or "0.0.0.0", cfg.prometheus_metrics_port, metrics.REGISTRY)
    log.info("Typha starting: syncer types %s, port %d", ", ".join(syncers.ALL_TYPES), typha.server.config.port)
    return d


__all__ = ["Typha", "build"]
