"""Bench: Felix's route programming vs ``ip -batch`` of the same routes, in the same run.

In a throwaway network namespace with one workload interface (a veth named
``cali…``), program N ``/32 dev cali… scope link proto boot`` routes:
baseline ``ip -batch`` (one netlink request per route, as iproute2 sends
them), then Felix's RouteTable.apply from an empty table (it also reads the
table back first, as every apply does). Then an apply with nothing to change
(the steady-state resync). Reports seconds and the ratio ours/baseline.

    python3 -m bench.felix_routes [--n 10000]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import time

NS = f"pcbench{os.getpid() % 100000}"
IFACE = "calibench0001"


def in_ns(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", NS, *args], check=True, capture_output=True, text=True,
                          **kw)  # type: ignore[call-overload]


def child(n: int) -> dict[str, float]:
    """Runs inside the namespace (``ip netns exec``), so pyroute2 talks to that namespace's kernel."""
    from felix.calc import Route
    from felix.dataplane.routes import RouteTable

    ips = [str(ipaddress.ip_address("10.100.0.0") + i) for i in range(n)]
    desired = {f"{ip}/32": Route(f"{ip}/32", "local", IFACE) for ip in ips}
    table = RouteTable(("cali",))
    t = time.perf_counter()
    stats = table.apply(desired)
    ours = time.perf_counter() - t
    assert stats.added == n, stats
    t = time.perf_counter()
    stats = table.apply(desired)
    steady = time.perf_counter() - t
    assert stats.added == 0 and stats.removed == 0
    return {"ours_s": ours, "steady_s": steady}


def main(n: int) -> dict[str, float]:
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        in_ns(["ip", "link", "add", IFACE, "type", "veth", "peer", "name", "benchpeer0"])
        in_ns(["ip", "link", "set", IFACE, "up"])
        in_ns(["ip", "link", "set", "benchpeer0", "up"])
        lines = "".join(f"route replace {ipaddress.ip_address('10.100.0.0') + i}/32 dev {IFACE} scope link "
                        f"proto boot\n" for i in range(n))
        t = time.perf_counter()
        in_ns(["ip", "-batch", "-"], input=lines)
        baseline = time.perf_counter() - t
        in_ns(["ip", "route", "flush", "dev", IFACE])
        out = in_ns([sys.executable, "-m", "bench.felix_routes", "--child", "--n", str(n)],
                    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
        res = json.loads(out)
        count = len(in_ns(["ip", "route", "show", "dev", IFACE]).stdout.splitlines())
        assert count == n, count
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    return {"routes": n, "ip_batch_s": round(baseline, 3), "felix_s": round(res["ours_s"], 3),
            "felix_vs_ip_batch_ratio": round(res["ours_s"] / baseline, 2),
            "felix_steady_state_resync_s": round(res["steady_s"], 3)}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--child", action="store_true")
    a = p.parse_args()
    print(json.dumps(child(a.n) if a.child else main(a.n), indent=2))
