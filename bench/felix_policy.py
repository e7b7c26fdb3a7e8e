"""Bench: Felix's policy programming, and how one change's cost depends on what is already there.

Runs Felix's calculation graph and managers in process, in a throwaway network
namespace, on the real kernel (Felix's nft handle, see --handle, and rtnetlink). Three ratios, in one run:

1. ``program``: 1,000 GlobalNetworkPolicies x 100 local endpoints programmed from
   nothing (graph, managers, one nft transaction for the ``ip`` and ``ip6`` tables) vs ``nft -f``
   of the same ruleset (``nft list table`` of what Felix programmed, loaded into empty tables), and
   vs ``nft -j -f`` of Felix's own batch (the JSON API's floor). Goal <= 1.3.
2. ``endpoint``: one endpoint added (its route and its chains in the kernel, from the
   update to the end of the apply), median over rounds, with 10,000 endpoints in place
   vs with 100. Goal <= 1.5.
3. ``rule``: one policy's rule changed, median over rounds, with 1,000 policies in
   place vs with 10. Goal <= 1.5.

    python3 -m bench.felix_policy [--rounds 15] [--endpoints 10000] [--handle netlink|libnftables]

The datastore (etcd, the watch, decoding into models) is left out: its cost per update does not
depend on the number of endpoints or policies; what is measured is Felix's own part. Each apply's
transaction (the handle's encoding, the kernel's commit) is timed apart, so the ratios of Felix's own
part and of the transaction are reported too (docs/decisions.md, "libnftables' cache").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

NS = f"pcbenchpol{os.getpid() % 100000}"


def _wep(i: int, app: str) -> Any:
    from libcalico import api

    return api.WorkloadEndpoint.model_validate({
        "metadata": {"name": f"w{i}", "namespace": "default",
                     "labels": {"projectcalico.org/namespace": "default", "app": app, "role": f"r{i % 7}"}},
        "spec": {"node": "bench", "orchestrator": "k8s", "pod": f"w{i}", "endpoint": "eth0",
                 "interfaceName": f"calib{i:05d}", "ipNetworks": [f"10.{100 + i // 62500}.{i // 250 % 250}.{i % 250}/32"],
                 "profiles": ["kns.default"]}})


def _gnp(i: int, port: int = 80) -> Any:
    from libcalico import api

    return api.GlobalNetworkPolicy.model_validate({"metadata": {"name": f"p{i:04d}"}, "spec": {
        "order": i, "selector": f"app == 'a{i % 10}'", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": f"role == 'r{i % 7}'"},
                     "destination": {"ports": [port]}}]}})


HANDLE = "netlink"   # --handle: Felix's default (nf_tables netlink written by Felix) or "libnftables"


class TimedNft:
    """Felix's nft handle, timing each transaction: what the kernel (and libnftables) cost, apart from
    Felix's own part. ``--handle netlink`` (the default, Felix's own): :class:`felix.dataplane.nfnl.NetlinkNft`;
    ``--handle libnftables``: :class:`felix.dataplane.nft.LibNft` alone, as before issue 14's netlink handle."""

    def __init__(self) -> None:
        from felix.dataplane import nfnl, nft

        self.inner: Any = nfnl.NetlinkNft() if HANDLE == "netlink" else nft.LibNft()
        self.seconds = 0.0
        self.last: Any = None

    def run(self, batch: Any) -> Any:
        self.last = batch
        t = time.perf_counter()
        try:
            return self.inner.run(batch)
        finally:
            self.seconds += time.perf_counter() - t


class Felix:
    """The graph and the managers, wired as felix.daemon wires them."""

    def __init__(self) -> None:
        from felix import graph
        from felix.dataplane import manager
        from felix.dataplane.ipip import IPIPDevice
        from felix.dataplane.routes import RouteTable
        from felix.dataplane.vxlan import VXLANDevice

        self.pending: list[Any] = []
        self.graph = graph.CalcGraph("bench", self.pending.append)
        self.nft = TimedNft()
        self.dp, self.table, self.managers = manager.build(
            nft_handle=self.nft, route_table=RouteTable(("cali",)), vxlan=VXLANDevice(), ipip=IPIPDevice(),
            legacy_cleanup=False)
        from libcalico import api

        self.graph.on_update("Profile", "", "kns.default", api.Profile.model_validate({
            "metadata": {"name": "kns.default"}, "spec": {"ingress": [{"action": "Allow"}],
                                                         "egress": [{"action": "Allow"}]}}))

    def apply(self) -> None:
        msgs, self.pending[:] = list(self.pending), []
        for m in msgs:
            self.dp.on_update(m)
        failed = self.dp.apply()
        assert not failed, failed


