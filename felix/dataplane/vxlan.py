"""The VXLAN device and its per-peer entries (``felix/dataplane/linux/vxlan_mgr.go``).

``vxlan.calico`` (VNI 4096, UDP 4789, no learning, the node's underlay address
as the local end) carries this node's VTEP address as a /32. For every other
node's VTEP: a permanent ARP entry (VTEP address -> VTEP MAC) and a permanent
FDB entry (VTEP MAC -> the node's underlay address), which is all the kernel
needs to send to ``<block> via <vtep> dev vxlan.calico onlink``. The device,
its neighbours and FDB entries are Felix's by name: what Felix does not want
on it any more is removed. With no VXLAN pool left, the device goes.
"""

from __future__ import annotations

import socket
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from felix.calc import VXLAN_DEVICE, VTEP

NUD_PERMANENT = 128
AF_BRIDGE = 7
NTF_SELF = 2  # the entry is the VXLAN device's own (``bridge fdb ... self``); replace needs it


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


class VXLANDevice:
    def __init__(self, *, vni: int = 4096, port: int = 4789, mtu: int = 1450) -> None:
        self.vni, self.port, self.mtu = vni, port, mtu

    def apply(self, local: VTEP | None, remotes: list[VTEP]) -> None:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=VXLAN_DEVICE)
            if local is None:
                if found:
                    ipr.link("del", index=found[0])
                return
            idx = self._ensure_device(ipr, found[0] if found else None, local)
            self._ensure_address(ipr, idx, local.ip)
            self._ensure_peers(ipr, idx, remotes)

    def _ensure_device(self, ipr: IPRoute, idx: int | None, local: VTEP) -> int:
        if idx is not None:
            link = ipr.get_links(idx)[0]
            info = link.get_attr("IFLA_LINKINFO")
            data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
            same = (data is not None and data.get_attr("IFLA_VXLAN_ID") == self.vni
                    and data.get_attr("IFLA_VXLAN_PORT") == self.port
                    and data.get_attr("IFLA_VXLAN_LOCAL") == local.node_ip)
            if not same:
                ipr.link("del", index=idx)
                idx = None
        if idx is None:
            ipr.link("add", ifname=VXLAN_DEVICE, kind="vxlan", vxlan_id=self.vni, vxlan_port=self.port,
                     vxlan_local=local.node_ip, vxlan_learning=0)
            idx = ipr.link_lookup(ifname=VXLAN_DEVICE)[0]
        link = ipr.get_links(idx)[0]
        if link.get_attr("IFLA_ADDRESS") != local.mac or link.get_attr("IFLA_MTU") != self.mtu:
            ipr.link("set", index=idx, address=local.mac, mtu=self.mtu)
        if not link["flags"] & 1:
            ipr.link("set", index=idx, state="up")
        return idx

    @staticmethod
    def _ensure_address(ipr: IPRoute, idx: int, ip: str) -> None:
        have = {(_attr(a, "IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
        for addr, plen in have - {(ip, 32)}:
            ipr.addr("del", index=idx, address=addr, prefixlen=plen)
        if (ip, 32) not in have:
            ipr.addr("add", index=idx, address=ip, prefixlen=32)

    @staticmethod
    def _ensure_peers(ipr: IPRoute, idx: int, remotes: list[VTEP]) -> None:
        want_arp = {r.ip: r.mac for r in remotes}
        want_fdb = {r.mac: r.node_ip for r in remotes}
        for n in ipr.get_neighbours(ifindex=idx, family=socket.AF_INET):
            dst, mac = _attr(n, "NDA_DST"), _attr(n, "NDA_LLADDR")
            if want_arp.get(dst) != mac:
                try:
                    ipr.neigh("del", ifindex=idx, dst=dst)
                except NetlinkError:
                    pass
        for f in ipr.get_neighbours(ifindex=idx, family=AF_BRIDGE):
            mac, dst = _attr(f, "NDA_LLADDR"), _attr(f, "NDA_DST")
            if mac and mac != "00:00:00:00:00:00" and want_fdb.get(mac) != dst:
                try:
                    ipr.fdb("del", ifindex=idx, lladdr=mac, dst=dst, flags=NTF_SELF)
                except NetlinkError:
                    pass
        for ip, mac in want_arp.items():
            ipr.neigh("replace", ifindex=idx, dst=ip, lladdr=mac, state=NUD_PERMANENT)
        for mac, node_ip in want_fdb.items():
            ipr.fdb("replace", ifindex=idx, lladdr=mac, dst=node_ip, state=NUD_PERMANENT, flags=NTF_SELF)
