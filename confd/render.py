"""BIRD's configuration for one node, rendered from the datastore as Calico's confd renders it.

Pure functions: :class:`Inputs` (what the syncer delivered) in, file name ->
text out, for ``bird.cfg``, ``bird_ipam.cfg`` and ``bird_aggr.cfg``. The layout
and names follow Calico's templates (``confd/etc/calico/confd/templates``,
golden outputs in ``confd/tests/compiled_templates``) for stock BIRD 1.6, which
lacks the few features of Calico's fork (``krt_tunnel``): routes through
tunl0 are Felix's job here, whatever ``programClusterRoutes`` says (see
:func:`cluster_route_policy`).

What is expressed:

* router id and AS: the node's ``asNumber``, else BGPConfiguration ``default``'s,
  else 64512;
* the node-to-node mesh (``Mesh_<peer ip>``, one per other node with an IPv4
  address, ``passive on`` towards higher addresses so one side connects) when
  ``nodeToNodeMeshEnabled`` (default true);
* BGPPeers: global ones (no node, no nodeSelector: ``Global_<ip>``), node
  specific ones (``node`` or ``nodeSelector`` selecting this node:
  ``Node_<ip>``), with ``peerIP`` or ``peerSelector`` (every selected node),
  asNumber, localASNumber, keepOriginalNextHop, ttl security, password;
* route reflectors: a node with ``routeReflectorClusterID`` is ``rr client``
  towards non-reflector peers, with ``rr cluster id``;
* blackhole static routes for the node's blocks and their aggregation (export
  the block, not the addresses beneath it);
* export to peers of the pools (disabled pools and ``disableBGPExport`` ones
  rejected; tunnel interfaces' routes rejected towards internal peers);
* the kernel export filter: BGP-learned routes of the pool kinds that
  BGPConfiguration ``programClusterRoutes`` leaves to BIRD are installed;
  the others are Felix's and rejected;
* serviceClusterIPs / serviceExternalIPs / serviceLoadBalancerIPs as static
  blackholes exported to peers;
* communities on advertised prefixes (``communities`` + ``prefixAdvertisements``);
* BGPConfiguration ``ignoredInterfaces``, excluded from the direct protocol.

Nothing a user wrote reaches BIRD's config as raw text. Each value is one of:

* an address or a network: parsed (the models refuse IPv6 zones, which Python
  would take with any characters after the ``%``) and written back from the
  parsed value (:func:`_addr`, :func:`_net`; a network is normalised, as
  BIRD refuses host bits);
* a protocol name: made from a parsed address, ``.``/``:`` replaced by ``_``
  and ``_port_<n>`` added, as Calico's confd names them; node and resource
  names never reach BIRD;
* a number: AS numbers, ports, TTLs, communities written from ints;
* an interface pattern (``ignoredInterfaces``): validated by the model to
  Calico's ``ignoredInterface`` pattern (letters, digits, ``_.-*``);
* a BGP password, the one free text (a Kubernetes secret's value): BIRD 1.6's
  lexer reads a string as ``"[^"\\n]*"``, with no escapes at all, so a value
  with ``"``, a newline or a NUL cannot be written. Such a peer is left out
  (never given a session without its password) and :func:`warnings` names it.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from libcalico import api
from libcalico.api import bgp, fields
from libcalico.api.bgp import BGPPassword

from libcalico.selector import parse

DEFAULT_AS = "64512"
FILES = ("bird.cfg", "bird_ipam.cfg", "bird_aggr.cfg", "bird6.cfg", "bird6_ipam.cfg", "bird6_aggr.cfg")


@dataclass
class Inputs:
    node: str
    nodes: dict[str, api.Node] = field(default_factory=dict)
    bgp_configs: dict[str, api.BGPConfiguration] = field(default_factory=dict)
    peers: dict[str, api.BGPPeer] = field(default_factory=dict)
    pools: dict[str, api.IPPool] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)  # CIDRs of blocks affine to this node
    # Secret values BGP passwords refer to: (secret name, key) -> value (Kubernetes datastore only).
    secrets: dict[tuple[str, str], str] = field(default_factory=dict)


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


@functools.lru_cache(maxsize=16384)
def _peer_address(peer_ip: str) -> tuple[str, int, int]:
    """A BGPPeer's peerIP as (address written back, port or 0, IP version)."""
    host, port = bgp.split_ip_port(peer_ip)
    addr = fields.parse_ip(host)
    return str(addr), port or 0, addr.version


