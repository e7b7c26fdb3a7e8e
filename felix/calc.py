"""Felix's calculation: the datastore's current state in, the node's desired dataplane out.

Pure and synchronous (Calico's calc graph, ``felix/design/calc-graph.md``): no
I/O, no clocks, ``None`` means absent. :class:`ClusterState` holds what the
syncer delivered; :func:`calculate` turns it into :class:`Desired`, which the
dataplane managers make true. The dependency order (a VTEP before the routes
through it) is handled by the managers' apply order, not here.

What it computes, as Calico's Felix does:

* a ``<ip>/32`` route ``scope link`` to each local workload's ``cali*`` interface;
* a blackhole route for each IPAM block affine to this node, where the pool's
  cluster routes are Felix's (BIRD's static protocol does it where they are BIRD's);
* for each block affine to another node, in a pool with VXLAN ``Always`` (or
  ``CrossSubnet`` and the node in another subnet): a route via that node's VTEP
  address ``dev vxlan.calico onlink``, plus the VTEP's ARP and FDB entries;
  with ``CrossSubnet`` and the same subnet: a plain route via the node's IP;
* IPIP pools the same way through ``tunl0`` (``via <node ip> onlink``), always
  (stock BIRD cannot route through tunl0: see :func:`calculate`);
* pools with no encapsulation: routes via the node's IP when
  ``programClusterRoutes`` gives them to Felix, else none (BIRD learns them);
* natOutgoing: the pools to masquerade from, and all pool CIDRs (not masqueraded to).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

from libcalico import api
from libcalico.api.ipam import IPAMBlock

VXLAN_DEVICE = "vxlan.calico"
IPIP_DEVICE = "tunl0"
PROTO_FELIX = 80   # Felix's own route protocol (dataplanedefs.DefaultRouteProto)
PROTO_BOOT = 3     # workload routes, as Felix's default deviceRouteProtocol


@dataclass(frozen=True, order=True)
class Route:
    dst: str                    # CIDR
    kind: str                   # "local" | "blackhole" | "vxlan" | "ipip" | "noencap"
    ifname: str = ""            # "" for blackhole (and for noencap: the kernel picks)
    gateway: str = ""
    onlink: bool = False

    @property
    def proto(self) -> int:
        return PROTO_BOOT if self.kind == "local" else PROTO_FELIX


@dataclass(frozen=True, order=True)
class VTEP:
    node: str
    ip: str          # the node's VXLAN tunnel address
    mac: str
    node_ip: str     # the underlay address VXLAN packets go to


@dataclass
class Desired:
    routes: dict[str, Route] = field(default_factory=dict)
    vxlan: VTEP | None = None                 # this node's VTEP, when any pool uses VXLAN
    remote_vteps: list[VTEP] = field(default_factory=list)
    ipip: bool = False                        # some pool uses IPIP
    ipip_address: str = ""                    # this node's tunl0 address (once allocated)
    nat_sources: list[str] = field(default_factory=list)   # pools with natOutgoing
    all_pools: list[str] = field(default_factory=list)
    local_endpoints: int = 0


@dataclass
class ClusterState:
    """What the syncer has delivered so far, by name."""

    pools: dict[str, api.IPPool] = field(default_factory=dict)
    nodes: dict[str, api.Node] = field(default_factory=dict)
    blocks: dict[str, IPAMBlock] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], api.WorkloadEndpoint] = field(default_factory=dict)


def vxlan_mac(node: str) -> str:
    """A stable, locally administered MAC for a node's VTEP (used until the Node records one)."""
    digest = hashlib.sha256(f"vxlan:{node}".encode()).digest()
    return ":".join(f"{b:02x}" for b in bytes([0x66]) + digest[:5])


def _node_ip(node: api.Node | None) -> tuple[str, ipaddress.IPv4Network | None]:
    if node is None or node.spec.bgp is None or not node.spec.bgp.ipv4_address:
        return "", None
    iface = ipaddress.ip_interface(node.spec.bgp.ipv4_address)
    return str(iface.ip), iface.network  # type: ignore[return-value]


def _vtep(name: str, node: api.Node | None) -> VTEP | None:
    if node is None or not node.spec.ipv4_vxlan_tunnel_addr:
        return None
    ip, _ = _node_ip(node)
    if not ip:
        return None
    return VTEP(name, node.spec.ipv4_vxlan_tunnel_addr, node.spec.vxlan_tunnel_mac_addr or vxlan_mac(name), ip)


