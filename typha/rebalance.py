"""Connection rebalancing as Calico's (``typha/pkg/k8s/rebalance.go``): each Typha works out its share.

With ``TYPHA_CONNECTIONREBALANCINGMODE=kubernetes`` every Typha polls, every
``TYPHA_K8SSERVICEPOLLINTERVALSECS``, how many Typhas its Service has (ready
endpoints of the ``calico-typha`` port) and how many Nodes the cluster has,
and sets its connection limit to::

    syncer types * (1 + nodes * 120% / (typhas - 1))

bounded by ``TYPHA_MAXCONNECTIONSLOWERLIMIT`` below and
``TYPHA_MAXCONNECTIONSUPPERLIMIT`` above (a lone Typha takes the upper
limit). "typhas - 1" leaves room for one Typha to go (a rolling upgrade)
without the others being over their limit; the server's governor drops one
random connection per ``TYPHA_CONNECTIONDROPINTERVALSECS`` while above it,
and a dropped client reconnects to a Typha its discovery picks at random, so
the load spreads out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from libcalico import typha_client
from typha.config import TyphaSettings

log = logging.getLogger(__name__)

HEADROOM_PERCENT = 20


def max_conn_limit(cfg: TyphaSettings, *, typhas: int, nodes: int, syncer_types: int) -> tuple[int, str]:
    """Calico's CalculateMaxConnLimit: (limit, why)."""
    if typhas <= 1:
        return cfg.max_connections_upper_limit, "lone typha"
    target, reason = cfg.max_connections_lower_limit, "configured lower limit"
    candidate = syncer_types * (1 + nodes * (100 + HEADROOM_PERCENT) // (typhas - 1) // 100)
    if candidate > target:
        target, reason = candidate, "fraction+20%"
    if target > cfg.max_connections_upper_limit:
        target, reason = cfg.max_connections_upper_limit, "configured upper limit"
    return target, reason


class Counts(Protocol):
    async def typhas(self) -> int: ...

    async def nodes(self) -> int: ...


class KubernetesCounts:
    """The two numbers from the Kubernetes API (KUBECONFIG, or in-cluster)."""

    def __init__(self, cfg: TyphaSettings, kubeconfig: str = "") -> None:
        self.cfg, self.kubeconfig = cfg, kubeconfig

    async def typhas(self) -> int:
        return len(await typha_client.discover_kubernetes(
            namespace=self.cfg.k8s_namespace, service=self.cfg.k8s_service_name, port_name=self.cfg.k8s_port_name,
            kubeconfig=self.kubeconfig))

    async def nodes(self) -> int:
        import kubernetes_asyncio.client as k8s

        async with typha_client.kube_api(self.kubeconfig) as api:
            return len((await k8s.CoreV1Api(api).list_node()).items or [])


class MaxConns(Protocol):
    def set_max_conns(self, n: int) -> None: ...


async def poll(cfg: TyphaSettings, counts: Counts, server: MaxConns, *, syncer_types: int) -> None:
    """Calico's PollK8sForConnectionLimit, until cancelled."""
    active = cfg.max_connections_upper_limit
    while True:
        await asyncio.sleep(cfg.k8s_service_poll_interval_secs)
        try:
            typhas, nodes = await counts.typhas(), await counts.nodes()
            target, reason = max_conn_limit(cfg, typhas=typhas, nodes=nodes, syncer_types=syncer_types)
        except Exception as exc:  # the API server's error: Calico falls back to the upper limit
            log.warning("failed to count Typhas and nodes: %s", exc)
            typhas = nodes = 0
            target, reason = cfg.max_connections_upper_limit, "error"
        if target != active:
            log.info("calculated new connection limit %d (%s): %d Typhas, %d nodes, %d syncer types", target, reason,
                     typhas, nodes, syncer_types)
            server.set_max_conns(target)
            active = target