def _ip(node: api.Node | None, v: int = 4) -> str:
    if node is None or node.spec.bgp is None:
        return ""
    cidr = node.spec.bgp.ipv4_address if v == 4 else node.spec.bgp.ipv6_address
    return _interface_ip(cidr) if cidr else ""


def _name(ip: str) -> str:
    """A protocol name's tail, from a parsed address, as Calico's confd makes it."""
    return ip.replace(".", "_").replace(":", "_")


def _default(inputs: Inputs) -> api.BGPConfiguration | None:
    return inputs.bgp_configs.get("default")


def node_as(inputs: Inputs, name: str) -> str:
    node = inputs.nodes.get(name)
    if node is not None and node.spec.bgp is not None and node.spec.bgp.as_number is not None:
        return str(node.spec.bgp.as_number)
    cfg = _default(inputs)
    if cfg is not None and cfg.spec.as_number is not None:
        return str(cfg.spec.as_number)
    return DEFAULT_AS


def mesh_enabled(inputs: Inputs) -> bool:
    cfg = _default(inputs)
    return cfg is None or cfg.spec.node_to_node_mesh_enabled is not False


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


def warnings(inputs: Inputs) -> list[str]:
    """What the operator should hear about this configuration (logged by the daemon on change)."""
    out = []
    if cluster_route_policy(inputs).ipip and any(p.spec.ipip != "Never" and p.spec.vxlan == "Never"
                                                 for p in inputs.pools.values()):
        out.append("BGPConfiguration.programClusterRoutes asks BIRD to program the cluster routes of IPIP IP Pools, "
                   "which needs the krt_tunnel attribute of Calico's BIRD fork (deprecated in Calico v3.33); this "
                   "is stock BIRD 1.6, so Felix programs them through tunl0 instead. Set "
                   "BGPConfiguration.programClusterRoutes to EnabledNoEncapOnly (or Disabled) and "
                   "FelixConfiguration.programClusterRoutes to EnabledIPIPOnly (or Enabled) to say so.")
    me = inputs.nodes.get(inputs.node)
    if _pools(inputs, 6) and _ip(me, 6) and not _ip(me, 4):
        out.append(f"Node {inputs.node} has an IPv6 address but no IPv4 address: BIRD 6 needs an IPv4 router id, "
                   "so no bird6.cfg is written for it")
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


def _rr_id(node: api.Node | None) -> str:
    rr = node.spec.bgp.route_reflector_cluster_id if node is not None and node.spec.bgp else ""
    return _addr(rr) if rr else ""


@dataclass(frozen=True)
class Peering:
    name: str          # protocol name: Mesh_/Node_/Global_<ip>
    ip: str
    as_number: str
    port: int = 0
    rr_client: bool = False
    local_as: str = ""
    keep_next_hop: bool = False
    ttl_security: int = 0
    password: str = ""
    passive: bool = False


def peerings(inputs: Inputs, v: int = 4) -> list[Peering]:
    """Every BGP session this node should have over IPv``v``, in Calico's order (mesh, then peers by name).

    A session whose password BIRD cannot be given (:func:`unusable_password`)
    is left out rather than opened without it; :func:`warnings` says which.
    """
    me = inputs.nodes.get(inputs.node)
    my_ip = _ip(me, v)
    if not my_ip:
        return []
    my_rr = _rr_id(me)
    my_labels = dict(me.metadata.labels) if me is not None else {}
    my_as = node_as(inputs, inputs.node)
    out: dict[tuple[str, int], Peering] = {}   # one session per (address, port), as Calico's peer keys
    cfg = _default(inputs)
    mesh_password = _secret(inputs, cfg.spec.node_mesh_password if cfg else None)
    if mesh_enabled(inputs) and not unusable_password(mesh_password):
        for name, node in sorted(inputs.nodes.items()):
            ip = _ip(node, v)
            if name == inputs.node or not ip:
                continue
            out[(ip, 0)] = Peering(f"Mesh_{_name(ip)}", ip, node_as(inputs, name), passive=_higher(ip, my_ip),
                                   password=mesh_password)
    meshed = {ip for ip, _ in out}
    for _, peer in sorted(inputs.peers.items()):
        spec = peer.spec
        if spec.node and spec.node != inputs.node:
            continue
        if spec.node_selector and not parse(spec.node_selector).evaluate(my_labels):
            continue
        password = _secret(inputs, spec.password)
        if unusable_password(password):
            continue
        kind = "Node" if (spec.node or spec.node_selector) else "Global"
        targets: list[tuple[str, int, str, api.Node | None]] = []
        if spec.peer_ip:
            addr, port, version = _peer_address(spec.peer_ip)
            if version == v:
                targets.append((addr, port, str(spec.as_number), None))
        if spec.peer_selector:
            sel = parse(spec.peer_selector)
            for name, node in sorted(inputs.nodes.items()):
                if name != inputs.node and _ip(node, v) and sel.evaluate(dict(node.metadata.labels)):
                    targets.append((_ip(node, v), 0, node_as(inputs, name), node))
        for ip, port, asn, target in targets:
            if ip == my_ip or ip in meshed:
                continue
            # localASNumber 0 is "not set", as in Calico's confd (BIRD refuses "local as 0").
            local_as = str(spec.local_as_number) if spec.local_as_number else ""
            # A route reflector's clients are its internal peers only (BIRD: "Only internal neighbor can be
            # RR client"), as Calico's confd decides it.
            rr_client = bool(my_rr) and asn == (local_as or my_as) and (target is None or _rr_id(target) != my_rr)
            out[(ip, port)] = Peering(f"{kind}_{_name(ip)}{f'_port_{port}' if port else ''}", ip, asn, port,
                                      rr_client=rr_client, local_as=local_as,
                                      keep_next_hop=spec.keep_original_next_hop,
                                      ttl_security=spec.ttl_security or 0, password=password,
                                      passive=target is not None and _higher(ip, my_ip))
    return list(out.values())


