"""Shared fixtures: a real etcd per session, a clean keyspace per test, and backends.

``backend`` is parametrised over every backend that must pass the datastore
contract: the real etcd, the in-memory one, and the Kubernetes backend against
the mock API server kubemock (:mod:`tests.kube_api`) with our CRDs installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from pathlib import Path

from libcalico.backend.api import Backend
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.backend.kubernetes import KubeConfig, KubernetesBackend
from libcalico.backend.memory import MemoryBackend
from tests.etcd_server import EtcdServer
from tests.kube_api import RunningAPI, running_api

pytest_plugins = ["tests.vm_tier"]

REPO = Path(__file__).resolve().parent.parent
CRDS_V1 = REPO / "crds" / "v1"
CRDS_V3 = REPO / "crds" / "v3"

# How a test compacts a backend's history: etcd and memory can do it themselves; for the
# Kubernetes backend, the API server behind it does (registered by the backend fixture).
KUBE_APIS: dict[int, RunningAPI] = {}


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    server = EtcdServer(die_with_parent=True)  # started from the main thread: a killed pytest takes it along
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def wipe(endpoint: str) -> None:
    """Remove every key: each test starts from an empty datastore."""
    subprocess.run(["etcdctl", f"--endpoints={endpoint}", "del", "--prefix", ""], check=True,
                   env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, timeout=30)


@pytest.fixture
def etcd(etcd_server: EtcdServer) -> EtcdServer:
    wipe(etcd_server.endpoint)
    return etcd_server


@pytest.fixture
def etcd_env(etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> dict[str, str]:
    """Environment for a calicoctl run against the test etcd (and no config file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "DATASTORE_", "CALICO_"))}
    env.update({"ETCD_ENDPOINTS": etcd.endpoint, "DATASTORE_TYPE": "etcdv3"})
    for k in ("ETCD_ENDPOINTS", "DATASTORE_TYPE"):
        monkeypatch.setenv(k, env[k])
    return env


@pytest.fixture
async def kube_api(tmp_path: Path) -> AsyncIterator[RunningAPI]:
    """A Kubernetes API server (kubemock) with the crd.projectcalico.org/v1 CRDs installed."""
    async with running_api(tmp_path, CRDS_V1) as running:
        yield running


@pytest.fixture
async def kube_api_v3(tmp_path: Path) -> AsyncIterator[RunningAPI]:
    """The same, in Calico's no-API-server mode: the projectcalico.org/v3 CRDs only."""
    async with running_api(tmp_path, CRDS_V3) as running:
        yield running


@pytest.fixture(params=["etcd", "memory", "kubernetes"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    be: Backend
    stack = contextlib.AsyncExitStack()
    if request.param == "etcd":
        server: EtcdServer = request.getfixturevalue("etcd")
        be = EtcdBackend(EtcdConfig(endpoints=(server.endpoint,), timeout=5))
    elif request.param == "memory":
        be = MemoryBackend()
    else:
        api = await stack.enter_async_context(running_api(request.getfixturevalue("tmp_path"), CRDS_V1))
        be = KubernetesBackend(KubeConfig(kubeconfig=str(api.kubeconfig)))
        KUBE_APIS[id(be)] = api
    try:
        yield be
    finally:
        KUBE_APIS.pop(id(be), None)
        await be.close()
        await stack.aclose()


def _library_task(task: asyncio.Task[object]) -> bool:
    """Tasks that aetcd/gRPC keep for their channel; closed with the channel, not ours to police."""
    code = getattr(task.get_coro(), "cr_code", None)
    filename = code.co_filename if code is not None else ""
    return "/aetcd/" in filename or "/grpc/" in filename


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves its own asyncio tasks running."""
    before = set(asyncio.all_tasks())
    yield
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
              and not _library_task(t)]
    for t in leaked:
        t.cancel()
    assert not leaked, f"test leaked tasks: {leaked}"
