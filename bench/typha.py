"""Bench: Typha's fan-out against a raw asyncio broadcast of the same bytes, in the same run.

Four measurements (ratios and counts, as bench/README.md asks):

1. **fan-out**: Typha's cache and server in this process, preloaded with
   ``--keys`` (10,000) NetworkPolicies, ``--clients`` (200) light protocol
   clients in a child process (they read frames, decompress, count KVs; no
   value parsing, so the clients cost the same in both runs). Timed: the
   snapshot to every client, then ``--updates`` (1,000) updates pushed one by
   one into the cache until every client has them. Baseline: a raw asyncio
   server that writes exactly the same frames (Typha's snapshot frames and
   its breadcrumbs' frames) to the same clients, ``write`` + ``drain``.
   Reported: raw time / Typha time per phase (goal >= 0.5).
2. **latency**: p99 from pushing an update to a client reading it (the value
   carries the push time), with ``--latency-clients`` (50) clients, without and
   with one client that stalls (stops reading after its snapshot). Goal:
   unchanged within noise.
3. **watchers**: a real etcd; how many watchers it serves for ``--clients``
   Felix syncers direct vs the same number through one Typha (per resource
   type: goal 1 vs 200).
4. **rss**: ``calico-typha`` as a process on etcd with ``--keys`` keys and
   ``--clients`` clients streaming: its RSS, next to an idle interpreter's.

    python3 -m bench.typha [--keys 10000] [--clients 200] [--updates 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgpack
import zstandard

from libcalico import api, syncers, syncproto
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.model import KVPair, ResourceKey
from libcalico.watching import SyncStatus, Update, UpdateType

_TS = re.compile(rb'"ts":"([0-9.]+)"')


def policy(i: int, *, ts: float = 0.0, rev: int = 1) -> Update:
    res = api.NetworkPolicy.model_validate({"metadata": {"name": f"np{i}", "namespace": f"ns{i % 50}",
                                                         "annotations": {"ts": f"{ts:.6f}"}},
                                            "spec": {"selector": f"app == 'a{i}'", "order": 10}})
    return Update(UpdateType.NEW, KVPair(ResourceKey.for_resource(res), res, str(rev)))


def free_port() -> int:
    from lab.etcd import free_port as fp
    return fp()


# --- the light clients (a child process) --------------------------------------------------------


async def light_client(port: int, expect: int, *, stall: bool, out: dict[str, Any], snapped: asyncio.Event,
                       done: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    writer.write(syncproto.encode(syncproto.ClientHello("bench", "bench", "bench", "felix")))
    await writer.drain()
    dec = zstandard.ZstdDecompressor()
    kvs = 0
    statuses = 0
    lat: list[float] = out.setdefault("latencies", [])
    while kvs < expect or not statuses:  # the snapshot ends with a status
        header = await reader.readexactly(6)
        flags, length = syncproto.parse_header(header, max_size=1 << 30)
        body = await reader.readexactly(length)
        if flags & syncproto.FLAG_ZSTD:
            body = dec.decompress(body)
        msg = msgpack.unpackb(body, raw=False)
        kind = msg["type"]
        if kind == "kvs":
            kvs += len(msg["kvs"])
            if statuses:  # an update after the snapshot: when was it pushed?
                now = time.time()
                for kv in msg["kvs"]:
                    m = _TS.search(kv[1] or b"")
                    if m:
                        lat.append(now - float(m.group(1)))
        elif kind == "sync_status":
            statuses += 1
            out["snapshots"] = out.get("snapshots", 0) + 1
            if out["snapshots"] == out["clients"]:
                snapped.set()
            if stall:
                await asyncio.Event().wait()  # stops reading, for good
        elif kind == "ping":
            writer.write(syncproto.encode(syncproto.Pong(msg["timestamp"], time.time())))
        elif kind == "server_hello":
            pass
    out["finished"] = out.get("finished", 0) + 1
    if out["finished"] == out["clients"] - out["stalled"]:
        done.set()
    writer.close()


async def clients_main(port: int, n: int, expect: int, stalled: int) -> None:
    out: dict[str, Any] = {"clients": n, "stalled": stalled}
    snapped, done = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(light_client(port, expect, stall=i < stalled, out=out, snapped=snapped, done=done))
             for i in range(n)]
    await snapped.wait()
    print(json.dumps({"snapshot_done": time.time()}), flush=True)
    await done.wait()
    lat = sorted(out.get("latencies", []))
    print(json.dumps({"done": time.time(), "p50": lat[len(lat) // 2] if lat else 0,
                      "p99": lat[int(len(lat) * 0.99)] if lat else 0, "samples": len(lat)}), flush=True)
    for t in tasks:
        t.cancel()


class Clients:
    """The child process of light clients; its two report lines."""

    def __init__(self, port: int, n: int, expect: int, stalled: int = 0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.typha", "--as-clients", str(port), str(n),
                                      str(expect), str(stalled)], stdout=subprocess.PIPE, text=True)

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        text = await asyncio.to_thread(self.proc.stdout.readline)
        if not text:
            raise RuntimeError("the client process ended")
        return dict(json.loads(text))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


# --- 1 and 2: fan-out and latency ---------------------------------------------------------------


async def typha_run(keys: int, n: int, updates: int, *, stalled: int = 0, pace: float = 0.0) -> dict[str, Any]:
    from typha import snapcache
    from typha.server import Server, ServerConfig

    cache = snapcache.Cache("felix")
    cache.on_updates([policy(i, rev=i + 1) for i in range(keys)])
    cache.on_status(SyncStatus.IN_SYNC)
    cache.publish()
    cfg = ServerConfig(host="127.0.0.1", port=free_port(), max_fall_behind=3600, new_client_fall_behind_grace=3600,
                       ping_interval=30)
    server = Server({"felix": cache}, cfg)
    serving = asyncio.create_task(server.serve())
    clients = None
    try:
        await server.wait_listening()
        start = time.time()
        clients = Clients(cfg.port, n, keys + updates, stalled)
        snap = await clients.line()
        first = cache.current
        t0 = time.time()
        for i in range(updates):
            cache.on_updates([policy(i % keys, ts=time.time(), rev=keys + i + 1)])
            cache.publish()
            if pace:
                await asyncio.sleep(pace)
            elif i % 20 == 0:
                await asyncio.sleep(0)  # as a watch stream would hand them over: some at a time
        done = await clients.line()
        frames = []
        crumb = first
        while crumb.next_now is not None:
            crumb = crumb.next_now
            frames.append(crumb.frame("zstd"))
        snapshot = await cache.snapshot("zstd")
        return {"snapshot_s": snap["snapshot_done"] - start, "updates_s": done["done"] - t0, "p50": done["p50"],
                "p99": done["p99"], "samples": done["samples"], "snapshot_frames": snapshot.frames,
                "update_frames": frames, "status": syncproto.encode(syncproto.SyncStatusMsg(SyncStatus.IN_SYNC))}
    finally:
        if clients is not None:
            clients.close()
        serving.cancel()
        with contextlib.suppress(BaseException):
            await serving


async def raw_run(n: int, expect: int, snapshot: tuple[bytes, ...], status: bytes,
                  updates: list[bytes]) -> dict[str, float]:
    writers: list[asyncio.StreamWriter] = []
    connected = asyncio.Event()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await syncproto.read_message(reader, max_size=1 << 20)  # the hello
        for f in snapshot:
            writer.write(f)
            await writer.drain()
        writer.write(status)
        await writer.drain()
        writers.append(writer)
        if len(writers) == n:
            connected.set()

    port = free_port()
    server = await asyncio.start_server(accept, "127.0.0.1", port, backlog=1024)
    clients = None
    try:
        start = time.time()
        clients = Clients(port, n, expect)
        snap = await clients.line()
        await connected.wait()
        t0 = time.time()
        for i, f in enumerate(updates):
            for w in writers:
                w.write(f)
            if i % 20 == 0:
                await asyncio.gather(*(w.drain() for w in writers))
        await asyncio.gather(*(w.drain() for w in writers))
        done = await clients.line()
        return {"snapshot_s": snap["snapshot_done"] - start, "updates_s": done["done"] - t0}
    finally:
        if clients is not None:
            clients.close()
        server.close()


# --- 3 and 4: etcd watchers, Typha's RSS --------------------------------------------------------


async def etcd_watchers(endpoint: str) -> int:
    def get() -> str:
        with urllib.request.urlopen(f"{endpoint}/metrics", timeout=10) as resp:
            return str(resp.read().decode())
    text = await asyncio.to_thread(get)
    m = re.search(r"^etcd_debugging_mvcc_watcher_total (\S+)$", text, re.M)
    return int(float(m.group(1))) if m else -1


async def settle(endpoint: str) -> int:
    last, same = -1, 0
    while same < 10:
        now = await etcd_watchers(endpoint)
        same = same + 1 if now == last else 0
        last = now
        await asyncio.sleep(0.1)
    return last


class Null:
    def on_status(self, status: SyncStatus) -> None: ...

    def on_updates(self, updates: list[Update]) -> None: ...


async def watchers_and_rss(keys: int, n: int) -> dict[str, Any]:
    from lab.etcd import EtcdServer

    etcd = EtcdServer()
    etcd.start()
    be = EtcdBackend(EtcdConfig(endpoints=(etcd.endpoint,), timeout=30))
    out: dict[str, Any] = {}
    try:
        base = await settle(etcd.endpoint)
        # Direct: n Felix syncers on the datastore (empty: watchers are what is counted here).
        direct = [syncers.felix().syncer(be, Null()) for _ in range(n)]
        types = len(syncers.felix().types)
        tasks = [asyncio.create_task(s.run()) for s in direct]
        deadline = time.monotonic() + 600
        while not all(s.status is SyncStatus.IN_SYNC for s in direct) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        say(f"{n} direct syncers in sync")
        out["direct_watchers"] = await settle(etcd.endpoint) - base
        out["direct_watchers_per_type"] = out["direct_watchers"] / types
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await settle(etcd.endpoint)
        sem = asyncio.Semaphore(16)

        async def put(i: int) -> None:
            async with sem:
                await be.apply(policy(i).kv)
        await asyncio.gather(*(put(i) for i in range(keys)))
        say(f"etcd holds {keys} policies")
        # Through Typha: the process, n light clients streaming from it.
        port, env = free_port(), {k: v for k, v in os.environ.items() if not k.startswith(("TYPHA_", "ETCD_"))}
        env.update({"TYPHA_ETCDENDPOINTS": etcd.endpoint, "TYPHA_SERVERHOST": "127.0.0.1",
                    "TYPHA_SERVERPORT": str(port), "TYPHA_LOGSEVERITYSCREEN": "Warning"})
        with tempfile.TemporaryFile() as log:
            typha = subprocess.Popen(["calico-typha"], env=env, stdout=log, stderr=subprocess.STDOUT)
            clients = None
            try:
                for _ in range(300):
                    with contextlib.suppress(OSError):
                        _, w = await asyncio.open_connection("127.0.0.1", port)
                        w.close()
                        break
                    await asyncio.sleep(0.1)
                say("Typha listening")
                clients = Clients(port, n, keys)
                await clients.line()
                say(f"{n} clients have Typha's snapshot")
                total = await settle(etcd.endpoint) - base
                typha_types = sum(len(syncers.for_typha(t).types) for t in syncers.ALL_TYPES)
                out["typha_watchers"] = total
                out["typha_watchers_per_type"] = total / typha_types
                out["typha_rss_mb"] = rss_mb(typha.pid)
                out["idle_python_rss_mb"] = idle_rss_mb()
            finally:
                if clients is not None:
                    clients.close()
                typha.send_signal(signal.SIGKILL)
                typha.wait()
    finally:
        await be.close()
        etcd.cleanup()
    return out


def say(what: str) -> None:
    print(f"bench.typha: {what}", file=sys.stderr, flush=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return -1.0


def idle_rss_mb() -> float:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        return rss_mb(p.pid)
    finally:
        p.kill()
        p.wait()


async def main(keys: int, n: int, updates: int, latency_clients: int) -> dict[str, Any]:
    say(f"fan-out: {keys} keys, {n} clients, {updates} updates")
    ours = await typha_run(keys, n, updates)
    raw = await raw_run(n, keys + updates, ours["snapshot_frames"], ours["status"], ours["update_frames"])
    say("latency")
    paced = 0.002
    calm = await typha_run(keys, latency_clients, updates, pace=paced)
    stalled = await typha_run(keys, latency_clients + 1, updates, stalled=1, pace=paced)
    out: dict[str, Any] = {
        "keys": keys, "clients": n, "updates": updates,
        "fanout": {"typha_snapshot_s": round(ours["snapshot_s"], 3), "raw_snapshot_s": round(raw["snapshot_s"], 3),
                   "snapshot_ratio": round(raw["snapshot_s"] / ours["snapshot_s"], 2),
                   "typha_updates_s": round(ours["updates_s"], 3), "raw_updates_s": round(raw["updates_s"], 3),
                   "updates_ratio": round(raw["updates_s"] / ours["updates_s"], 2)},
        "latency": {"clients": latency_clients, "pace_s": paced,
                    "p50_ms": round(calm["p50"] * 1000, 2), "p99_ms": round(calm["p99"] * 1000, 2),
                    "p50_ms_with_one_stalled": round(stalled["p50"] * 1000, 2),
                    "p99_ms_with_one_stalled": round(stalled["p99"] * 1000, 2),
                    "p99_ratio": round(stalled["p99"] / calm["p99"], 2) if calm["p99"] else None},
    }
    out["datastore"] = await watchers_and_rss(keys, n)
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--as-clients":
        asyncio.run(clients_main(*(int(a) for a in sys.argv[2:6])))
        sys.exit(0)
    p = argparse.ArgumentParser()
    p.add_argument("--keys", type=int, default=10000)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--updates", type=int, default=1000)
    p.add_argument("--latency-clients", type=int, default=50)
    a = p.parse_args()
    print(json.dumps(asyncio.run(main(a.keys, a.clients, a.updates, a.latency_clients)), indent=2))