def _higher(a: str, b: str) -> bool:
    return int(ipaddress.ip_address(a)) > int(ipaddress.ip_address(b))


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


_BGP_FILTERS = '''  import filter {
    if (defined(bgp_local_pref)&&(bgp_local_pref > 2147482623)) then
      preference = 200;
    accept;
  };
  export filter {
    if (defined(source) && source = RTS_BGP && defined(bgp_local_pref)) then {
      krt_metric = 2147483647 - bgp_local_pref;
    } else {
      if (!defined(krt_metric)) then { krt_metric = 1024; }
      bgp_local_pref = 2147483647 - krt_metric;
    }
    calico_export_to_bgp_peers(%s);
    reject;
  };  # Only want to export routes for workloads.
'''


def _communities(inputs: Inputs, v: int = 4) -> list[str]:
    """BGPConfiguration prefixAdvertisements of IPv``v`` as community additions (large ones first, as
    Calico's template); each community written from its numbers."""
    cfg = _default(inputs)
    if cfg is None:
        return []
    named = {c.name: c.value for c in cfg.spec.communities}
    out: list[str] = []
    for adv in cfg.spec.prefix_advertisements:
        if not adv.cidr or fields.parse_cidr_or_ip(adv.cidr)[1].version != v:
            continue
        values = [named.get(c, c) for c in adv.communities]
        values = [c for c in values if bgp.valid_community(c)]
        large = list(dict.fromkeys(c for c in values if c.count(":") == 2))
        standard = list(dict.fromkeys(c for c in values if c.count(":") == 1))
        out.append(f"      if ( net ~ {_net(adv.cidr)} ) then {{")
        out += [f"          bgp_large_community.add(({', '.join(str(int(n)) for n in c.split(':'))}));"
                for c in large]
        out += [f"          bgp_community.add(({', '.join(str(int(n)) for n in c.split(':'))}));" for c in standard]
        out.append("      }")
    return out


_FILTERS_INTERNAL = (_BGP_FILTERS % "true").rstrip("\n")
_FILTERS_EXTERNAL = (_BGP_FILTERS % "false").rstrip("\n")


