"""Shared fixtures: a real etcd per session, a clean keyspace per test, and backends.

``backend`` is parametrised over every backend that must pass the datastore
contract: the real etcd and the in-memory one. The Kubernetes backend joins the
parameter list with its issue.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.backend.memory import MemoryBackend
from tests.etcd_server import EtcdServer


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    server = EtcdServer()
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


@pytest.fixture(params=["etcd", "memory"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[EtcdBackend | MemoryBackend]:
    if request.param == "etcd":
        server: EtcdServer = request.getfixturevalue("etcd")
        be: EtcdBackend | MemoryBackend = EtcdBackend(EtcdConfig(endpoints=(server.endpoint,), timeout=5))
    else:
        be = MemoryBackend()
    try:
        yield be
    finally:
        await be.close()


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
