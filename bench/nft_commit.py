"""Bench: what one small nf_tables commit costs as the table behind it grows, verdict or not.

Why Felix's one-endpoint and one-rule changes still grow with the ruleset after Felix stopped
using libnftables for them (docs/decisions.md, "the kernel's commit"): the kernel validates the
table on commit. A new rule with an expression that has a ``validate`` operation (an immediate
verdict such as ``accept``, a jump, a verdict-map lookup: every rule of Calico's layout) marks
the table ``NFT_VALIDATE_NEED``, and the commit then walks every base chain and every chain it
reaches (``nft_table_validate`` -> ``nft_chain_validate`` in net/netfilter/nf_tables_api.c).
A rule with no such expression (``counter`` alone) commits without the walk.

In a throwaway network namespace, one table: a base chain that jumps to N chains of 3 rules
each, and one unreferenced chain ``x``. Timed, median of 15 through Felix's own netlink handle
(:class:`felix.dataplane.nfnl.NetlinkNft`, no libnftables): flush ``x`` and add one rule to it,
``counter`` alone vs ``accept``, for N = 100 and N = 10,000; the ratios 10,000 : 100 are printed.

    python3 -m bench.nft_commit [--rounds 15]     (root; run it under the netns lock)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

NS = f"pcbenchnft{os.getpid() % 100000}"
SIZES = (100, 10_000)


def _rule(chain: str, expr: list[Any]) -> Any:
    return {"add": {"rule": {"family": "ip", "table": "t", "chain": chain, "expr": expr}}}


def _mark(value: int) -> Any:
    return {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": value}}


def child(n: int, rounds: int) -> dict[str, float]:
    from felix.dataplane.nfnl import NetlinkNft

    h = NetlinkNft()
    cmds: list[Any] = [
        {"add": {"table": {"family": "ip", "name": "t"}}},
        {"add": {"chain": {"family": "ip", "table": "t", "name": "base", "type": "filter", "hook": "input",
                           "prio": 0, "policy": "accept"}}},
        {"add": {"chain": {"family": "ip", "table": "t", "name": "x"}}}]
    cmds += [{"add": {"chain": {"family": "ip", "table": "t", "name": f"c{i}"}}} for i in range(n)]
    for i in range(n):
        cmds += [_rule(f"c{i}", [_mark(j), {"accept": None}]) for j in range(3)]
        cmds.append(_rule("base", [_mark(1000 + i), {"jump": {"target": f"c{i}"}}]))
    h.run({"nftables": cmds})
    out = {}
    for name, expr in (("counter", [{"counter": None}]), ("accept", [{"accept": None}])):
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            h.run({"nftables": [{"flush": {"chain": {"family": "ip", "table": "t", "name": "x"}}}, _rule("x", expr)]})
            times.append(time.perf_counter() - started)
        out[name] = statistics.median(times) * 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rounds)))
        return
    results: dict[int, dict[str, float]] = {}
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        for n in SIZES:
            r = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-m", "bench.nft_commit", "--child", str(n),
                                "--rounds", str(args.rounds)], capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise SystemExit(f"child for {n} chains failed: {r.stderr[-2000:]}")
            results[n] = json.loads(r.stdout)
            subprocess.run(["ip", "netns", "exec", NS, "nft", "flush", "ruleset"], check=True)
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)
    small, big = SIZES
    for name in ("counter", "accept"):
        print(f"one rule ({name}) added: {results[big][name]:.2f} ms with {big:,} chains vs "
              f"{results[small][name]:.2f} ms with {small:,}: {results[big][name] / results[small][name]:.1f}x")


if __name__ == "__main__":
    main()