def bird_cfg(inputs: Inputs, v: int = 4) -> str:
    me = inputs.nodes.get(inputs.node)
    my_ip = _ip(me, v)
    router_id = _ip(me, 4)
    six = "6" if v == 6 else ""
    asn = node_as(inputs, inputs.node)
    lines = ['function apply_communities ()', '{', *_communities(inputs, v), '}',
             'template kernel kernel_template {',
             '  learn;             # Learn all alien routes from the kernel',
             "  persist;           # Don't remove routes on bird shutdown",
             '  scan time 2;       # Scan kernel routing table every 2 seconds',
             '  import all;', '}',
             'template direct direct_template {', '  debug { states };', *_direct_interfaces(inputs), '}',
             '# Generated by confd', f'include "bird{six}_aggr.cfg";', f'include "bird{six}_ipam.cfg";']
    if not router_id:
        lines += [f"# No IPv{v} address configured for this node", ""]
        return "\n".join(lines)
    cfg = _default(inputs)
    # The router id is the node's IPv4 address for BIRD 6 too (it is 4 octets even in MP-BGP), so a node
    # with IPv6 pools but no IPv6 address still gets a config BIRD 6 accepts, with no sessions.
    lines += [f"router id {router_id};",
              "# Configure synchronization between routing tables and kernel.",
              "protocol kernel from kernel_template {",
              "  export filter calico_kernel_programming; # Default is export none",
              "  graceful restart;  # Turn on graceful restart to reduce potential flaps in",
              "                     # routes when reloading BIRD configuration.",
              "  merge paths on;    # Allow export multipath routes (ECMP)", "}",
              "# Watch interface up/down events.", "protocol device {", "  debug { states };",
              "  scan time 2;    # Scan interfaces every 2 seconds", "}",
              "protocol direct from direct_template {", "}"]
    if not my_ip:
        lines += [f"# No IPv{v} address configured for this node", ""]
        return "\n".join(lines)
    lines += ["# Template for all BGP clients", "template bgp bgp_template {",
              "  debug { states, routes, filters, events };", '  description "Connection to BGP peer";',
              f"  local as {asn};", "  gateway recursive; # This should be the default, but just in case.",
              "  add paths on;", "  graceful restart;  # See comment in kernel section about graceful restart.",
              "  connect delay time 2;", "  connect retry time 5;", "  error wait time 5,30;"]
    lines += ["}"]
    if cfg is not None and cfg.spec.listen_port:
        lines.insert(lines.index(f"router id {router_id};") + 1, f"listen bgp port {cfg.spec.listen_port};")
    lines += ["# -------------- BGP Filters ------------------", "# No v4 BGPFilters configured",
              "# BGP Protocol Configurations"]
    rr = _rr_id(me)
    for p in peerings(inputs, v):
        internal = p.as_number == asn and not p.local_as
        lines += [f"protocol bgp {p.name} from bgp_template {{"]
        if p.local_as:
            lines.append(f"  local as {p.local_as};")
        lines += [f"  neighbor {p.ip}{f' port {p.port}' if p.port else ''} as {p.as_number};",
                  f"  source address {my_ip};  # The local address we use for the TCP connection"]
        if p.ttl_security:
            lines.append(f"  ttl security on;\n  multihop {p.ttl_security};")
        else:
            lines += ["  ttl security off;", "  multihop;"]
        if p.rr_client:
            lines += ["  rr client;", f"  rr cluster id {rr};"]
        if p.keep_next_hop:
            lines.append("  next hop keep;")
        if p.password:
            assert not unusable_password(p.password)   # peerings() leaves such a peer out
            lines.append(f'  password "{p.password}";')
        lines.append(_FILTERS_INTERNAL if internal else _FILTERS_EXTERNAL)
        if p.passive:
            lines.append("  passive on;")
        lines.append("}")
    return "\n".join(lines) + "\n"


def _direct_interfaces(inputs: Inputs) -> list[str]:
    """The direct protocol's interfaces: BGPConfiguration ignoredInterfaces excluded first, as Calico's confd.

    Each pattern is one the model accepted (Calico's ``ignoredInterface``:
    letters, digits, ``_ . - *``), so it needs no quoting beyond BIRD's quotes.
    """
    cfg = _default(inputs)
    ignored = cfg.spec.ignored_interfaces if cfg is not None else []
    if not ignored:
        return ['  interface -"cali*", -"kube-ipvs*", "*"; # Exclude cali* and kube-ipvs* but',
                '                                          # include everything else.']
    return ["  interface " + ", ".join([*(f'-"{i}"' for i in ignored), '-"cali*"', '-"kube-ipvs*"', '"*"']) + ";"]


def _pool_cidr(pool: api.IPPool) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return fields.parse_cidr_or_ip(pool.spec.cidr)[1]


def _pools(inputs: Inputs, v: int = 4) -> list[api.IPPool]:
    return sorted((p for p in inputs.pools.values() if _pool_cidr(p).version == v),
                  key=lambda p: int(_pool_cidr(p).network_address))


def _service_cidrs(cfg: api.BGPConfiguration, v: int) -> list[str]:
    """serviceClusterIPs, serviceExternalIPs and serviceLoadBalancerIPs of IP version ``v`` ("" ignored, as
    Calico's confd ignores an empty CIDR)."""
    blocks = (*cfg.spec.service_cluster_ips, *cfg.spec.service_external_ips, *cfg.spec.service_load_balancer_ips)
    nets = [fields.parse_cidr_or_ip(b.cidr)[1] for b in blocks if b.cidr]
    return list(dict.fromkeys(str(n) for n in nets if n.version == v))


