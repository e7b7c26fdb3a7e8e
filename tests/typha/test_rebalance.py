"""Connection limits and rebalancing as Calico's: 3 Typhas, 600 light clients that all start on one.

Also Typha discovery from the ``calico-typha`` Service's EndpointSlices (the mock Kubernetes API).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path
from typing import Any

import pytest

from libcalico import syncers, typha_client
from libcalico.backend.memory import MemoryBackend
from libcalico.typha_client import TyphaClient, TyphaConfig
from tests.libcalico.test_backend_contract import pool
from tests.typha.helpers import Recorder, cancel_all, running_typha, wait_for
from typha import rebalance
from typha.config import settings


def limits(**env: str) -> Any:
    return settings({f"TYPHA_{k.upper()}": v for k, v in env.items()})


class TestTheLimit:
    def test_a_lone_typha_takes_the_upper_limit(self) -> None:
        assert rebalance.max_conn_limit(limits(), typhas=1, nodes=500, syncer_types=4) == (10000, "lone typha")

    def test_several_share_the_nodes_with_one_typha_spare_and_20_percent_headroom(self) -> None:
        assert rebalance.max_conn_limit(limits(), typhas=3, nodes=1000, syncer_types=4) == (2404, "fraction+20%")

    def test_the_configured_bounds_hold(self) -> None:
        assert rebalance.max_conn_limit(limits(), typhas=3, nodes=75, syncer_types=4) == (400, "configured lower limit")
        assert rebalance.max_conn_limit(limits(maxconnectionsupperlimit="1000"), typhas=3, nodes=1000,
                                        syncer_types=4) == (1000, "configured upper limit")


class FakeCounts:
    def __init__(self, typhas: int, nodes: int) -> None:
        self.n_typhas, self.n_nodes = typhas, nodes

    async def typhas(self) -> int:
        return self.n_typhas

    async def nodes(self) -> int:
        return self.n_nodes


class Light:
    """A light client's consumer: only the state."""

    def __init__(self) -> None:
        self.state: dict[Any, Any] = {}
        self.in_sync = False

    def on_status(self, status: Any) -> None:
        self.in_sync = status.value == "in-sync"

    def on_updates(self, updates: list[Any]) -> None:
        for u in updates:
            if u.kv.value is None:
                self.state.pop(u.key, None)
            else:
                self.state[u.key] = u.kv.value


