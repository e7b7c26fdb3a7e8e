"""BIRD's configuration for one node, rendered from the datastore as Calico's confd renders it.

Pure functions: :class:`Inputs` (what the syncer delivered) in, file name ->
text out, for ``bird.cfg``, ``bird_ipam.cfg``, ``bird_aggr.cfg`` and their
``bird6`` twins (always all six, as Calico writes them). This is a port of
Calico's confd: its templates (``node/filesystem/etc/calico/confd/templates``),
``getBGPConfig`` (``confd/pkg/backends/calico/bgp_processor.go``), the peerings
its client computes from BGPPeers (``client.go``, ``updatePeersV1``: global
peers first, node-specific ones that do not duplicate them, then the reverse
peerings that make Calico-node peerings symmetric) and the BGPFilter functions
(``template_funcs.go``). Calico's own confd test suite is the measure
(tests/confd_suite, tests/confd/test_confd_suite.py): statements, their order and
values are Calico's; the comments are ours.

The one documented difference: stock BIRD 1.6 lacks the ``krt_tunnel``
attribute of Calico's fork, so routes through tunl0 are Felix's job here,
whatever ``programClusterRoutes`` says (see :func:`cluster_route_policy`).
Calico's Kubernetes-only inputs (Service routes from its route generator,
``localWorkloadSelector`` peers) are not rendered from the etcd datastore,
as in Calico; service ranges of BGPConfiguration are advertised as static
blackholes (see :func:`_service_cidrs`).

Nothing a user wrote reaches BIRD's config as raw text. Each value is one of:

* an address or a network: parsed (the models refuse IPv6 zones) and written
  back from the parsed value (:func:`_addr`, :func:`_net`);
* a protocol or function name: made from a parsed address (``.``/``:`` replaced
  by ``_``, ``_port_<n>`` added) or from a BGPFilter name (a DNS-1123 name the
  model checked, truncated and hashed to BIRD's 64-character symbols);
* a number: AS numbers, ports, TTLs, priorities, communities written from ints;
* an interface pattern (``ignoredInterfaces``, a BGPFilter ``interface``):
  validated by the model to Calico's patterns (letters, digits, ``_.-*``);
* a BGP password, the one free text (a Kubernetes secret's value): BIRD 1.6's
  lexer reads a string as ``"[^"\\n]*"``, with no escapes at all, so a value
  with ``"``, a newline or a NUL cannot be written. Such a peer is left out
  (never given a session without its password) and :func:`warnings` names it.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from libcalico import api
from libcalico.api import bgp, fields
from libcalico.api.bgp import BGPPassword
from libcalico.selector import parse

DEFAULT_AS = "64512"
FILES = ("bird.cfg", "bird_ipam.cfg", "bird_aggr.cfg", "bird6.cfg", "bird6_ipam.cfg", "bird6_aggr.cfg")
BIRD_INT_MAX = 2147483647
OVERRIDE_PREFERENCE = 200   # lets a higher-priority imported route override a local workload route
MAX_BIRD_SYMBOL = 64


@dataclass
class Inputs:
    node: str
    nodes: dict[str, api.Node] = field(default_factory=dict)
    bgp_configs: dict[str, api.BGPConfiguration] = field(default_factory=dict)
    peers: dict[str, api.BGPPeer] = field(default_factory=dict)
    pools: dict[str, api.IPPool] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)  # CIDRs of blocks affine to this node (not pending)
    # Secret values BGP passwords refer to: (secret name, key) -> value (Kubernetes datastore only).
    secrets: dict[tuple[str, str], str] = field(default_factory=dict)
    filters: dict[str, api.BGPFilter] = field(default_factory=dict)
    # CALICO_ROUTER_ID: "" (the node's IPv4 address), "hash" (from the node name) or an address.
    router_id: str = ""


# Parsing is cached: the same few thousand strings come back on every render (see bench.confd_render).
@functools.lru_cache(maxsize=16384)
def _addr(text: str) -> str:
    """An address as BIRD reads it: parsed (no zone) and written back."""
    return str(fields.parse_ip(text))


@functools.lru_cache(maxsize=16384)
def _net(text: str) -> str:
    """A network as BIRD reads it: parsed, host bits cleared (a bare address is its /32 or /128)."""
    return str(fields.parse_cidr_or_ip(text)[1])


@functools.lru_cache(maxsize=16384)
def _interface_ip(cidr: str) -> str:
    return str(fields.parse_cidr_or_ip(cidr)[0])


def _name(ip: str) -> str:
    """A protocol name's tail, from a parsed address, as Calico's confd makes it."""
    return ip.replace(".", "_").replace(":", "_")


def _ip(node: api.Node | None, v: int = 4) -> str:
    if node is None or node.spec.bgp is None:
        return ""
    cidr = node.spec.bgp.ipv4_address if v == 4 else node.spec.bgp.ipv6_address
    return _interface_ip(cidr) if cidr else ""


def _subnet(node: api.Node | None, v: int = 4) -> str:
    if node is None or node.spec.bgp is None:
        return ""
    cidr = node.spec.bgp.ipv4_address if v == 4 else node.spec.bgp.ipv6_address
    return _net(cidr) if cidr else ""


def _default(inputs: Inputs) -> api.BGPConfiguration | None:
    return inputs.bgp_configs.get("default")


def _per_node(inputs: Inputs, name: str) -> api.BGPConfiguration | None:
    return inputs.bgp_configs.get(f"node.{name}")


def global_as(inputs: Inputs) -> str:
    cfg = _default(inputs)
    return str(cfg.spec.as_number) if cfg is not None and cfg.spec.as_number is not None else DEFAULT_AS


def _node_own_as(node: api.Node | None) -> str:
    if node is not None and node.spec.bgp is not None and node.spec.bgp.as_number is not None:
        return str(node.spec.bgp.as_number)
    return ""


def node_as(inputs: Inputs, name: str) -> str:
    return _node_own_as(inputs.nodes.get(name)) or global_as(inputs)


def mesh_enabled(inputs: Inputs) -> bool:
    cfg = _default(inputs)
    return cfg is None or cfg.spec.node_to_node_mesh_enabled is not False


def _listen_port(inputs: Inputs, name: str) -> int:
    """The node's BGP port: BGPConfiguration ``node.<name>``'s listenPort, else ``default``'s (0: none)."""
    for cfg in (_per_node(inputs, name), _default(inputs)):
        if cfg is not None and cfg.spec.listen_port:
            return cfg.spec.listen_port
    return 0