def bird_ipam_cfg(inputs: Inputs, v: int = 4) -> str:
    bird_noencap = cluster_route_policy(inputs).noencap
    out = ["# Generated by confd",
           "function reject_local_routes () {",
           "  # Don't export local routes learned via BPF as they should never leave the node.",
           "  if (defined(ifname)) then {", '     if (ifname ~ "bpf*.cali") then {', "        reject;",
           "     }", "  }", "}",
           "function calico_export_to_bgp_peers(bool internal_peer) {",
           "  # filter code terminates when it calls `accept;` or `reject;`,",
           "  if (internal_peer) then {", "    if (defined(ifname)) then {",
           '      if ((ifname ~ "*.cali") || (ifname ~ "*.calico") || (ifname ~ "tunl0")) then {',
           "        reject;", "      }", "    }", "  }",
           "  reject_local_routes();", "  apply_communities();", "  calico_aggr();"]
    cfg = _default(inputs)
    if cfg is not None:
        out += [f"  if (net ~ {c}) then {{ accept; }}" for c in _service_cidrs(cfg, v)]
    for p in _pools(inputs, v):
        if p.spec.disabled or p.spec.disable_bgp_export:
            out.append(f"  if (net ~ {_pool_cidr(p)}) then {{ reject; }}")
        else:
            out.append(f"  if (net ~ {_pool_cidr(p)}) then {{ accept; }}")
    out += ["}", "filter calico_kernel_programming {",
            "  if (defined(source) && (source = RTS_BGP) && !defined(krt_metric)) then {",
            "      krt_metric = 1024;", "      if (defined(bgp_local_pref)) then {",
            "          krt_metric = 2147483647 - bgp_local_pref;", "      }",
            "      if (krt_metric < 1024) then {", "          preference = 200;", "      }", "  }"]
    for p in _pools(inputs, v):
        vxlan, ipip = p.spec.vxlan, p.spec.ipip
        if vxlan != "Never":
            out.append(f"  if (net ~ {_pool_cidr(p)}) then {{ reject; }} # VXLAN routes are handled by Felix.")
        elif ipip != "Never":   # Felix's even when BIRD is asked: no krt_tunnel here (see warnings())
            out.append(f"  if (net ~ {_pool_cidr(p)}) then {{ reject; }} # Cluster routes are handled by Felix.")
        elif bird_noencap:
            out.append(f"  if (net ~ {_pool_cidr(p)}) then {{ accept; }}")
        else:
            out.append(f"  if (net ~ {_pool_cidr(p)}) then {{ reject; }} # Cluster routes are handled by Felix.")
    out += ["  accept;", "}"]
    return "\n".join(out) + "\n"


def bird_aggr_cfg(inputs: Inputs, v: int = 4) -> str:
    nets = sorted({fields.parse_cidr_or_ip(b)[1] for b in inputs.blocks if b}, key=lambda n: int(n.network_address))
    blocks = [str(n) for n in nets if n.version == v]
    cfg = _default(inputs)
    services = []
    if cfg is not None:
        services = _service_cidrs(cfg, v)
    out = ["# Generated by confd", "template static static_template {", "   # IP blocks for this host."]
    out += [f"   route {b} blackhole;" for b in blocks]
    out += [f"   route {s} blackhole;  # advertised service range" for s in services]
    out += ["}", "protocol static from static_template {", "}",
            "# Aggregation of routes on this host; export the block, nothing beneath it.",
            "function calico_aggr ()", "{"]
    for b in blocks:
        out += [f"      # Block {b} is confirmed", f"      if ( net = {b} ) then {{ accept; }}",
                f"      if ( net ~ {b} && krt_metric < 1024 ) then {{ accept; }}",
                f"      if ( net ~ {b} ) then {{ reject; }}"]
    out.append("}")
    return "\n".join(out) + "\n"


def render(inputs: Inputs) -> dict[str, str]:
    """The IPv4 files, plus ``bird6*.cfg`` for BIRD 6 where IPv6 pools exist (and the node has a router id)."""
    files = {"bird.cfg": bird_cfg(inputs), "bird_ipam.cfg": bird_ipam_cfg(inputs),
             "bird_aggr.cfg": bird_aggr_cfg(inputs)}
    if _pools(inputs, 6) and _ip(inputs.nodes.get(inputs.node), 4):   # no router id, no BIRD 6 (see warnings())
        files.update({"bird6.cfg": bird_cfg(inputs, 6), "bird6_ipam.cfg": bird_ipam_cfg(inputs, 6),
                      "bird6_aggr.cfg": bird_aggr_cfg(inputs, 6)})
    return files
