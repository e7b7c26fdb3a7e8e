"""The main routing table: Felix's routes in, everything else left alone.

Reconciles against what the kernel holds on every apply (``felix/routetable``):
the kernel is read back, and a route is Felix's only when it can prove it, as
Calico's ownership policy does:

* protocol 80 (Felix's own number): blackholes, tunnel and same-subnet routes;
* protocol ``boot`` (3) on a workload interface (``cali*``) or on ``vxlan.calico``:
  workload routes (Calico's default deviceRouteProtocol; the CNI plugin uses it too).

Felix's routes that are no longer wanted are deleted; wanted ones are
replaced when they differ (a foreign route to the same prefix is taken over,
as Felix does); anything else, a route added by hand for instance, survives.
A workload route whose interface does not exist yet is left pending and
counted, not failed: the next apply after the CNI plugin made it programs it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from felix.calc import PROTO_BOOT, PROTO_FELIX, VXLAN_DEVICE, Route

MAIN_TABLE = 254
RTN_UNICAST, RTN_BLACKHOLE = 1, 6
RTNH_F_ONLINK = 4
SCOPE_UNIVERSE, SCOPE_LINK = 0, 253


@dataclass
class RouteStats:
    added: int = 0
    removed: int = 0
    pending: int = 0


def _cidr(msg: Any) -> str:
    dst = msg.get_attr("RTA_DST") or "0.0.0.0"
    return f"{dst}/{msg['dst_len']}"


class RouteTable:
    def __init__(self, interface_prefixes: tuple[str, ...] = ("cali",)) -> None:
        self.prefixes = interface_prefixes

    def _ours(self, msg: Any, links: dict[int, str]) -> bool:
        if msg["table"] != MAIN_TABLE:
            return False
        if msg["proto"] == PROTO_FELIX:
            return True
        name = links.get(msg.get_attr("RTA_OIF") or -1, "")
        return msg["proto"] == PROTO_BOOT and (name.startswith(self.prefixes) or name == VXLAN_DEVICE)

    @staticmethod
    def _matches(msg: Any, want: Route, oif: int | None) -> bool:
        if want.kind == "blackhole":
            return bool(msg["type"] == RTN_BLACKHOLE and msg["proto"] == want.proto)
        return bool(msg["type"] == RTN_UNICAST and msg["proto"] == want.proto
                    and (oif is None or msg.get_attr("RTA_OIF") == oif)
                    and (msg.get_attr("RTA_GATEWAY") or "") == want.gateway
                    and bool(msg["flags"] & RTNH_F_ONLINK) == want.onlink)

    def apply(self, desired: dict[str, Route]) -> RouteStats:
        stats = RouteStats()
        with IPRoute() as ipr:
            links = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            by_name = {name: idx for idx, name in links.items()}
            ours: dict[str, Any] = {}
            present: dict[str, Any] = {}
            for msg in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
                cidr = _cidr(msg)
                present[cidr] = msg
                if self._ours(msg, links):
                    ours[cidr] = msg
            for cidr, msg in ours.items():
                if cidr not in desired:
                    try:
                        ipr.route("del", dst=cidr, table=MAIN_TABLE, proto=msg["proto"], type=msg["type"],
                                  oif=msg.get_attr("RTA_OIF"))
                        stats.removed += 1
                    except NetlinkError as exc:
                        if exc.code != 3:  # ESRCH: gone already
                            raise
            for cidr, want in sorted(desired.items()):
                oif = by_name.get(want.ifname) if want.ifname else None
                if want.ifname and oif is None:
                    stats.pending += 1
                    continue
                current = present.get(cidr)
                if current is not None and self._matches(current, want, oif):
                    continue
                kwargs: dict[str, Any] = {"dst": cidr, "table": MAIN_TABLE, "proto": want.proto}
                if want.kind == "blackhole":
                    kwargs["type"] = "blackhole"
                else:
                    if oif is not None:
                        kwargs["oif"] = oif
                    if want.gateway:
                        kwargs["gateway"] = want.gateway
                    if want.onlink:
                        kwargs["flags"] = RTNH_F_ONLINK
                    if want.kind == "local":
                        kwargs["scope"] = SCOPE_LINK
                ipr.route("replace", **kwargs)
                stats.added += 1
        return stats