def calculate(state: ClusterState, me: str, *, interface_prefix: str = "cali",
              program_cluster_routes: str = "EnabledIPIPOnly") -> Desired:
    """The desired dataplane of node ``me`` for ``state``.

    ``program_cluster_routes`` is FelixConfiguration's field: VXLAN pools' routes are
    always Felix's; unencapsulated pools' when it is Enabled or EnabledNoEncapOnly, else
    BIRD's. IPIP pools' are always Felix's too: in Calico, Disabled and EnabledNoEncapOnly
    leave them to BIRD, whose fork sets ``krt_tunnel``; stock BIRD 1.6 cannot route
    through tunl0, so here confd never accepts them and Felix keeps them (see
    ``confd.render.cluster_route_policy``).
    """
    program_noencap = program_cluster_routes in ("Enabled", "EnabledNoEncapOnly")
    out = Desired()
    pools = [p for p in state.pools.values() if ipaddress.ip_network(p.spec.cidr).version == 4]
    nets = [(ipaddress.ip_network(p.spec.cidr), p) for p in pools]
    out.all_pools = sorted(str(n) for n, _ in nets)
    out.nat_sources = sorted(str(n) for n, p in nets if p.spec.nat_outgoing and not p.spec.disabled)

    my_node = state.nodes.get(me)
    _, my_subnet = _node_ip(my_node)
    if any(p.spec.vxlan != "Never" for p in pools):
        out.vxlan = _vtep(me, my_node)
    out.ipip = any(p.spec.ipip != "Never" for p in pools)
    if out.ipip and my_node is not None and my_node.spec.bgp:
        out.ipip_address = my_node.spec.bgp.ipv4_ipip_tunnel_addr

    # Local workloads.
    for (_, _), wep in sorted(state.endpoints.items()):
        if wep.spec.node != me or not wep.spec.interface_name.startswith(interface_prefix):
            continue
        out.local_endpoints += 1
        for net in wep.spec.ip_networks:
            n = ipaddress.ip_network(net, strict=False)
            if n.version == 4:
                out.routes[str(n)] = Route(str(n), "local", wep.spec.interface_name)

    # Blocks: ours become blackholes, others' become routes through the tunnel (or underlay).
    for block in sorted(state.blocks.values(), key=lambda b: b.spec.cidr):
        cidr = ipaddress.ip_network(block.spec.cidr)
        if cidr.version != 4:
            continue
        pool = next((p for n, p in nets if cidr.subnet_of(n)), None)  # type: ignore[arg-type]
        owner = (block.spec.affinity or "").removeprefix("host:") if (block.spec.affinity or "").startswith(
            "host:") else ""
        if not owner or pool is None:
            continue
        if owner == me:
            # The blackhole goes with the cluster routes: where BIRD owns a pool's routes, its
            # static protocol installs the blackhole (the seed's "blackhole ... proto bird").
            if _felix_owns(pool, program_noencap):
                out.routes[str(cidr)] = Route(str(cidr), "blackhole")
            continue
        route = _remote_route(str(cidr), pool, owner, state.nodes.get(owner), my_subnet,
                              program_noencap=program_noencap)
        if route is not None:
            out.routes[str(cidr)] = route

    # VTEPs of the other nodes, when this node does VXLAN.
    if out.vxlan is not None:
        for name, node in sorted(state.nodes.items()):
            if name == me:
                continue
            vtep = _vtep(name, node)
            if vtep is not None:
                out.remote_vteps.append(vtep)
    # A VXLAN route needs its VTEP (and this node needs its own): drop the others until then.
    vteps = {v.ip for v in out.remote_vteps} if out.vxlan is not None else set()
    out.routes = {d: r for d, r in out.routes.items() if r.kind != "vxlan" or r.gateway in vteps}
    return out


def _felix_owns(pool: api.IPPool, program_noencap: bool) -> bool:
    """Whether this pool's cluster routes (and its blocks' blackholes) are Felix's or BIRD's."""
    if pool.spec.vxlan != "Never" or pool.spec.ipip != "Never":
        return True
    return program_noencap


def _remote_route(cidr: str, pool: api.IPPool, owner: str, node: api.Node | None,
                  my_subnet: ipaddress.IPv4Network | None, *, program_noencap: bool) -> Route | None:
    node_ip, _ = _node_ip(node)
    if not node_ip:
        return None
    same_subnet = my_subnet is not None and ipaddress.ip_address(node_ip) in my_subnet
    vxlan, ipip = pool.spec.vxlan, pool.spec.ipip
    if vxlan == "Always" or (vxlan == "CrossSubnet" and not same_subnet):
        vtep = _vtep(owner, node)
        return Route(cidr, "vxlan", VXLAN_DEVICE, vtep.ip, onlink=True) if vtep else None
    if vxlan == "CrossSubnet":
        return Route(cidr, "noencap", "", node_ip)
    if ipip == "Always" or (ipip == "CrossSubnet" and not same_subnet):
        return Route(cidr, "ipip", IPIP_DEVICE, node_ip, onlink=True)
    if ipip == "CrossSubnet":
        return Route(cidr, "noencap", "", node_ip)
    return Route(cidr, "noencap", "", node_ip) if program_noencap else None
