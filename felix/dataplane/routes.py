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

from dataclasses import dataclass

from pyroute2 import IPRoute

from felix.calc import PROTO_BOOT, PROTO_FELIX, VXLAN_DEVICE, Route
from felix.dataplane import rtnl

MAIN_TABLE = 254
RTN_UNICAST, RTN_BLACKHOLE = 1, 6
RTNH_F_ONLINK = 4
SCOPE_UNIVERSE, SCOPE_LINK = 0, 253


@dataclass
class RouteStats:
    added: int = 0
    removed: int = 0
    pending: int = 0


class RouteError(RuntimeError):
    pass


class RouteTable:
    def __init__(self, interface_prefixes: tuple[str, ...] = ("cali",)) -> None:
        self.prefixes = interface_prefixes

    def _ours(self, r: rtnl.KernelRoute, links: dict[int, str]) -> bool:
        if r.proto == PROTO_FELIX:
            return True
        name = links.get(r.oif, "")
        return r.proto == PROTO_BOOT and (name.startswith(self.prefixes) or name == VXLAN_DEVICE)

    @staticmethod
    def _op(want: Route, oif: int) -> rtnl.RouteOp:
        if want.kind == "blackhole":
            return rtnl.RouteOp("replace", want.dst, type=RTN_BLACKHOLE, proto=want.proto)
        return rtnl.RouteOp("replace", want.dst, type=RTN_UNICAST, proto=want.proto,
                            scope=SCOPE_LINK if want.kind == "local" else SCOPE_UNIVERSE,
                            flags=RTNH_F_ONLINK if want.onlink else 0, oif=oif, gateway=want.gateway)

    @staticmethod
    def _same(have: rtnl.KernelRoute, want: rtnl.RouteOp) -> bool:
        if want.type == RTN_BLACKHOLE:
            return have.type == RTN_BLACKHOLE and have.proto == want.proto
        return (have.type == want.type and have.proto == want.proto and have.gateway == want.gateway
                and (not want.oif or have.oif == want.oif)
                and bool(have.flags & RTNH_F_ONLINK) == bool(want.flags & RTNH_F_ONLINK))

    def apply(self, desired: dict[str, Route]) -> RouteStats:
        stats = RouteStats()
        with IPRoute() as ipr:
            links = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        by_name = {name: idx for idx, name in links.items()}
        with rtnl.RouteSocket() as sock:
            present = {r.dst: r for r in sock.dump(MAIN_TABLE)}
            ops: list[rtnl.RouteOp] = []
            for dst, r in present.items():
                if dst not in desired and self._ours(r, links):
                    ops.append(rtnl.RouteOp("delete", dst, type=r.type, proto=r.proto, oif=r.oif,
                                            scope=rtnl.RT_SCOPE_NOWHERE))
                    stats.removed += 1
            for dst, want in sorted(desired.items()):
                oif = by_name.get(want.ifname, 0) if want.ifname else 0
                if want.ifname and not oif:
                    stats.pending += 1
                    continue
                op = self._op(want, oif)
                have = present.get(dst)
                if have is not None and self._same(have, op):
                    continue
                ops.append(op)
                stats.added += 1
            failed = sock.write(ops, MAIN_TABLE)
        if failed:
            sample = ", ".join(f"{d} (errno {e})" for d, e in list(failed.items())[:5])
            raise RouteError(f"the kernel refused {len(failed)} route change(s): {sample}")
        return stats
