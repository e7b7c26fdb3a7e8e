"""The pod's interface, wired the way Calico's CNI plugin wires it (pyroute2, real kernel).

Host side: ``cali<11 hex>``, MAC ``ee:ee:ee:ee:ee:ee``, no address, proxy ARP
on (so it answers for 169.254.1.1), forwarding on, and a ``<pod ip>/32`` route
``scope link`` to it, so the pod is reachable before Felix runs. Container
side: ``eth0`` with the pod's /32, a link route to 169.254.1.1 and the default
route via it (onlink). Teardown removes the pair (one end takes the other)
and with it the route.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

HOST_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY = "169.254.1.1"
SCOPE_LINK = 253
ENOENT, EEXIST = 2, 17


@contextlib.contextmanager
def _netns_fd(path: str) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def _netns(path: str) -> NetNS:
    return NetNS(path if path.startswith("/") else f"/var/run/netns/{path}")


def _sysctl(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def setup(host_if: str, netns: str, ifname: str, ips: list[str], mtu: int) -> dict[str, Any]:
    """Create the pair and configure both sides; return the CNI interfaces list entries."""
    temp = f"tmp{host_if[4:]}"[:15]
    with IPRoute() as ipr:
        stale = ipr.link_lookup(ifname=host_if)
        if stale:
            ipr.link("del", index=stale[0])
        with _netns_fd(netns) as fd:
            ipr.link("add", ifname=host_if, kind="veth", peer={"ifname": temp, "net_ns_fd": fd})
        try:
            idx = ipr.link_lookup(ifname=host_if)[0]
            ipr.link("set", index=idx, address=HOST_MAC, mtu=mtu)
            for path, value in ((f"/proc/sys/net/ipv4/conf/{host_if}/proxy_arp", "1"),
                                (f"/proc/sys/net/ipv4/neigh/{host_if}/proxy_delay", "0"),
                                (f"/proc/sys/net/ipv4/conf/{host_if}/forwarding", "1")):
                _sysctl(path, value)
            ipr.link("set", index=idx, state="up")
            with _netns(netns) as ns:
                cidx = ns.link_lookup(ifname=temp)[0]
                ns.link("set", index=cidx, ifname=ifname, mtu=mtu)
                ns.link("set", index=cidx, state="up")
                for ip in ips:
                    ns.addr("add", index=cidx, address=ip, prefixlen=32)
                ns.route("add", dst=f"{GATEWAY}/32", oif=cidx, scope=SCOPE_LINK)
                ns.route("add", dst="0.0.0.0/0", gateway=GATEWAY, oif=cidx)
                container_mac = ns.get_links(cidx)[0].get_attr("IFLA_ADDRESS")
            for ip in ips:
                ipr.route("replace", dst=f"{ip}/32", oif=idx, scope=SCOPE_LINK)
        except BaseException:
            with contextlib.suppress(NetlinkError, IndexError):
                ipr.link("del", index=ipr.link_lookup(ifname=host_if)[0])
            raise
    return {"host": {"name": host_if, "mac": HOST_MAC},
            "container": {"name": ifname, "mac": container_mac, "sandbox": netns}}


def teardown(host_if: str, netns: str, ifname: str) -> None:
    """Remove the pod's interface; nothing to do when it (or its namespace) is already gone."""
    if netns and os.path.exists(netns if netns.startswith("/") else f"/var/run/netns/{netns}"):
        with contextlib.suppress(NetlinkError, IndexError, OSError), _netns(netns) as ns:
            found = ns.link_lookup(ifname=ifname)
            if found:
                ns.link("del", index=found[0])
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=host_if)
        if found:
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=found[0])


def container_mac(netns: str, ifname: str) -> str:
    with _netns(netns) as ns:
        mac: str = ns.get_links(ns.link_lookup(ifname=ifname)[0])[0].get_attr("IFLA_ADDRESS")
        return mac


def check(host_if: str, netns: str, ifname: str, ips: list[str]) -> str:
    """Why the pod's wiring is not as ADD left it, or ""."""
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=host_if):
            return f"host interface {host_if} does not exist"
    with _netns(netns) as ns:
        found = ns.link_lookup(ifname=ifname)
        if not found:
            return f"interface {ifname} does not exist in {netns}"
        have = {a.get_attr("IFA_ADDRESS") for a in ns.get_addr(index=found[0], family=2)}
        missing = [ip for ip in ips if ip not in have]
        if missing:
            return f"interface {ifname} lacks {', '.join(missing)}"
    return ""
