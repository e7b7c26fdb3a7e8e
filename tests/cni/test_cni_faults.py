"""calico-ipam under faults: ADDs racing for one container, and kill -9 at random points, against a real etcd.

The plugins run as children of a fork server (:mod:`tests.cni.cni_forkserver`):
real invocations (environment, stdin, stdout, exit code) that skip Python's
start-up, so that many of them start at the same instant and a random kill
lands in the invocation's work, not in an import.

The kill test drives 200 invocations, ADDs and then DELs of pods whose
endpoint was deleted, each SIGKILLed after a random delay (a seeded RNG,
from nothing to a little longer than a run takes, so some finish). Afterwards
the datastore must hold exactly what was not cleaned up: an address for
every pod that is still running (its ADD answered), and leaked addresses only
for pods that are gone (an ADD killed after it allocated, a DEL killed before
it released). ``calicoctl ipam check`` must report exactly those leaks,
``calicoctl ipam release --from-report`` must leave none, and no address is
ever held by two handles or answered to two pods.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from libcalico import api
from libcalico.backend.etcdv3 import EtcdBackend
from libcalico.ipam import IPAM
from libcalico.model import KVPair, ResourceKey
from libcalico.names import WorkloadEndpointIdentifiers
from tests.etcd_server import EtcdServer
from tests.cni.test_cni_processes import cni_env, netconf
from tests.libcalico.test_ipam_processes import ROOT, calicoctl, seed_pool

RUNS = 200
ADDS = 150  # then RUNS - ADDS DELs of pods that came up (about half the ADDs survive)
PARALLEL = 4  # invocations in flight at once, on one node: they share its lock and its block


@dataclass
class ForkServer:
    proc: subprocess.Popen[str]
    dir: Path

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        line = stdout.readline()
        assert line, "the fork server exited"
        reply: dict[str, Any] = json.loads(line)
        return reply

    def start(self, env: dict[str, str], conf: dict[str, Any], name: str) -> int:
        stdin = self.dir / f"{name}.in"
        stdin.write_text(json.dumps(conf))
        pid: int = self._ask({"run": {"plugin": "calico-ipam", "env": env, "stdin": str(stdin),
                                      "stdout": str(self.dir / f"{name}.out")}})["pid"]
        return pid

    def wait(self, pid: int) -> int:
        status: int = self._ask({"wait": pid})["status"]
        return status

    def output(self, name: str) -> dict[str, Any] | None:
        text = (self.dir / f"{name}.out").read_text()
        return json.loads(text) if text.strip() else None


@contextlib.contextmanager
def fork_server(tmp_path: Path) -> Iterator[ForkServer]:
    d = tmp_path / "runs"
    d.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "tests.cni.cni_forkserver"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        yield ForkServer(proc, d)
    finally:
        stdin: IO[str] | None = proc.stdin
        if stdin is not None:
            stdin.close()  # the server exits at end of input; its children are all waited for by then
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def handle(container: str) -> str:
    return f"k8s-pod-network.{container}"


async def allocations(be: EtcdBackend) -> dict[str, str]:
    """Every allocated address and the handle that holds it."""
    out: dict[str, str] = {}
    for b in await IPAM(be).blocks():
        for a in b.allocations:
            assert a.ip not in out, f"{a.ip} allocated twice"
            out[a.ip] = a.handle_id or ""
    return out


async def test_adds_racing_for_one_container_from_one_instant_all_answer_one_address(
        etcd: EtcdServer, tmp_path: Path) -> None:
    be = await seed_pool(etcd.endpoint)
    try:
        with fork_server(tmp_path) as fs:
            conf = netconf(tmp_path)
            for c in ("race-a", "race-b", "race-c"):
                pids = [fs.start(cni_env(etcd.endpoint, container=c), conf, f"{c}-{i}") for i in range(8)]
                assert [fs.wait(p) for p in pids] == [0] * 8
                replies = [fs.output(f"{c}-{i}") for i in range(8)]
                assert all(r == replies[0] for r in replies), replies
                assert replies[0] is not None
                [ip] = [e["address"].removesuffix("/32") for e in replies[0]["ips"]]
                assert await IPAM(be).ips_by_handle(handle(c)) == [ip]
        held = await allocations(be)
        assert sorted(held.values()) == sorted(handle(c) for c in ("race-a", "race-b", "race-c"))
    finally:
        await be.close()


async def create_endpoint(be: EtcdBackend, container: str, ip: str) -> ResourceKey:
    name = WorkloadEndpointIdentifiers("worker1", "k8s", container, "eth0").name()
    wep = api.WorkloadEndpoint.model_validate({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"node": "worker1", "orchestrator": "k8s", "pod": container, "endpoint": "eth0",
                 "containerID": container, "ipNetworks": [f"{ip}/32"]}})
    key = ResourceKey.for_resource(wep)
    await be.create(KVPair(key, wep))
    return key


async def test_kill_9_at_random_points_leaves_exactly_the_leaks_ipam_check_reports_and_release_repairs(
        etcd: EtcdServer, etcd_env: dict[str, str], tmp_path: Path) -> None:
    rng = random.Random(18)
    be = await seed_pool(etcd.endpoint)
    info = api.ClusterInformation.model_validate({"metadata": {"name": "default"},
                                                  "spec": {"clusterGUID": "abc", "datastoreReady": True}})
    await be.create(KVPair(ResourceKey.for_resource(info), info))
    conf = netconf(tmp_path)
    running: dict[str, str] = {}  # container -> the address its ADD answered (its endpoint exists)
    endpoints: dict[str, ResourceKey] = {}
    answered: dict[str, str] = {}  # every address ever answered -> the container it was answered to
    killed = {"ADD": 0, "DEL": 0}
    try:
        with fork_server(tmp_path) as fs:
            def timed(command: str, container: str) -> float:  # one unkilled run: how long a run takes
                t = time.monotonic()
                pid = fs.start(cni_env(etcd.endpoint, command, container), conf, f"calibrate-{command}")
                assert fs.wait(pid) == 0, fs.output(f"calibrate-{command}")
                return time.monotonic() - t

            timed("ADD", "calibrate")  # claims the node's block
            span = {"ADD": timed("ADD", "calibrate2"), "DEL": timed("DEL", "calibrate2")}
            timed("DEL", "calibrate")

            async def batch(runs: list[tuple[str, str]]) -> None:
                started = []
                for i, (command, container) in enumerate(runs):
                    name = f"{command}-{container}"
                    # Runs of a batch queue on the node's lock: the last ends after about PARALLEL spans.
                    delay = rng.uniform(0, 1.5 * PARALLEL * span[command])
                    pid = fs.start(cni_env(etcd.endpoint, command, container), conf, name)
                    started.append((time.monotonic() + delay, pid, command, container, name))
                for at, pid, _, _, _ in sorted(started):
                    time.sleep(max(0.0, at - time.monotonic()))  # the fault's random moment, not a wait
                    os.kill(pid, signal.SIGKILL)  # a zombie until waited for: the pid is still ours
                for _, pid, command, container, name in started:
                    status = fs.wait(pid)
                    if status == -signal.SIGKILL:
                        killed[command] += 1
                        continue
                    out = fs.output(name)
                    assert status == 0, (name, status, out)
                    if command == "ADD":
                        assert out is not None
                        [ip] = [e["address"].removesuffix("/32") for e in out["ips"]]
                        assert answered.setdefault(ip, container) == container, f"{ip} answered twice"
                        running[container] = ip
                        endpoints[container] = await create_endpoint(be, container, ip)

            adds = [("ADD", f"pod{i}") for i in range(ADDS)]
            for i in range(0, len(adds), PARALLEL):
                await batch(adds[i:i + PARALLEL])
            assert len(running) >= (RUNS - ADDS), "too few ADDs finished to delete some"
            doomed = rng.sample(sorted(running), RUNS - ADDS)
            for c in doomed:  # the pod is gone: its endpoint first, then the runtime's DEL
                await be.delete(endpoints.pop(c))
                del running[c]
            dels = [("DEL", c) for c in doomed]
            for i in range(0, len(dels), PARALLEL):
                await batch(dels[i:i + PARALLEL])

        held = await allocations(be)
        assert len(set(held.values())) == len(held), "a handle holds more than one address"
        live = {handle(c) for c in running}
        for c, ip in running.items():  # every running pod still holds the one address it was answered
            assert held.get(ip) == handle(c), (c, ip, held.get(ip))
        assert sorted(h for h in held.values() if h in live) == sorted(live)
        leaked = {ip for ip, h in held.items() if h not in live}
        assert all(h.removeprefix("k8s-pod-network.").startswith("pod") for h in held.values())
        assert killed["ADD"] > 10 and killed["DEL"] > 5, killed  # the seed kills plenty of each
        assert 0 < len(leaked) <= killed["ADD"] + killed["DEL"]

        report = tmp_path / "report.json"
        r = calicoctl(etcd_env, "ipam", "check", "--show-problem-ips", "-o", str(report))
        assert r.returncode == 0, r.stderr
        assert f"Found {len(leaked)} IPs that are allocated in IPAM but not actually in use.\n" in r.stdout
        data = json.loads(report.read_text())
        assert {ip for ip, allocs in data["allocations"].items() if not allocs[0]["inUse"]} == leaked
        assert all(len(allocs) == 1 for allocs in data["allocations"].values())

        r = calicoctl(etcd_env, "ipam", "release", "--from-report", str(report), "--force")
        assert r.returncode == 0, r.stderr
        assert f"Released {len(leaked)} IPs successfully" in r.stdout
        r = calicoctl(etcd_env, "ipam", "check")
        assert r.stdout.endswith("Check complete; found 0 problems.\n"), r.stdout
        assert await allocations(be) == {ip: handle(c) for c, ip in running.items()}
    finally:
        await be.close()