def _rr_id(node: api.Node | None) -> str:
    rr = node.spec.bgp.route_reflector_cluster_id if node is not None and node.spec.bgp else ""
    return _addr(rr) if rr else ""


def _seconds(duration: str | None) -> str:
    """A Go duration as whole seconds (rounded, as Calico's confd writes restart and keepalive times)."""
    if not duration:
        return ""
    unit = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    total = sum(float(n) * unit[u] for n, u in re.findall(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", duration))
    return str(int(total + 0.5))   # Go's math.Round: half away from zero (durations here are >= 0)


@dataclass(frozen=True)
class ClusterRoutePolicy:
    """Which kinds of pool BGPConfiguration ``programClusterRoutes`` gives BIRD to program."""
    ipip: bool
    noencap: bool


CLUSTER_ROUTE_POLICIES = {"Disabled": ClusterRoutePolicy(False, False), "Enabled": ClusterRoutePolicy(True, True),
                          "EnabledIPIPOnly": ClusterRoutePolicy(True, False),
                          "EnabledNoEncapOnly": ClusterRoutePolicy(False, True)}


def cluster_route_policy(inputs: Inputs) -> ClusterRoutePolicy:
    """BGPConfiguration ``default``'s ``programClusterRoutes``, as Calico's confd reads it.

    The value names what BIRD programs (FelixConfiguration's field names what
    Felix programs): default ``EnabledNoEncapOnly``, an unknown value falls back
    to it. BIRD-programmed IPIP routes (``Enabled``, ``EnabledIPIPOnly``; Calico
    deprecated them in v3.33) need the ``krt_tunnel`` attribute of Calico's BIRD
    fork to go through tunl0; stock BIRD 1.6 would install them as plain routes
    and send pod traffic unencapsulated. So here IPIP pools' routes stay Felix's
    (it programs them whatever its own setting) and :func:`warnings` says so.
    """
    cfg = _default(inputs)
    value = cfg.spec.program_cluster_routes if cfg is not None else None
    return CLUSTER_ROUTE_POLICIES.get(str(getattr(value, "value", value)), CLUSTER_ROUTE_POLICIES["EnabledNoEncapOnly"])


def _uses_vxlan(pool: api.IPPool) -> bool:
    return pool.spec.vxlan in ("Always", "CrossSubnet")


def _uses_ipip(pool: api.IPPool) -> bool:
    return pool.spec.ipip in ("Always", "CrossSubnet")


def warnings(inputs: Inputs) -> list[str]:
    """What the operator should hear about this configuration (logged by the daemon on change)."""
    out = []
    if cluster_route_policy(inputs).ipip and any(_uses_ipip(p) and not _uses_vxlan(p) for p in inputs.pools.values()):
        out.append("BGPConfiguration.programClusterRoutes asks BIRD to program the cluster routes of IPIP IP Pools, "
                   "which needs the krt_tunnel attribute of Calico's BIRD fork (deprecated in Calico v3.33); this "
                   "is stock BIRD 1.6, so Felix programs them through tunl0 instead. Set "
                   "BGPConfiguration.programClusterRoutes to EnabledNoEncapOnly (or Disabled) and "
                   "FelixConfiguration.programClusterRoutes to EnabledIPIPOnly (or Enabled) to say so.")
    for v in (4, 6):
        # calico/node refuses to start on an address another Node has; if the datastore has two anyway,
        # Calico's template would write two Mesh_<ip> protocols, which BIRD refuses (the whole config).
        by_ip: dict[str, list[str]] = {}
        for name, node in sorted(inputs.nodes.items()):
            if ip := _ip(node, v):
                by_ip.setdefault(ip, []).append(name)
        for ip, names in by_ip.items():
            if len(names) > 1:
                out.append(f"Nodes {', '.join(names)} all have the address {ip}: one mesh session to it "
                           f"(Node {names[0]}'s), since BIRD refuses two protocols of one name")
    me = inputs.nodes.get(inputs.node)
    if _ip(me, 6) and not _router_id(inputs):
        out.append(f"Node {inputs.node} has an IPv6 address but no IPv4 address: BIRD 6 needs an IPv4 router id, "
                   "so no bird6.cfg is written for it (set CALICO_ROUTER_ID to give it one)")
    cfg = _default(inputs)
    owners = [("BGPConfiguration default nodeMeshPassword", "the node-to-node mesh",
               cfg.spec.node_mesh_password if cfg else None)]
    owners += [(f"BGPPeer {name} password", f"BGPPeer {name}", peer.spec.password)
               for name, peer in sorted(inputs.peers.items())]
    for what, sessions, password in owners:
        ref = password.secret_key_ref if password is not None else None
        why = unusable_password(_secret(inputs, password))
        if ref is not None and why:
            out.append(f"{what} (secret {ref.name}, key {ref.key}) {why}: BIRD 1.6 cannot quote it, so {sessions} "
                       "gets no BGP session until the secret is fixed")
    return out


def unusable_password(value: str) -> str:
    """Why ``value`` cannot be written as a BIRD 1.6 string ("" if it can).

    BIRD 1.6's lexer (``conf/cf-lex.l``) reads a string as ``["][^"\\n]*["]``
    and has no escape sequences, so ``"`` and newlines cannot be written at all;
    a NUL would cut the password short where BIRD copies it.
    """
    for char, name in (('"', "a double quote"), ("\n", "a newline"), ("\0", "a NUL character")):
        if char in value:
            return f"contains {name}"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return ""


def password_refs(inputs: Inputs) -> set[tuple[str, str]]:
    """The (secret, key) pairs the peers' and the mesh's passwords name."""
    refs = set()
    cfg = _default(inputs)
    for pw in [p.spec.password for p in inputs.peers.values()] + [cfg.spec.node_mesh_password if cfg else None]:
        ref = pw.secret_key_ref if pw is not None else None
        if ref is not None:
            refs.add((ref.name, ref.key))
    return refs


def _secret(inputs: Inputs, password: BGPPassword | None) -> str:
    """A BGP password's value, from the Kubernetes secret it names ("" when it cannot be read: on the
    etcd datastore there are no secrets, as with Calico)."""
    ref = password.secret_key_ref if password is not None else None
    return inputs.secrets.get((ref.name, ref.key), "") if ref is not None else ""


# --- peerings (client.go updatePeersV1, nodeAsBGPPeers; bgp_processor.go buildPeerFromData) ------------


@dataclass(frozen=True)
class PeerData:
    """One v1 peering, as Calico's confd client computes it from a BGPPeer (``backends.BGPPeer``)."""
    ip: str
    as_number: int
    port: int = 0
    local_as: int = 0
    source: str = ""             # "UseNodeIP" or "None"
    keep_next_hop: bool = False
    next_hop_mode: str = ""
    calico_node: bool = False
    ttl_security: int = 0
    filters: tuple[str, ...] = ()
    allow_local_as: int = 0
    reachable_by: str = ""
    password: str = ""
    restart_time: str = ""
    keepalive_time: str = ""
    rr_cluster_id: str = ""
    unusable: bool = False        # the password cannot be written: no session (see warnings())


@functools.lru_cache(maxsize=16384)
def _split_ip_port(text: str) -> tuple[str, int]:
    """A peerIP (``ip``, ``ip:port``, ``[ip6]:port``) as (address written back, port or 0)."""
    host, port = bgp.split_ip_port(text)
    return _addr(host), port or 0


class _Cluster:
    """The cluster-wide facts the peerings are computed from (Calico's client cache)."""

    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs
        self.names = sorted(inputs.nodes)
        self.labels = {n: dict(inputs.nodes[n].metadata.labels) for n in self.names}
        self.global_as = global_as(inputs)
        cfg = _default(inputs)
        self.global_port = cfg.spec.listen_port if cfg is not None else 0
        self.by_ip: dict[str, list[str]] = {}
        for n in self.names:
            for ip in {_ip(inputs.nodes[n], 4), _ip(inputs.nodes[n], 6)} - {""}:
                self.by_ip.setdefault(ip, []).append(n)
        self.node_ips = set(self.by_ip)

    def matching(self, selector: str) -> list[str]:
        sel = parse(selector)
        return [n for n in self.names if sel.evaluate(self.labels[n])]

    def node_port(self, name: str) -> int:
        cfg = _per_node(self.inputs, name)
        return cfg.spec.listen_port if cfg is not None and cfg.spec.listen_port else self.global_port

    def with_ip_port_as(self, ip: str, asn: int, port: int) -> list[str]:
        want = str(asn) if asn else self.global_as
        out = []
        for name in self.by_ip.get(ip, ()):
            node = self.inputs.nodes[name]
            if (_node_own_as(node) or self.global_as) != want:
                continue
            if port:
                own = _per_node(self.inputs, name)
                if own is not None and own.spec.listen_port and own.spec.listen_port != port:
                    continue
                if self.global_port and self.global_port != port:   # Calico's check, as written
                    continue
            out.append(name)
        return out


def _common(peer: api.BGPPeer, inputs: Inputs) -> dict[str, object]:
    """setPeerConfigFieldsFromV3Resource: password, source address, restart and keepalive times."""
    spec = peer.spec
    password = _secret(inputs, spec.password)
    return {"password": password, "unusable": bool(unusable_password(password)),
            "source": spec.source_address or "UseNodeIP", "restart_time": _seconds(spec.max_restart_time),
            "keepalive_time": _seconds(spec.keepalive_time)}


def _next_hop(peer: api.BGPPeer) -> tuple[bool, str]:
    mode = peer.spec.next_hop_mode
    if mode is not None:
        return False, str(getattr(mode, "value", mode))
    return peer.spec.keep_original_next_hop, ""


def _node_as_peers(cluster: _Cluster, name: str, peer: api.BGPPeer, *, v4: bool, v6: bool) -> list[PeerData]:
    node = cluster.inputs.nodes[name]
    keep, mode = _next_hop(peer)
    out = []
    for v, wanted in ((4, v4), (6, v6)):
        ip = _ip(node, v)
        if not wanted or not ip:
            continue
        out.append(PeerData(ip=ip, as_number=int(_node_own_as(node) or cluster.global_as), port=cluster.node_port(name),
                            ttl_security=peer.spec.ttl_security or 0, filters=tuple(peer.spec.filters),
                            reachable_by=peer.spec.reachable_by, rr_cluster_id=_rr_id(node), keep_next_hop=keep,
                            next_hop_mode=mode, **_common(peer, cluster.inputs)))  # type: ignore[arg-type]
    return out


def _ip_peer(cluster: _Cluster, peer: api.BGPPeer) -> PeerData | None:
    spec = peer.spec
    ip, port = _split_ip_port(spec.peer_ip)
    if not port:
        named = cluster.with_ip_port_as(ip, spec.as_number, 0)
        if named:
            port = cluster.node_port(named[0])
    reachable = ""
    if spec.reachable_by:
        if (":" in spec.reachable_by) != (":" in ip):
            return None
        reachable = _addr(spec.reachable_by)
    keep, mode = _next_hop(peer)
    return PeerData(ip=ip, as_number=spec.as_number, port=port, local_as=spec.local_as_number or 0,
                    keep_next_hop=keep, next_hop_mode=mode, calico_node=ip in cluster.node_ips,
                    ttl_security=spec.ttl_security or 0, filters=tuple(spec.filters),
                    allow_local_as=spec.num_allowed_local_as_numbers or 0, reachable_by=reachable,
                    **_common(peer, cluster.inputs))  # type: ignore[arg-type]


class _PeerCache:
    """PeerData of a peerIP BGPPeer, kept while neither it nor what it depends on changes.

    A peerIP peering depends on its BGPPeer, the nodes (their addresses, AS
    numbers), the BGPConfigurations (listen ports, AS) and the secrets. The
    daemon renders snapshots whose resource objects are the ones it received,
    so identity says "unchanged": the cache holds the objects it was computed
    from (so no id is reused while it holds them) and is emptied when any
    dependency is a different object. With hundreds of peers this is most of
    a render (bench/confd_render.py).
    """

    def __init__(self) -> None:
        self.basis: tuple[object, ...] = ()
        self.peers: dict[int, tuple[api.BGPPeer, PeerData | None]] = {}
        self.peerings: dict[int, tuple[PeerData, tuple[object, ...], Peering]] = {}
        self.texts: dict[int, tuple[Peering, tuple[int, int], str]] = {}

    def use(self, inputs: Inputs) -> None:
        basis = (*sorted(inputs.nodes.items(), key=lambda kv: kv[0]), *sorted(inputs.bgp_configs.items()),
                 *sorted(inputs.secrets.items()))
        if len(basis) != len(self.basis) or any(a is not b and a != b for a, b in zip(basis, self.basis)):
            self.basis = basis
            self.peers, self.peerings, self.texts = {}, {}, {}
        elif max(len(self.peers), len(self.peerings), len(self.texts) // 2) > 2 * len(inputs.peers) + 64:
            # Deleted BGPPeers (and the mesh's blocks, made anew each render): let them go.
            self.peers, self.peerings, self.texts = {}, {}, {}

    def peering(self, d: PeerData, key: tuple[object, ...], build: Callable[[], Peering]) -> Peering:
        """The Peering of ``d`` in this node's context ``key`` (same inputs, same object: kept)."""
        hit = self.peerings.get(id(d))
        if hit is not None and hit[0] is d and hit[1] == key:
            return hit[2]
        p = build()
        self.peerings[id(d)] = (d, key, p)
        return p

    def protocol(self, inputs: Inputs, p: Peering, v: int, priority: int) -> str:
        if p.filters:   # BGPFilters change on their own: not kept
            return _protocol(inputs, p, v, priority)
        hit = self.texts.get(id(p))
        if hit is not None and hit[0] is p and hit[1] == (v, priority):
            return hit[2]
        text = _protocol(inputs, p, v, priority)
        self.texts[id(p)] = (p, (v, priority), text)
        return text

    def get(self, cluster: _Cluster, peer: api.BGPPeer) -> PeerData | None:
        hit = self.peers.get(id(peer))
        if hit is not None and hit[0] is peer:
            return hit[1]
        data = _ip_peer(cluster, peer)
        self.peers[id(peer)] = (peer, data)
        return data


_CACHES = threading.local()   # one cache per thread: renders in two threads never share entries


def _peer_cache() -> _PeerCache:
    cache: _PeerCache | None = getattr(_CACHES, "cache", None)
    if cache is None:
        cache = _CACHES.cache = _PeerCache()
    return cache


def v1_peers(inputs: Inputs) -> tuple[dict[tuple[str, int], PeerData], dict[tuple[str, int], PeerData]]:
    """This node's global and node-specific peerings, keyed by (IP, port), as Calico's updatePeersV1 emits them.

    Global BGPPeers (no node, no nodeSelector) first, then node-specific ones
    that select this node, unless a global peering has that key; then the
    reverse peerings (unless ``reversePeering: Manual``): where this node is a
    BGPPeer's peer (selected by peerSelector, or its address and AS are the
    peerIP and asNumber), a peering back to each node the BGPPeer is for. The
    first peering emitted for a key wins; BGPPeers are taken by name.
    """
    cluster = _Cluster(inputs)
    _peer_cache().use(inputs)
    me = inputs.node
    glob: dict[tuple[str, int], PeerData] = {}
    node: dict[tuple[str, int], PeerData] = {}
    peers = [p for _, p in sorted(inputs.peers.items()) if not p.spec.local_workload_selector]
    for global_pass in (True, False):
        for peer in peers:
            spec = peer.spec
            if global_pass != (not spec.node_selector and not spec.node):
                continue
            if not global_pass:
                local = cluster.matching(spec.node_selector) if spec.node_selector else [spec.node]
                if me not in local:
                    continue
            if spec.peer_selector:
                found = [d for n in cluster.matching(spec.peer_selector)
                         for d in _node_as_peers(cluster, n, peer, v4=True, v6=True)]
            else:
                one = _peer_cache().get(cluster, peer) if spec.peer_ip else None
                found = [one] if one is not None else []
            for d in found:
                key = (d.ip, d.port)
                if global_pass:
                    glob.setdefault(key, d)
                elif key not in glob:
                    node.setdefault(key, d)
    for peer in peers:
        spec = peer.spec
        if spec.reverse_peering == "Manual":
            continue
        if spec.peer_selector:
            local, v4, v6 = cluster.matching(spec.peer_selector), True, True
        elif spec.peer_ip:
            host, port = _split_ip_port(spec.peer_ip)
            local = cluster.with_ip_port_as(host, spec.as_number, port)
            v4, v6 = ":" not in host, ":" in host
        else:
            continue
        if me not in local:
            continue
        if spec.node_selector:
            targets = cluster.matching(spec.node_selector)
        elif spec.node:
            targets = [spec.node] if spec.node in inputs.nodes else []
        else:
            targets = cluster.names
        for target in targets:
            for d in _node_as_peers(cluster, target, peer, v4=v4, v6=v6):
                key = (d.ip, d.port)
                if key not in glob:
                    node.setdefault(key, d)
    return glob, node


@dataclass(frozen=True)
class Peering:
    """One ``protocol bgp`` of the config (Calico's ``types.BirdBGPPeer``)."""
    name: str          # protocol name: Mesh_/Node_/Global_<ip>[_port_<n>]
    ip: str
    as_number: str
    port: int = 0
    local_as: str = ""
    kind: str = ""     # mesh, global, node
    source: str = ""
    ttl_security: str = "off"
    rr_client: bool = False
    rr_cluster_id: str = ""
    keep_next_hop: bool = False
    next_hop_self: bool = False
    password: str = ""
    passive: bool = False
    restart_time: str = ""
    keepalive_time: str = ""
    allow_local_as: int = 0
    filters: tuple[str, ...] = ()
    internal: bool = True   # same AS as this node (the effective local AS): iBGP


Plan = tuple[dict[tuple[str, int], PeerData], dict[tuple[str, int], PeerData]]


def peerings(inputs: Inputs, v: int = 4, plan: Plan | None = None) -> list[Peering]:
    """Every BGP session this node has over IPv``v``, ordered by protocol name as Calico's confd orders them.

    A session whose password BIRD cannot be given (:func:`unusable_password`)
    is left out rather than opened without it; :func:`warnings` says which.
    """
    me = inputs.nodes.get(inputs.node)
    my_ip = _ip(me, v)
    if not my_ip:
        return []
    my_rr = _rr_id(me)
    my_as = node_as(inputs, inputs.node)
    out: list[Peering] = []
    cfg = _default(inputs)
    mesh_password = _secret(inputs, cfg.spec.node_mesh_password if cfg else None)
    if not my_rr and mesh_enabled(inputs) and not unusable_password(mesh_password):
        restart = _seconds(cfg.spec.node_mesh_max_restart_time) if cfg is not None else ""
        meshed: set[str] = set()
        for name, node in sorted(inputs.nodes.items()):
            ip = _ip(node, v)
            if not ip or ip == my_ip or _rr_id(node) or ip in meshed:
                continue  # a second node on one address: one session (warnings() names them)
            meshed.add(ip)
            asn = _node_own_as(node) or my_as
            out.append(Peering(f"Mesh_{_name(ip)}", ip, asn, port=_listen_port(inputs, name), kind="mesh",
                               source=my_ip, password=mesh_password, restart_time=restart,
                               passive=ip > my_ip, internal=asn == my_as))
    glob, node_peers = plan if plan is not None else v1_peers(inputs)
    for prefix, table in (("Global", glob), ("Node", node_peers)):
        for (ip, port), d in table.items():
            if d.unusable or (":" in ip) != (v == 6) or ip == my_ip:
                continue
            out.append(_peer_cache().peering(d, (prefix, ip, port, my_ip, my_rr, my_as), functools.partial(
                _peering, d, prefix, ip, port, my_ip=my_ip, my_rr=my_rr, my_as=my_as)))
    return sorted(out, key=lambda p: p.name)


def _peering(d: PeerData, prefix: str, ip: str, port: int, *, my_ip: str, my_rr: str, my_as: str) -> Peering:
    """buildPeerFromData: a v1 peering as this node's session."""
    asn = str(d.as_number)
    local_as = str(d.local_as) if d.local_as else ""
    effective = local_as or my_as
    keep = d.next_hop_mode == "Keep" or (d.keep_next_hop and asn != effective)
    rr = asn == effective and bool(my_rr) and d.rr_cluster_id != my_rr
    return Peering(f"{prefix}_{_name(ip)}{f'_port_{port}' if port else ''}", ip, asn, port=port,
                   local_as=local_as, kind=prefix.lower(), source=my_ip if d.source == "UseNodeIP" else "",
                   ttl_security=str(d.ttl_security) if d.ttl_security else "off",
                   rr_client=rr, rr_cluster_id=my_rr if rr else "", keep_next_hop=keep,
                   next_hop_self=d.next_hop_mode == "Self", password=d.password,
                   passive=prefix == "Global" and d.calico_node and ip > my_ip,
                   restart_time=d.restart_time, keepalive_time=d.keepalive_time,
                   allow_local_as=d.allow_local_as, filters=d.filters, internal=asn == effective)


# --- BGPFilter functions (template_funcs.go) ------------------------------------------------------------


def truncate_and_hash(name: str, max_len: int) -> str:
    """Calico's TruncateAndHashName: a name longer than ``max_len`` cut, ``_`` and 16 hex digits of its SHA-256."""
    if len(name) <= max_len:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest().upper()[:16]
    return f"{name[:max_len - 17]}_{digest}"


def filter_function(name: str, direction: str, v: int) -> str:
    pieces = f"bgp__{direction}FilterV{v}"
    return f"'bgp_{truncate_and_hash(name, MAX_BIRD_SYMBOL - len(pieces))}_{direction}FilterV{v}'"


def _rules(flt: api.BGPFilter, direction: str, v: int) -> list[bgp.BGPFilterRuleV4] | list[bgp.BGPFilterRuleV6]:
    spec = flt.spec
    if v == 4:
        return spec.import_v4 if direction == "import" else spec.export_v4
    return spec.import_v6 if direction == "import" else spec.export_v6


def _community(value: str) -> str:
    return ", ".join(str(int(n)) for n in value.split(":"))


_OPERATORS = {"Equal": "=", "NotEqual": "!=", "In": "~", "NotIn": "!~"}


def _filter_rule(rule: bgp.BGPFilterRuleV4 | bgp.BGPFilterRuleV6, v: int) -> str:
    conditions = []
    if rule.cidr:
        net = ipaddress.ip_network(rule.cidr, strict=False)
        cidr = rule.cidr
        if rule.prefix_length is not None:
            lo, hi = net.prefixlen, 32 if net.version == 4 else 128
            if rule.prefix_length.min is not None:
                lo = max(lo, rule.prefix_length.min)
            if rule.prefix_length.max is not None:
                hi = min(hi, rule.prefix_length.max)
            cidr = f"[ {cidr}{{{lo},{hi}}} ]"
        operator = _OPERATORS[str(getattr(rule.match_operator, "value", rule.match_operator))]
        conditions.append(f"(net {operator} {cidr})")
    if rule.source is not None:
        conditions.append("((defined(source))&&(source ~ [ RTS_BGP ]))")
    if rule.interface:
        conditions.append(f'((defined(ifname))&&(ifname ~ "{rule.interface}"))')
    if rule.communities is not None:
        value = rule.communities.values[0]
        kind = "bgp_large_community" if value.count(":") == 2 else "bgp_community"
        conditions.append(f"(({_community(value)}) ~ {kind})")
    if rule.as_path_prefix:
        conditions.append(f"(bgp_path ~ [= {' '.join(str(a) for a in rule.as_path_prefix)} * =])")
    if rule.priority is not None:
        conditions.append(f"(defined(bgp_local_pref)&&(bgp_local_pref = {BIRD_INT_MAX - rule.priority}))")
    body = []
    for op in rule.operations:
        if op.add_community is not None:
            value = op.add_community.value
            kind = "bgp_large_community" if value.count(":") == 2 else "bgp_community"
            body.append(f"{kind}.add(({_community(value)}));")
        elif op.prepend_as_path is not None:
            body += [f"bgp_path.prepend({a});" for a in reversed(op.prepend_as_path.prefix)]
        elif op.set_priority is not None:
            body.append(f"bgp_local_pref = {BIRD_INT_MAX - op.set_priority.value};")
    body.append(f"{str(getattr(rule.action, 'value', rule.action)).lower()};")
    text = " ".join(body)
    if conditions:
        text = f"if ({'&&'.join(conditions)}) then {{ {text} }}"
    peer_type = str(getattr(rule.peer_type, "value", rule.peer_type)) if rule.peer_type is not None else ""
    if peer_type == "iBGP":
        text = f"if (is_same_as) then {{ {text} }}"
    elif peer_type == "eBGP":
        text = f"if (!is_same_as) then {{ {text} }}"
    return text


def _has_peer_type(rules: list[bgp.BGPFilterRuleV4] | list[bgp.BGPFilterRuleV6]) -> bool:
    return any(r.peer_type is not None for r in rules)


def filter_functions(inputs: Inputs, v: int) -> list[str]:
    """BGPFilterBIRDFuncs: a function per BGPFilter and direction with IPv``v`` rules, filters by name."""
    lines: list[str] = []
    for name, flt in sorted(inputs.filters.items()):
        directions = [(d, _rules(flt, d, v)) for d in ("import", "export")]
        directions = [(d, r) for d, r in directions if r]
        if not directions:
            continue
        lines.append(f"# v{v} BGPFilter {name}")
        for direction, rules in directions:
            fn = filter_function(name, direction, v)
            lines.append(f"function {fn}(bool is_same_as) {{" if _has_peer_type(rules) else f"function {fn}() {{")
            lines += [f"  {_filter_rule(rule, v)}" for rule in rules]
            lines.append("}")
    return lines or [f"# No v{v} BGPFilters configured"]


def _filter_calls(inputs: Inputs, names: tuple[str, ...], direction: str, v: int, same_as: bool) -> list[str]:
    out = []
    for name in names:
        flt = inputs.filters.get(name)
        rules = _rules(flt, direction, v) if flt is not None else []
        if rules:
            args = ("true" if same_as else "false") if _has_peer_type(rules) else ""
            out.append(f"{filter_function(name, direction, v)}({args});")
    return out


def _import_filter(inputs: Inputs, p: Peering, v: int, priority: int) -> list[str]:
    return [*_filter_calls(inputs, p.filters, "import", v, p.internal),
            f"if (defined(bgp_local_pref)&&(bgp_local_pref > {BIRD_INT_MAX - priority})) then",
            f"  preference = {OVERRIDE_PREFERENCE};", "accept;"]


def _export_filter(inputs: Inputs, p: Peering, v: int, priority: int) -> list[str]:
    return ["if (defined(source) && source = RTS_BGP && defined(bgp_local_pref)) then {",
            f"  krt_metric = {BIRD_INT_MAX} - bgp_local_pref;", "} else {",
            f"  if (!defined(krt_metric)) then {{ krt_metric = {priority}; }}",
            f"  bgp_local_pref = {BIRD_INT_MAX} - krt_metric;", "}",
            *_filter_calls(inputs, p.filters, "export", v, p.internal),
            f"calico_export_to_bgp_peers({'true' if p.internal else 'false'});", "reject;"]


def _filters_block(inputs: Inputs, p: Peering, v: int, priority: int) -> str:
    return "\n".join(["  import filter {", *(f"    {x}" for x in _import_filter(inputs, p, v, priority)), "  };",
                      "  export filter {", *(f"    {x}" for x in _export_filter(inputs, p, v, priority)),
                      "  };  # Only want to export routes for workloads."])


@functools.lru_cache(maxsize=64)
def _plain_filters_block(internal: bool, v: int, priority: int) -> str:
    """The import and export filters of a peer without BGPFilters: the same text for every such peer."""
    p = Peering("", "", "", internal=internal)
    return _filters_block(Inputs(""), p, v, priority)


# --- the files ------------------------------------------------------------------------------------------


def normal_route_priority(inputs: Inputs, v: int) -> int:
    cfg = _default(inputs)
    value = None
    if cfg is not None:
        value = cfg.spec.ipv4_normal_route_priority if v == 4 else cfg.spec.ipv6_normal_route_priority
    return value if value is not None else 1024


def _log_level(inputs: Inputs) -> str:
    """BIRD's debug level: node.<name>'s logSeverityScreen, else default's, else info (debug/info/none)."""
    for cfg in (_per_node(inputs, inputs.node), _default(inputs)):
        if cfg is not None and cfg.spec.log_severity_screen:
            level = cfg.spec.log_severity_screen.lower()
            return level if level in ("debug", "info") else "none"
    return "info"


def hash_router_id(name: str) -> str:
    """CALICO_ROUTER_ID=hash: the first 4 bytes of the node name's SHA-256, kept out of 224/3."""
    b = hashlib.sha256(name.encode()).digest()[:4]
    return ".".join(str(x) for x in (b[0] - 32 if b[0] > 223 else b[0], b[1], b[2], b[3]))


def _router_id(inputs: Inputs) -> str:
    if inputs.router_id == "hash":
        return hash_router_id(inputs.node)
    if inputs.router_id:
        return _addr(inputs.router_id)
    return _ip(inputs.nodes.get(inputs.node), 4)


def _communities(inputs: Inputs, v: int = 4) -> list[str]:
    """prefixAdvertisements of IPv``v`` (node.<name>'s, else default's) as community additions: each rule's
    communities resolved by name, deduplicated and sorted as strings, as Calico's confd writes them."""
    cfg = _per_node(inputs, inputs.node)
    if cfg is None or not cfg.spec.prefix_advertisements:
        cfg = _default(inputs)
    if cfg is None:
        return []
    named = {c.name: c.value for c in cfg.spec.communities}
    out: list[str] = []
    for adv in cfg.spec.prefix_advertisements:
        if not adv.cidr or (":" in adv.cidr) != (v == 6):
            continue
        values = sorted({c if bgp.valid_community(c) else named.get(c, "") for c in adv.communities} - {""})
        adds = [f"bgp_large_community.add(({_community(c)}));" if c.count(":") == 2
                else f"bgp_community.add(({_community(c)}));" for c in values]
        if adds:
            out += [f"      if ( net ~ {_net(adv.cidr)} ) then {{", *(f"          {a}" for a in adds), "      }"]
    return out


def _direct_interfaces(inputs: Inputs) -> str:
    """The direct protocol's interfaces: BGPConfiguration ignoredInterfaces excluded first, as Calico's confd.

    Each pattern is one the model accepted (Calico's ``ignoredInterface``:
    letters, digits, ``_ . - *``), so it needs no quoting beyond BIRD's quotes.
    """
    cfg = _default(inputs)
    ignored = cfg.spec.ignored_interfaces if cfg is not None else []
    return ", ".join([*(f'-"{i}"' for i in ignored), '-"cali*"', '-"kube-ipvs*"', '"*"'])


def bird_cfg(inputs: Inputs, v: int = 4, plan: Plan | None = None) -> str:
    me = inputs.nodes.get(inputs.node)
    my_ip = _ip(me, v)
    six = "6" if v == 6 else ""
    asn = node_as(inputs, inputs.node)
    level = _log_level(inputs)
    debug = {"none": "", "debug": "all"}.get(level, "{ states }")
    priority = normal_route_priority(inputs, v)
    interfaces = _direct_interfaces(inputs)
    lines = ["function apply_communities ()", "{", *_communities(inputs, v), "}",
             "template kernel kernel_template {",
             "  learn;             # Learn all alien routes from the kernel",
             "  persist;           # Don't remove routes on bird shutdown",
             "  scan time 2;       # Scan kernel routing table every 2 seconds",
             "  import all;", "}",
             "template direct direct_template {", *([f"  debug {debug};"] if debug else []),
             f"  interface {interfaces};" + (" # Exclude cali* and kube-ipvs* but include everything else."
                                             if interfaces == '-"cali*", -"kube-ipvs*", "*"' else ""),
             "}", "# Generated by confd", f'include "bird{six}_aggr.cfg";', f'include "bird{six}_ipam.cfg";']
    router_id = _router_id(inputs)
    if router_id:   # none: no IPv4 address and no CALICO_ROUTER_ID (see warnings())
        lines.append(f"router id {router_id};")
    cfg = _default(inputs)
    bind = cfg is not None and str(getattr(cfg.spec.bind_mode, "value", cfg.spec.bind_mode)) == "NodeIP"
    listen_address = my_ip if bind else ""
    listen_port = _listen_port(inputs, inputs.node)
    if listen_address or listen_port:
        lines.append("listen bgp" + (f" address {listen_address}" if listen_address else "")
                     + (f" port {listen_port}" if listen_port else "") + ";")
    lines += ["# Configure synchronization between routing tables and kernel.",
              "protocol kernel from kernel_template {",
              "  export filter calico_kernel_programming; # Default is export none",
              "  graceful restart;  # Turn on graceful restart to reduce potential flaps in",
              "                     # routes when reloading BIRD configuration.",
              "  merge paths on;    # Allow export multipath routes (ECMP)", "}",
              "# Watch interface up/down events.", "protocol device {", *([f"  debug {debug};"] if debug else []),
              "  scan time 2;    # Scan interfaces every 2 seconds", "}",
              "protocol direct from direct_template {", "}"]
    if not my_ip or not router_id:
        lines.append(f"# IPv{v} disabled on this node.")
        return "\n".join(lines) + "\n"
    peer_debug = {"none": "", "debug": "debug all;"}.get(level, "debug { states, routes, filters, events };")
    lines += ["# Template for all BGP clients", "template bgp bgp_template {", *([f"  {peer_debug}"] if peer_debug else []),
              '  description "Connection to BGP peer";', f"  local as {asn};",
              "  gateway recursive; # This should be the default, but just in case.",
              "  add paths on;", "  graceful restart;  # See comment in kernel section about graceful restart.",
              "  connect delay time 2;", "  connect retry time 5;", "  error wait time 5,30;", "}",
              "# -------------- BGP Filters ------------------", *filter_functions(inputs, v)]
    peers = peerings(inputs, v, plan)
    if not peers:
        lines.append("# No BGP peers configured for this node")
        return "\n".join(lines) + "\n"
    lines.append("# BGP Protocol Configurations")
    for p in peers:
        lines.append(_peer_cache().protocol(inputs, p, v, priority))
    return "\n".join(lines) + "\n"


def _protocol(inputs: Inputs, p: Peering, v: int, priority: int) -> str:
    """A peering's ``protocol bgp`` block, in the order of Calico's template."""
    lines: list[str] = []
    lines.append(f"protocol bgp {p.name} from bgp_template {{")
    if p.local_as:
        lines.append(f"  local as {p.local_as};")
    lines.append(f"  neighbor {p.ip}{f' port {p.port}' if p.port else ''} as {p.as_number};")
    if p.source:
        lines.append(f"  source address {p.source};  # The local address we use for the TCP connection")
    if p.ttl_security == "off":
        lines += ["  ttl security off;", "  multihop;"]
    else:
        lines += ["  ttl security on;", f"  multihop {p.ttl_security};"]
    lines.append(_filters_block(inputs, p, v, priority) if p.filters else
                 _plain_filters_block(p.internal, v, priority))
    if p.passive:
        lines.append("  passive on;")
    if p.restart_time:
        lines.append(f"  graceful restart time {p.restart_time};")
    if p.keepalive_time:
        lines.append(f"  keepalive time {p.keepalive_time};")
    if p.rr_client:
        lines += ["  rr client;", f"  rr cluster id {p.rr_cluster_id};"]
    if p.password:
        assert not unusable_password(p.password)   # peerings() leaves such a peer out
        lines.append(f'  password "{p.password}";')
    if p.keep_next_hop:
        lines.append("  next hop keep;")
    if p.next_hop_self:
        lines.append("  next hop self;")
    if p.allow_local_as:
        lines.append(f"  allow local as {p.allow_local_as};")
    lines.append("}")
    return "\n".join(lines)


def _pool_cidr(pool: api.IPPool) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return fields.parse_cidr_or_ip(pool.spec.cidr)[1]


def _pools(inputs: Inputs, v: int = 4) -> list[api.IPPool]:
    return [p for _, p in sorted(inputs.pools.items()) if _pool_cidr(p).version == v]


def _service_cidrs(cfg: api.BGPConfiguration | None, v: int) -> list[str]:
    """serviceClusterIPs, serviceExternalIPs and serviceLoadBalancerIPs of IP version ``v``, advertised as static
    blackholes ("" ignored, as Calico's confd ignores an empty CIDR)."""
    if cfg is None:
        return []
    blocks = (*cfg.spec.service_cluster_ips, *cfg.spec.service_external_ips, *cfg.spec.service_load_balancer_ips)
    nets = [fields.parse_cidr_or_ip(b.cidr)[1] for b in blocks if b.cidr]
    return list(dict.fromkeys(str(n) for n in nets if n.version == v))


def _pool_statement(pool: api.IPPool, policy: ClusterRoutePolicy, *, kernel: bool) -> tuple[str, str]:
    """processIPPool: (action, comment) for a pool in the export filter or (``kernel``) the kernel filter."""
    if pool.spec.disable_bgp_export and not kernel:
        return "reject", "BGP export is disabled."
    if _uses_vxlan(pool):
        return ("reject", "VXLAN routes are handled by Felix.") if kernel else ("accept", "")
    # IPIP routes stay Felix's here whatever the policy: no krt_tunnel in stock BIRD (see cluster_route_policy).
    programs = policy.noencap if not _uses_ipip(pool) else False
    if programs or not kernel:
        return "accept", ""
    return "reject", "Cluster routes are handled by Felix."


def _pool_line(cidr: str, action: str, comment: str) -> str:
    return f"  if (net ~ {cidr}) then {{ {action}; }}" + (f" # {comment}" if comment else "")


def bird_ipam_cfg(inputs: Inputs, v: int = 4) -> str:
    policy = cluster_route_policy(inputs)
    pools = _pools(inputs, v)
    disabled: list[str] = []
    enabled: list[str] = []
    kernel: list[str] = []
    me = inputs.nodes.get(inputs.node)
    for p in pools:
        cidr = str(_pool_cidr(p))
        action, comment = _pool_statement(p, policy, kernel=False)
        (disabled if action == "reject" else enabled).append(_pool_line(cidr, action, comment))
        if v == 6 or _subnet(me, 4):
            action, comment = _pool_statement(p, policy, kernel=True)
            if v == 4 or action == "reject":   # IPv6: only the rejections, the default is accept
                kernel.append(_pool_line(cidr, action, comment))
    # Felix's tunnel routes are not exported over iBGP; tunl0's too unless BIRD has IPIP pools' routes, which it
    # never has here (no krt_tunnel: Felix programs them), so tunl0 stays unless no IPIP pool exists to need it.
    patterns = ["*.cali", "*.calico"]
    if not policy.ipip or any(_uses_ipip(p) and not _uses_vxlan(p) for p in inputs.pools.values()):
        patterns.append("tunl0")
    out = ["# Generated by confd",
           "function reject_local_routes () {",
           "  # Don't export local routes learned via BPF as they should never leave the node.",
           "  if (defined(ifname)) then {", '     if (ifname ~ "bpf*.cali") then {', "        reject;",
           "     }", "  }", "}",
           "function calico_export_to_bgp_peers(bool internal_peer) {",
           "  # filter code terminates when it calls `accept;` or `reject;`,", *sorted(disabled),
           "  if (internal_peer) then {", "    if (defined(ifname)) then {",
           "      if (" + " || ".join(f'(ifname ~ "{x}")' for x in patterns) + ") then {",
           "        reject;", "      }", "    }", "  }",
           "  reject_local_routes();", "  apply_communities();", "  calico_aggr();"]
    cfg = _default(inputs)
    out += [f"  if (net ~ {c}) then {{ accept; }}  # advertised service range" for c in _service_cidrs(cfg, v)]
    if _rr_id(me) and cfg is not None:
        for blocks, what in ((cfg.spec.service_load_balancer_ips, "LB service"),
                             (cfg.spec.service_external_ips, "external service")):
            cidrs = [b.cidr for b in blocks if b.cidr and (":" in b.cidr) == (v == 6)]
            if cidrs:
                out.append(f"  # Configured as a RR - accept any routes within configured {what} IP ranges")
                out += [f"  if ( net ~ {_net(c)} ) then {{ accept; }}" for c in cidrs]
    out += sorted(enabled)
    out += ["}", "filter calico_kernel_programming {",
            "  if (defined(source) && (source = RTS_BGP) && !defined(krt_metric)) then {",
            f"      krt_metric = {normal_route_priority(inputs, v)};", "      if (defined(bgp_local_pref)) then {",
            f"          krt_metric = {BIRD_INT_MAX} - bgp_local_pref;", "      }",
            f"      if (krt_metric < {normal_route_priority(inputs, v)}) then {{",
            f"          preference = {OVERRIDE_PREFERENCE};", "      }", "  }"]
    out += _wireguard_filter(inputs, v)
    out += sorted(kernel)
    out += ["  accept;", "}"]
    return "\n".join(out) + "\n"


def _wireguard_filter(inputs: Inputs, v: int) -> list[str]:
    """Remote WireGuard nodes' routes are Felix's (through the WireGuard device) when this node runs WireGuard."""
    def wg(node: api.Node) -> str:
        spec = node.spec.wireguard
        if spec is None:
            return ""
        return spec.interface_ipv4_address if v == 4 else spec.interface_ipv6_address
    me = inputs.nodes.get(inputs.node)
    if me is None or not wg(me):
        return []
    return sorted(f"  if (defined(bgp_next_hop) && bgp_next_hop = {_ip(n, v)}) then {{ reject; }} "
                  "# WireGuard routes handled by Felix."
                  for name, n in inputs.nodes.items() if name != inputs.node and wg(n) and _ip(n, v))


def _block_key(cidr: str) -> str:
    return cidr.replace("/", "-")


def bird_aggr_cfg(inputs: Inputs, v: int = 4, plan: Plan | None = None) -> str:
    nets = {fields.parse_cidr_or_ip(b)[1] for b in inputs.blocks if b}
    # Calico lists the affinity keys (<address>-<length>) in string order.
    blocks = sorted((str(n) for n in nets if n.version == v), key=_block_key)
    host = "/32" if v == 4 else "/128"
    services = _service_cidrs(_default(inputs), v)
    glob, node_peers = plan if plan is not None else v1_peers(inputs)
    statics = []
    for table in (glob, node_peers):
        reachable = [(k, d) for k, d in table.items() if d.reachable_by and (":" in d.ip) == (v == 6)]
        statics += [f"   route {d.ip}{host} via {d.reachable_by};"
                    for _, d in sorted(reachable, key=lambda kv: _peer_key(kv[0]))]
    out = ["# Generated by confd", "template static static_template {"]
    if blocks:
        out.append("   # IP blocks for this host.")
        out += [f"   route {b} blackhole;" for b in blocks if not b.endswith(host)]
    out += [f"   route {s} blackhole;  # advertised service range" for s in services]
    out += statics
    added = bool(blocks or services or statics)
    if not added:
        out.append("   # No IP blocks or static routes for this host.")
    out.append("}")
    if added:
        out += ["protocol static from static_template {", "}"]
    out += ["# Aggregation of routes on this host; export the block, nothing beneath it.", "function calico_aggr ()", "{"]
    priority = normal_route_priority(inputs, v)
    for b in blocks:
        out += [f"      if ( net = {b} ) then {{ accept; }}",
                f"      if ( net ~ {b} && krt_metric < {priority} ) then {{ accept; }}",
                f"      if ( net ~ {b} ) then {{ reject; }}"]
    out.append("}")
    return "\n".join(out) + "\n"


def _peer_key(key: tuple[str, int]) -> str:
    """A v1 peering's key name, by which Calico's template lists them: <ip>, or <ip>-<port> with a port."""
    ip, port = key
    return f"{ip}-{port}" if port else ip


def render(inputs: Inputs) -> dict[str, str]:
    """All six files, as Calico's confd writes them (a version the node has no address for: its disabled form).

    One exception: BIRD 6 refuses any config without a router id ("Router ID
    must be configured manually on IPv6 routers"), so a node with no IPv4
    address and no CALICO_ROUTER_ID gets no bird6 files (Calico would write
    ``router id ;``, which neither BIRD accepts); :func:`warnings` says so.
    """
    plan = v1_peers(inputs)
    files = {"bird.cfg": bird_cfg(inputs, 4, plan), "bird_ipam.cfg": bird_ipam_cfg(inputs),
             "bird_aggr.cfg": bird_aggr_cfg(inputs, 4, plan)}
    if _router_id(inputs):
        files.update({"bird6.cfg": bird_cfg(inputs, 6, plan), "bird6_ipam.cfg": bird_ipam_cfg(inputs, 6),
                      "bird6_aggr.cfg": bird_aggr_cfg(inputs, 6, plan)})
    return files
