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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

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


def ifindex(name: str) -> int:
    """The interface's index in this namespace, 0 when it does not exist (one ioctl, not a link dump)."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def _ifname(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return ""


class RouteHandle(Protocol):
    """What the route table needs of the kernel: rtnl.RouteSocket's dump and bulk write."""

    def dump(self, table: int = MAIN_TABLE) -> list[rtnl.KernelRoute]: ...

    def write(self, ops: list[rtnl.RouteOp], table: int = MAIN_TABLE) -> dict[str, int]: ...

    def close(self) -> None: ...


class Links(Protocol):
    def index(self, name: str) -> int: ...

    def name(self, index: int) -> str: ...


class KernelLinks:
    """Interface names and indexes of this network namespace."""

    def index(self, name: str) -> int:
        return ifindex(name)

    def name(self, index: int) -> str:
        return _ifname(index)


class RouteTable:
    """The main table, reconciled in full against a dump (the resync), or route by route."""

    def __init__(self, interface_prefixes: tuple[str, ...] = ("cali",), *,
                 handle: Callable[[], RouteHandle] = rtnl.RouteSocket, links: Links | None = None) -> None:
        self.prefixes = interface_prefixes
        self.handle = handle
        self.links = links or KernelLinks()

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
        sock = self.handle()
        try:
            present = {r.dst: r for r in sock.dump(MAIN_TABLE)}
            links = {oif: self.links.name(oif) for oif in {r.oif for r in present.values()} if oif}
            by_name = {name: self.links.index(name) for name in {w.ifname for w in desired.values()} if name}
            by_name = {n: i for n, i in by_name.items() if i}
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
        finally:
            sock.close()
        if failed:
            sample = ", ".join(f"{d} (errno {e})" for d, e in list(failed.items())[:5])
            raise RouteError(f"the kernel refused {len(failed)} route change(s): {sample}")
        return stats

    def apply_changes(self, desired: dict[str, Route], dsts: set[str],
                      programmed: dict[str, Route]) -> tuple[RouteStats, set[str]]:
        """Write only ``dsts``: replace the wanted ones, delete the ones Felix programmed and no longer
        wants (by destination and Felix's protocol, so a foreign route is never hit). No dump: this is the
        per-change path; :meth:`apply` is the resync. Returns the stats and the destinations left pending
        (their interface does not exist yet). ``programmed`` is updated in place."""
        stats = RouteStats()
        pending: set[str] = set()
        ops: list[rtnl.RouteOp] = []
        for dst in sorted(dsts):
            want = desired.get(dst)
            if want is None:
                had = programmed.pop(dst, None)
                if had is not None:
                    ops.append(rtnl.RouteOp("delete", dst, type=RTN_BLACKHOLE if had.kind == "blackhole" else
                                            RTN_UNICAST, proto=had.proto, scope=rtnl.RT_SCOPE_NOWHERE))
                    stats.removed += 1
                continue
            oif = self.links.index(want.ifname) if want.ifname else 0
            if want.ifname and not oif:
                pending.add(dst)
                stats.pending += 1
                continue
            ops.append(self._op(want, oif))
            programmed[dst] = want
            stats.added += 1
        if ops:
            sock = self.handle()
            try:
                failed = sock.write(ops, MAIN_TABLE)
            finally:
                sock.close()
            if failed:
                sample = ", ".join(f"{d} (errno {e})" for d, e in list(failed.items())[:5])
                raise RouteError(f"the kernel refused {len(failed)} route change(s): {sample}")
        return stats, pending