def _links(start: int, n: int) -> None:
    """n workload interfaces (bridges: any kernel has them; a route only needs the device to exist)."""
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
        for i in range(start, start + n):
            f.write(f"link add calib{i:05d} type bridge\nlink set calib{i:05d} up\n")
    subprocess.run(["ip", "-batch", f.name], check=True)
    os.unlink(f.name)


def _unlink(n: int) -> None:
    subprocess.run(["ip", "-batch", "-"], input="".join(f"link del calib{i:05d}\n" for i in range(n)), text=True,
                   capture_output=True)


def _reset() -> None:
    subprocess.run(["nft", "delete", "table", "ip", "calico"], capture_output=True)
    subprocess.run(["nft", "delete", "table", "ip6", "calico"], capture_output=True)
    subprocess.run(["ip", "route", "flush", "proto", "boot"], capture_output=True)


def bench_program(n_policies: int = 1000, n_endpoints: int = 100) -> dict[str, float]:
    _links(0, n_endpoints)
    f = Felix()
    # The resources as the syncer hands them over (decoded: the datastore's part is left out).
    gnps = [_gnp(i) for i in range(n_policies)]
    weps = [_wep(i, f"a{i % 10}") for i in range(n_endpoints)]
    t = time.perf_counter()
    for i, gnp in enumerate(gnps):
        f.graph.on_update("GlobalNetworkPolicy", "", f"p{i:04d}", gnp)
    for i, wep in enumerate(weps):
        f.graph.on_update("WorkloadEndpoint", "default", f"w{i}", wep)
    f.apply()
    ours = time.perf_counter() - t
    transaction = f.nft.seconds
    text = "".join(subprocess.run(["nft", "list", "table", fam, "calico"], check=True, capture_output=True,
                                  text=True).stdout for fam in ("ip", "ip6"))
    rules = text.count("comment \"cali:")
    _reset()
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as fh:
        fh.write(text)
    t = time.perf_counter()
    subprocess.run(["nft", "-f", fh.name], check=True)
    baseline = time.perf_counter() - t
    os.unlink(fh.name)
    _reset()
    # The JSON API's own floor: Felix's very batch through ``nft -j -f`` (parsing JSON, not text).
    from felix.dataplane import nft

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        fh.write(nft.encode_batch(f.nft.last))
    t = time.perf_counter()
    subprocess.run(["nft", "-j", "-f", fh.name], check=True)
    json_baseline = time.perf_counter() - t
    os.unlink(fh.name)
    _reset()
    _unlink(n_endpoints)
    return {"ours_s": ours, "transaction_s": transaction, "nft_f_s": baseline, "nft_j_f_s": json_baseline,
            "ratio": ours / baseline, "json_floor_ratio": json_baseline / baseline, "rules": rules,
            "fallback_batches": getattr(f.nft.inner, "fallbacks", 0)}


def bench_endpoint(n: int, rounds: int) -> tuple[float, float]:
    _reset()
    _links(0, n + rounds)
    f = Felix()
    for i in range(20):
        f.graph.on_update("GlobalNetworkPolicy", "", f"p{i:04d}", _gnp(i))
    for i in range(n):
        f.graph.on_update("WorkloadEndpoint", "default", f"w{i}", _wep(i, f"a{i % 10}"))
    f.apply()
    times, nft_times = [], []
    for r in range(rounds):
        i = n + r
        wep = _wep(i, f"a{i % 10}")
        f.nft.seconds = 0.0
        t = time.perf_counter()
        f.graph.on_update("WorkloadEndpoint", "default", f"w{i}", wep)
        f.apply()
        times.append(time.perf_counter() - t)
        nft_times.append(f.nft.seconds)
    _reset()
    subprocess.run(["ip", "-batch", "-"], input="".join(f"link del calib{i:05d}\n" for i in range(n + rounds)),
                   text=True, capture_output=True)
    return statistics.median(times), statistics.median(nft_times)


