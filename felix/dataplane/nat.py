"""natOutgoing with nftables: one table Felix owns, rewritten whole in one transaction.

Traffic from a pool with ``natOutgoing`` to a destination outside every Calico
pool is masqueraded to the node's address (Calico's ``cali-nat-outgoing``).
The table ``ip calico-nat`` is Felix's by name: each apply sends, in one
``nft -j -f -`` batch, "add table; delete table; add table, sets, chain, rule",
so the kernel switches from the old ruleset to the new one atomically and
nothing else's tables are touched. With no natOutgoing pool the table goes.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any

TABLE = "calico-nat"
FAMILY = "ip"


def _set(name: str, cidrs: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"add": {"set": {"family": FAMILY, "table": TABLE, "name": name,
                                                  "type": "ipv4_addr", "flags": ["interval"]}}}]
    if cidrs:
        elems = [{"prefix": {"addr": str(n.network_address), "len": n.prefixlen}}
                 for n in (ipaddress.ip_network(c) for c in cidrs)]
        out.append({"add": {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": elems}}})
    return out


def ruleset(nat_sources: list[str], all_pools: list[str]) -> dict[str, Any]:
    """The nft JSON batch that makes Felix's NAT table exactly this."""
    table = {"family": FAMILY, "name": TABLE}
    cmds: list[dict[str, Any]] = [{"add": {"table": table}}, {"delete": {"table": table}}]
    if nat_sources:
        cmds.append({"add": {"table": table}})
        cmds += _set("nat-sources", nat_sources) + _set("all-pools", all_pools)
        cmds.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": "nat-outgoing", "type": "nat",
                                       "hook": "postrouting", "prio": 100, "policy": "accept"}}})
        cmds.append({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": "nat-outgoing", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@nat-sources"}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@all-pools"}},
            {"masquerade": None}]}}})
    return {"nftables": cmds}


class NATOutgoing:
    def __init__(self) -> None:
        self._last: dict[str, Any] | None = None

    def apply(self, nat_sources: list[str], all_pools: list[str], *, force: bool = False) -> None:
        batch = ruleset(nat_sources, all_pools)
        if batch == self._last and not force:
            return
        r = subprocess.run(["nft", "-j", "-f", "-"], input=json.dumps(batch), capture_output=True, text=True,
                           timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"nft rejected the natOutgoing table: {r.stderr.strip()}")
        self._last = batch