async def test_600_clients_spread_to_an_equal_share_over_3_typhas_and_move_when_one_stops() -> None:
    be = MemoryBackend()
    for i in range(5):
        await be.create(pool(f"p{i}", f"10.{i}.0.0/16"))
    # 75 nodes over 3 Typhas: Calico's candidate is 4 * (1 + 75 * 1.2 / 2) = 184, below a lower limit of
    # 220; over 2 Typhas it is 364: room for all 600. Why 220 (an equal share, 200, plus 10%): the limits
    # alone then hold every share within [600 - 2 * 220, 220] = [160, 220], inside 20% of an equal share,
    # whatever the random reconnections do. With 240 they held it only to [120, 240]: the 360 clients Typha 0
    # shed split at random between the other two (below their limit, so never rebalanced), and about one run
    # in thirty stuck at e.g. [240, 206, 154].
    env = {"maxconnectionslowerlimit": "220", "connectiondropintervalsecs": "0.005",
           "k8sservicepollintervalsecs": "0.05", "connectionrebalancingmode": "kubernetes",
           "serverpingintervalsecs": "30"}
    counts = FakeCounts(typhas=3, nodes=75)
    async with contextlib.AsyncExitStack() as stack:
        typhas = [await stack.enter_async_context(running_typha(be, **env)) for _ in range(3)]
        polls = [asyncio.create_task(rebalance.poll(t.cfg, counts, t.server, syncer_types=4)) for t in typhas]
        live = [t.server.port for t in typhas]
        first_time: set[int] = set()

        def discover_for(i: int) -> Any:
            async def discover() -> list[str]:
                if i not in first_time:  # everyone's first connection goes to the first Typha
                    first_time.add(i)
                    return [f"127.0.0.1:{typhas[0].server.port}"]
                addrs = [f"127.0.0.1:{p}" for p in live]
                random.shuffle(addrs)
                return addrs
            return discover

        consumers = [Light() for _ in range(600)]
        made = [TyphaClient(TyphaConfig(addr="unused:1"), "felix", c, hostname=f"n{i}", discover=discover_for(i))
                for i, c in enumerate(consumers)]
        tasks = [asyncio.create_task(c.run()) for c in made]
        try:
            def shares() -> list[int]:
                return [len(t.server.connections) for t in typhas if not t.server.shutting_down]

            try:
                # Every client in sync too: the last one moved may still be taking its snapshot. The deadline is
                # for a loaded machine (the whole suite on 2 cores); a quiet one converges in seconds.
                await wait_for(lambda: sum(shares()) == 600 and all(160 <= n <= 240 for n in shares())
                               and all(c.in_sync for c in consumers), 180,
                               "connections within 20% of an equal share, every client in sync")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: shares {shares()}, limits {[t.server.max_conns for t in typhas]}, "
                                     f"in sync {sum(c.in_sync for c in consumers)}") from None
            # One Typha stops (its pod goes): its endpoint leaves the Service, it sheds its clients.
            counts.n_typhas = 2
            live.remove(typhas[1].server.port)
            await wait_for(lambda: all(t.server.max_conns == 364 for t in (typhas[0], typhas[2])), 60, "new limits")
            shed = asyncio.create_task(typhas[1].server.shut_down_gracefully())
            for i in range(10):  # updates while the clients move
                await be.apply(pool(f"p{i % 5}", f"10.{i % 5}.0.0/16", blockSize=20 + i))
            await shed
            expected = {kv.key: kv.value for o in syncers.felix().types for kv in (await be.list(o)).items}
            await wait_for(lambda: len(typhas[0].server.connections) + len(typhas[2].server.connections) == 600
                           and all(c.state == expected and c.in_sync for c in consumers), 180,
                           "every client on the other two, up to date")
            assert max(len(typhas[0].server.connections), len(typhas[2].server.connections)) <= 364
        finally:
            await cancel_all(tasks + polls)


async def test_clients_find_typha_through_the_services_endpoint_slices(kube_api: Any) -> None:
    from tests.kube_api import Served

    api = kube_api.api
    api.serve(Served("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, "endpointslice"))
    served = next(s for s in api.served.values() if s.plural == "endpointslices")
    api._create(served, "kube-system", {
        "metadata": {"name": "calico-typha-abc", "labels": {"kubernetes.io/service-name": "calico-typha"}},
        "addressType": "IPv4", "ports": [{"name": "calico-typha", "port": 5473}, {"name": "metrics", "port": 9093}],
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "nodeName": "other"},
                      {"addresses": ["10.0.0.2"], "conditions": {"ready": True}, "nodeName": "me"},
                      {"addresses": ["10.0.0.3"], "conditions": {"ready": False}, "nodeName": "other"}]})
    api._create(served, "kube-system", {
        "metadata": {"name": "something-else", "labels": {"kubernetes.io/service-name": "other"}},
        "addressType": "IPv4", "ports": [{"name": "calico-typha", "port": 1}],
        "endpoints": [{"addresses": ["10.9.9.9"]}]})
    found = await typha_client.discover_kubernetes(node="me", kubeconfig=str(kube_api.kubeconfig))
    assert found == ["10.0.0.2:5473", "10.0.0.1:5473"]  # this node's first, not-ready left out
    with pytest.raises(ValueError, match="missing Kubernetes service IP or port"):
        await typha_client.discover_kubernetes(service="nothing", kubeconfig=str(kube_api.kubeconfig))
    cfg = typha_client.TyphaConfig.from_environment(("FELIX_",), {"FELIX_TYPHAK8SSERVICENAME": "calico-typha"})
    assert cfg.enabled and cfg.k8s_namespace == "kube-system" and not cfg.addr
    assert Path(kube_api.kubeconfig).exists()