def bench_rule(n_policies: int, rounds: int) -> tuple[float, float]:
    _reset()
    _links(0, 100)
    f = Felix()
    for i in range(n_policies):
        f.graph.on_update("GlobalNetworkPolicy", "", f"p{i:04d}", _gnp(i))
    for i in range(100):
        f.graph.on_update("WorkloadEndpoint", "default", f"w{i}", _wep(i, f"a{i % 10}"))
    f.apply()
    times, nft_times = [], []
    for r in range(rounds):
        gnp = _gnp(3, port=1000 + r)
        f.nft.seconds = 0.0
        t = time.perf_counter()
        f.graph.on_update("GlobalNetworkPolicy", "", "p0003", gnp)
        f.apply()
        times.append(time.perf_counter() - t)
        nft_times.append(f.nft.seconds)
    _reset()
    subprocess.run(["ip", "-batch", "-"], input="".join(f"link del calib{i:05d}\n" for i in range(100)),
                   text=True, capture_output=True)
    return statistics.median(times), statistics.median(nft_times)


def child(rounds: int, endpoints: int) -> dict[str, Any]:
    out: dict[str, Any] = {"program": bench_program()}
    (small, small_nft), (large, large_nft) = bench_endpoint(100, rounds), bench_endpoint(endpoints, rounds)
    out["endpoint"] = {"median_100_s": small, f"median_{endpoints}_s": large, "ratio": large / small,
                       "transaction_100_s": small_nft, f"transaction_{endpoints}_s": large_nft,
                       "transaction_ratio": large_nft / small_nft,
                       "felix_ratio": (large - large_nft) / (small - small_nft)}
    (few, few_nft), (many, many_nft) = bench_rule(10, rounds), bench_rule(1000, rounds)
    out["rule"] = {"median_10_s": few, "median_1000_s": many, "ratio": many / few,
                   "transaction_10_s": few_nft, "transaction_1000_s": many_nft,
                   "transaction_ratio": many_nft / few_nft, "felix_ratio": (many - many_nft) / (few - few_nft)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--endpoints", type=int, default=10000)
    p.add_argument("--handle", choices=("netlink", "libnftables"), default="netlink",
                   help="Felix's nft handle: its own nf_tables netlink messages (default) or libnftables")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global HANDLE
    HANDLE = args.handle
    if args.child:
        print(json.dumps(child(args.rounds, args.endpoints)))
        return 0
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        r = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-m", "bench.felix_policy", "--child",
                            "--rounds", str(args.rounds), "--endpoints", str(args.endpoints),
                            "--handle", args.handle],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stderr)
            return r.returncode
        result = json.loads(r.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)
    print(json.dumps(result, indent=2))
    prog, ep, rule = result["program"], result["endpoint"], result["rule"]
    print(f"handle: {args.handle}")
    print(f"program 1000 policies x 100 endpoints: ours {prog['ours_s']:.3f} s (of which the "
          f"transaction {prog['transaction_s']:.3f} s), nft -f {prog['nft_f_s']:.3f} s, nft -j -f of Felix's batch "
          f"{prog['nft_j_f_s']:.3f} s, "
          f"ratio {prog['ratio']:.2f} (goal <= 1.3; {prog['rules']} rules)")
    print(f"one endpoint added: ratio {ep['ratio']:.2f} at {args.endpoints} vs 100 (goal <= 1.5); "
          f"transaction {ep['transaction_ratio']:.2f}, Felix's own part {ep['felix_ratio']:.2f}")
    print(f"one rule changed: ratio {rule['ratio']:.2f} at 1000 vs 10 policies (goal <= 1.5); "
          f"transaction {rule['transaction_ratio']:.2f}, Felix's own part {rule['felix_ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
