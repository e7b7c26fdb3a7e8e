"""``tunl0``: the IPIP device, when a pool uses IPIP (``felix/dataplane/linux/ipip_mgr.go``).

The device is the kernel's own fallback tunnel, which appears in every network
namespace once the ``ipip`` module is loaded; Felix brings it up, sets its MTU
and gives it the node's IPIP tunnel address (/32). Without the module the
device cannot exist: :meth:`IPIPDevice.apply` then reports that plainly
instead of failing every apply, and Felix says so in its logs and readiness.
Routes via ``tunl0`` wait (as pending) until the device exists.
"""

from __future__ import annotations

import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from felix.calc import IPIP_DEVICE

UNAVAILABLE = "IPIP is configured but this kernel has no ipip module: tunl0 cannot be created"


class IPIPDevice:
    def __init__(self, *, mtu: int = 1480) -> None:
        self.mtu = mtu

    def apply(self, enabled: bool, address: str) -> str:
        """Make tunl0 up with ``address`` when IPIP is ``enabled`` (else its addresses go).

        Return a problem to report, or ""."""
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=IPIP_DEVICE)
            if not enabled:
                if found:
                    for a in ipr.get_addr(index=found[0], family=socket.AF_INET):
                        ipr.addr("del", index=found[0], address=a.get_attr("IFA_ADDRESS"), prefixlen=a["prefixlen"])
                return ""
            if not found:
                try:
                    ipr.link("add", ifname=IPIP_DEVICE, kind="ipip")
                except NetlinkError:
                    return UNAVAILABLE
                found = ipr.link_lookup(ifname=IPIP_DEVICE)
                if not found:
                    return UNAVAILABLE
            idx = found[0]
            ipr.link("set", index=idx, mtu=self.mtu, state="up")
            if not address:
                return ""  # the tunnel address is on its way (IPAM)
            have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
            for addr, plen in have - {(address, 32)}:
                ipr.addr("del", index=idx, address=addr, prefixlen=plen)
            if (address, 32) not in have:
                ipr.addr("add", index=idx, address=address, prefixlen=32)
        return ""

