"""Felix's calculation graph: syncer updates in, typed incremental messages out.

Calico's shape (``felix/calc/calc_graph.go``, ``felix/design/calc-graph.md``),
not a copy of its code. :class:`CalcGraph` is the dispatcher: each update goes,
by kind, to the calculators that care, and each calculator keeps indexes so
that it can say what changed without recomputing the world:

* :class:`RouteResolver` (IPPool, Node, IPAMBlock, local WorkloadEndpoints):
  a workload's change recomputes that workload's routes, a block's change that
  block's route; only a pool or node change walks the blocks (never the
  endpoints). It emits RouteUpdate/RouteRemove and the VXLAN, IPIP and
  natOutgoing state. Its answers equal :func:`felix.calc.calculate`'s (the
  tests replay the same states through both).
* :class:`PolicyResolver` (policies, profiles, tiers, endpoints, network sets):
  Calico's active-rules calculator, rule scanner, IP set member index and
  policy resolver in one. A policy is *active* while its selector matches a
  local endpoint; only active policies and the profiles local endpoints use
  are sent, with the IP sets their rules need; each set's members are the
  addresses (or address/port pairs, for named ports) of every endpoint and
  network set in the cluster that its selector matches. An endpoint's labels
  are its own over those its profiles apply (``labelsToApply``: how namespace
  and service-account labels reach pods). An endpoint change evaluates the
  active selectors against that endpoint; a policy change evaluates that
  policy's selector against the local endpoints.

Calculators are plain synchronous functions of the state they hold (``None``
means absent). A value that cannot be used (a selector that does not parse) is
logged and treated as absent, never raised: one bad policy must not stop the
others. Ordering between messages (IP sets before the rules that use them) is
the dataplane's job, at apply time (:mod:`felix.dataplane.manager`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from felix import calc, messages
from felix.messages import Message
from felix.policy import (
    DEFAULT_DROP_PROFILE,
    NAMESPACE_LABEL,
    IPSetData,
    ParsedPolicy,
    ParsedRules,
    PolicyError,
    PolicyID,
    parse_policy,
    parse_profile,
)
from libcalico import api
from libcalico.api.ipam import IPAMBlock
from libcalico.api.policy import DEFAULT_TIER

log = logging.getLogger("felix.calc")

Emit = Callable[[Message], None]
ROUTE_KINDS: tuple[type[api.Resource], ...] = (api.IPPool, api.Node, IPAMBlock, api.WorkloadEndpoint)
POLICY_KINDS: tuple[type[api.Resource], ...] = (api.NetworkPolicy, api.GlobalNetworkPolicy, api.Profile, api.Tier,
                                                api.NetworkSet, api.GlobalNetworkSet, api.HostEndpoint,
                                                api.WorkloadEndpoint)


# --- routes ---------------------------------------------------------------------------------------


class RouteResolver:
    """Routes, VTEPs, IPIP and natOutgoing pools of node ``me``, incrementally."""

    def __init__(self, me: str, emit: Emit, *, interface_prefix: str = "cali",
                 program_cluster_routes: str = "EnabledIPIPOnly") -> None:
        self.me = me
        self.emit = emit
        self.prefix = interface_prefix
        self.program_cluster_routes = program_cluster_routes
        self.pools: dict[str, api.IPPool] = {}
        self.nodes: dict[str, api.Node] = {}
        self.blocks: dict[str, IPAMBlock] = {}
        self.local: dict[tuple[str, str], api.WorkloadEndpoint] = {}
        self.routes: dict[str, calc.Route] = {}                 # what was emitted
        self._owner: dict[str, str] = {}                        # dst -> "wep:<key>" | "block:<cidr>"
        self._wep_dsts: dict[tuple[str, str], set[str]] = {}
        self._block_dst: dict[str, str] = {}
        self._vxlan: messages.VXLANUpdate | None = None
        self._ipip: messages.IPIPUpdate | None = None
        self._nat: messages.NATPoolsUpdate | None = None

    # --- inputs -------------------------------------------------------------------------

    def on_pool(self, name: str, pool: api.IPPool | None) -> None:
        _put(self.pools, name, pool)
        self._recompute_cluster()

    def on_node(self, name: str, node: api.Node | None) -> None:
        _put(self.nodes, name, node)
        self._recompute_cluster()

    def on_block(self, name: str, block: IPAMBlock | None) -> None:
        _put(self.blocks, name, block)
        self._block_route(name)

    def on_endpoint(self, key: tuple[str, str], wep: api.WorkloadEndpoint | None) -> None:
        if wep is not None and (wep.spec.node != self.me or not wep.spec.interface_name.startswith(self.prefix)):
            wep = None
        if wep is None and key not in self.local:
            return
        _put(self.local, key, wep)
        want: dict[str, calc.Route] = {}
        if wep is not None:
            for net in wep.spec.ip_networks:
                n = ipaddress.ip_network(net, strict=False)
                if n.version == 4:
                    want[str(n)] = calc.Route(str(n), "local", wep.spec.interface_name)
        owner = f"wep:{key[0]}/{key[1]}"
        for dst in self._wep_dsts.get(key, set()) - set(want):
            self._set(dst, None, owner)
        for dst, route in want.items():
            self._set(dst, route, owner)
        if want:
            self._wep_dsts[key] = set(want)
        else:
            self._wep_dsts.pop(key, None)

    def configure(self, *, interface_prefix: str, program_cluster_routes: str) -> None:
        if (interface_prefix, program_cluster_routes) == (self.prefix, self.program_cluster_routes):
            return
        self.prefix, self.program_cluster_routes = interface_prefix, program_cluster_routes
        self._recompute_cluster()

    @property
    def local_endpoints(self) -> int:
        return len(self.local)

    # --- calculation --------------------------------------------------------------------

    def _set(self, dst: str, route: calc.Route | None, owner: str) -> None:
        current_owner = self._owner.get(dst)
        if route is None:
            if current_owner == owner:
                del self._owner[dst]
                del self.routes[dst]
                self.emit(messages.RouteRemove(dst))
            return
        if current_owner not in (None, owner) and current_owner.startswith("wep:") and owner.startswith("wep:"):
            owner = min(owner, current_owner)  # two endpoints claim one address: a stable choice
        self._owner[dst] = owner
        if self.routes.get(dst) != route:
            self.routes[dst] = route
            self.emit(messages.RouteUpdate(route))

    def _v4_pools(self) -> list[tuple[ipaddress.IPv4Network, api.IPPool]]:
        out = []
        for p in self.pools.values():
            net = ipaddress.ip_network(p.spec.cidr)
            if isinstance(net, ipaddress.IPv4Network):
                out.append((net, p))
        return out

    def _block_route(self, name: str) -> None:
        block = self.blocks.get(name)
        if block is None:
            dst = self._block_dst.pop(name, None)
            if dst is not None:
                self._set(dst, None, f"block:{name}")
            return
        dst = str(ipaddress.ip_network(block.spec.cidr))
        old = self._block_dst.get(name)
        if old is not None and old != dst:
            self._set(old, None, f"block:{name}")
        self._block_dst[name] = dst
        self._set(dst, self._route_for(block), f"block:{name}")

    def _route_for(self, block: IPAMBlock) -> calc.Route | None:
        cidr = ipaddress.ip_network(block.spec.cidr)
        if cidr.version != 4:
            return None
        pool = next((p for n, p in self._v4_pools() if cidr.subnet_of(n)), None)
        affinity = block.spec.affinity or ""
        owner = affinity.removeprefix("host:") if affinity.startswith("host:") else ""
        if not owner or pool is None:
            return None
        program_noencap = self.program_cluster_routes in ("Enabled", "EnabledNoEncapOnly")
        if owner == self.me:
            return calc.Route(str(cidr), "blackhole") if calc._felix_owns(pool, program_noencap) else None
        _, my_subnet = calc._node_ip(self.nodes.get(self.me))
        route = calc._remote_route(str(cidr), pool, owner, self.nodes.get(owner), my_subnet,
                                   program_noencap=program_noencap)
        if route is not None and route.kind == "vxlan":
            vx = self._vxlan
            if vx is None or vx.local is None or route.gateway not in {v.ip for v in vx.remotes}:
                return None  # a VXLAN route waits for its VTEP (and this node's own)
        return route

    def _recompute_cluster(self) -> None:
        pools = [p for _, p in self._v4_pools()]
        nets = self._v4_pools()
        nat = messages.NATPoolsUpdate(
            tuple(sorted(str(n) for n, p in nets if p.spec.nat_outgoing and not p.spec.disabled)),
            tuple(sorted(str(n) for n, _ in nets)))
        if nat != self._nat:
            self._nat = nat
            self.emit(nat)
        my_node = self.nodes.get(self.me)
        local_vtep = calc._vtep(self.me, my_node) if any(p.spec.vxlan != "Never" for p in pools) else None
        remotes: tuple[calc.VTEP, ...] = ()
        if local_vtep is not None:
            remotes = tuple(v for name, n in sorted(self.nodes.items()) if name != self.me
                            for v in [calc._vtep(name, n)] if v is not None)
        vx = messages.VXLANUpdate(local_vtep, remotes)
        if vx != self._vxlan:
            self._vxlan = vx
            self.emit(vx)
        enabled = any(p.spec.ipip != "Never" for p in pools)
        address = ""
        if enabled and my_node is not None and my_node.spec.bgp:
            address = my_node.spec.bgp.ipv4_ipip_tunnel_addr
        ipip = messages.IPIPUpdate(enabled, address)
        if ipip != self._ipip:
            self._ipip = ipip
            self.emit(ipip)
        for cidr in list(self.blocks):
            self._block_route(cidr)


def _put(table: dict[Any, Any], key: Any, value: Any) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


# --- policy ----------------------------------------------------------------------------------------


@dataclass
class Item:
    """Something selectors match: an endpoint (workload or host) or a network set."""

    key: str
    own_labels: dict[str, str]
    profiles: tuple[str, ...]
    nets: tuple[str, ...]                              # "a.b.c.d/len" or "v6::addr/len"
    ports: tuple[tuple[str, int, int], ...] = ()       # (name, protocol number, port)
    local_iface: str = ""                              # a local endpoint's interface, else ""
    host: bool = False
    labels: dict[str, str] = field(default_factory=dict)


_PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132}
_PROTO_NAME = {6: "tcp", 17: "udp", 132: "sctp"}


def _nets(nets: list[str]) -> tuple[str, ...]:
    """An endpoint's or network set's CIDRs, both families (each goes to its family's IP sets)."""
    out = []
    for n in nets:
        try:
            net = ipaddress.ip_network(n, strict=False)
        except ValueError:
            continue
        out.append(str(net))
    return tuple(out)


class PolicyResolver:
    """Active policies and profiles, their IP sets and members, and each local endpoint's tiers."""

    def __init__(self, me: str, emit: Emit, *, interface_prefix: str = "cali") -> None:
        self.me = me
        self.emit = emit
        self.prefix = interface_prefix
        self.items: dict[str, Item] = {}
        self.profile_labels: dict[str, dict[str, str]] = {}
        self.profile_rules: dict[str, ParsedRules | None] = {}     # None: present but unusable
        self.profile_users: dict[str, set[str]] = {}              # profile -> item keys (for labels)
        self.policies: dict[tuple[str, str, str], ParsedPolicy] = {}
        self.tiers: dict[str, tuple[float | None, str]] = {}
        # Policy selectors over local endpoints.
        self.pol_matches: dict[tuple[str, str, str], set[str]] = {}
        self.ep_policies: dict[str, set[tuple[str, str, str]]] = {}
        # Active profiles (used by local endpoints) and what was sent.
        self.active_profiles: dict[str, set[str]] = {}
        self.sent_profiles: dict[str, ParsedRules] = {}
        self.sent_policies: dict[tuple[str, str, str], ParsedPolicy] = {}
        # IP sets: data, who needs them, members, and each item's contribution.
        self.sets: dict[str, IPSetData] = {}
        self.set_owners: dict[str, set[object]] = {}
        self.members: dict[str, Counter[object]] = {}
        self.contrib: dict[str, dict[str, frozenset[object]]] = {}   # item -> set id -> members
        self.endpoints_sent: dict[str, messages.EndpointUpdate] = {}

    # --- counts (metrics) ---------------------------------------------------------------------

    @property
    def active_policies(self) -> int:
        return len(self.sent_policies)

    @property
    def active_selectors(self) -> int:
        return len(self.sets)

    # --- inputs -------------------------------------------------------------------------------

    def on_workload(self, key: tuple[str, str], wep: api.WorkloadEndpoint | None) -> None:
        ikey = f"wep:{key[0]}/{key[1]}"
        if wep is None:
            self._item(ikey, None)
            return
        spec = wep.spec
        local = spec.node == self.me and spec.interface_name.startswith(self.prefix)
        ports = tuple((p.name, _PROTO.get(str(p.protocol), 0) if isinstance(p.protocol, str) else int(p.protocol),
                       p.port) for p in spec.ports if p.name and p.port)
        self._item(ikey, Item(ikey, dict(wep.metadata.labels), tuple(spec.profiles), _nets(spec.ip_networks), ports,
                              spec.interface_name if local else ""))

    def on_host_endpoint(self, name: str, hep: api.HostEndpoint | None) -> None:
        ikey = f"hep:{name}"
        if hep is None:
            self._item(ikey, None)
            return
        spec = hep.spec
        # interfaceName "*" (an all-interfaces host endpoint, as the automatic ones are) is local too: the
        # dataplane applies it to every interface no named host endpoint claims.
        local = spec.node == self.me and bool(spec.interface_name)
        ports = tuple((p.name, _PROTO.get(str(p.protocol), 0), p.port) for p in spec.ports)
        self._item(ikey, Item(ikey, dict(hep.metadata.labels), tuple(spec.profiles),
                              _nets([f"{ip}" for ip in spec.expected_ips]), ports,
                              spec.interface_name if local else "", host=True))

    def on_network_set(self, ns: str, name: str, res: api.NetworkSet | api.GlobalNetworkSet | None) -> None:
        ikey = f"netset:{ns}/{name}"
        if res is None:
            self._item(ikey, None)
            return
        labels = dict(res.metadata.labels)
        profiles: tuple[str, ...] = ()
        if ns:
            labels[NAMESPACE_LABEL] = ns
            profiles = (f"kns.{ns}",)
        self._item(ikey, Item(ikey, labels, profiles, _nets(res.spec.nets)))

    def on_profile(self, name: str, res: api.Profile | None) -> None:
        labels = dict(res.spec.labels_to_apply) if res is not None else {}
        if labels != self.profile_labels.get(name, {}):
            _put(self.profile_labels, name, labels or None)
            for ikey in sorted(self.profile_users.get(name, set())):
                item = self.items[ikey]
                self._item(ikey, Item(item.key, item.own_labels, item.profiles, item.nets, item.ports,
                                      item.local_iface, item.host))
        rules: ParsedRules | None = None
        if res is not None:
            try:
                rules = parse_profile(res)
            except PolicyError as exc:
                log.error("Profile %s cannot be used (treated as absent): %s", name, exc)
        if res is None:
            self.profile_rules.pop(name, None)
        else:
            self.profile_rules[name] = rules
        if name in self.active_profiles:
            self._send_profile(name)

    def on_policy(self, kind: str, ns: str, name: str, res: api.NetworkPolicy | api.GlobalNetworkPolicy | None) -> None:
        pkey = (kind, ns, name)
        new: ParsedPolicy | None = None
        if res is not None:
            try:
                new = parse_policy(res)
            except PolicyError as exc:
                log.error("%s %s cannot be used (treated as absent): %s", kind,
                          f"{ns}/{name}" if ns else name, exc)
        old = self.policies.get(pkey)
        if new == old:
            return
        _put(self.policies, pkey, new)
        old_matches = self.pol_matches.get(pkey, set())
        if new is None:
            matches: set[str] = set()
        elif old is not None and old.selector == new.selector:
            matches = old_matches
        else:
            matches = {k for k, it in self.items.items() if it.local_iface and new.selector.evaluate(it.labels)}
        for ep in old_matches - matches:
            self.ep_policies[ep].discard(pkey)
        for ep in matches - old_matches:
            self.ep_policies.setdefault(ep, set()).add(pkey)
        _put(self.pol_matches, pkey, matches or None)
        self._sync_policy(pkey)
        placement_same = old is not None and new is not None and (old.id, old.order, old.ingress, old.egress) == (
            new.id, new.order, new.ingress, new.egress)
        for ep in sorted(old_matches ^ matches if placement_same else old_matches | matches):
            self._send_endpoint(ep)
        if pkey not in self.sent_policies:
            self._release(pkey)

    def on_tier(self, name: str, res: api.Tier | None) -> None:
        if res is None:
            self.tiers.pop(name, None)
        else:
            action = res.spec.default_action.value if res.spec.default_action else "Deny"
            self.tiers[name] = (res.spec.order, action)
        for ep in sorted(self.ep_policies):
            if any(self.policies[p].id.tier == name for p in self.ep_policies[ep]):
                self._send_endpoint(ep)

    # --- items ------------------------------------------------------------------------------

    def _labels(self, item: Item) -> dict[str, str]:
        merged: dict[str, str] = {}
        for prof in reversed(item.profiles):
            merged.update(self.profile_labels.get(prof, {}))
        merged.update(item.own_labels)
        return merged

    def _item(self, ikey: str, item: Item | None) -> None:
        old = self.items.get(ikey)
        if item is not None:
            item.labels = self._labels(item)
        if old is not None:
            for prof in old.profiles:
                users = self.profile_users.get(prof)
                if users is not None:
                    users.discard(ikey)
                    if not users:
                        del self.profile_users[prof]
        if item is not None:
            for prof in item.profiles:
                self.profile_users.setdefault(prof, set()).add(ikey)
        _put(self.items, ikey, item)
        # IP set members, over every active set.
        old_contrib = self.contrib.pop(ikey, {})
        new_contrib: dict[str, frozenset[object]] = {}
        if item is not None:
            for sid, data in self.sets.items():
                members = self._members_of(item, data)
                if members:
                    new_contrib[sid] = members
        for sid in set(old_contrib) | set(new_contrib):
            self._delta(sid, new_contrib.get(sid, frozenset()), old_contrib.get(sid, frozenset()))
        if new_contrib:
            self.contrib[ikey] = new_contrib
        # Local endpoints: policy matches, profiles, computed data.
        was_local = old is not None and bool(old.local_iface)
        is_local = item is not None and bool(item.local_iface)
        if not was_local and not is_local:
            return
        old_pols = self.ep_policies.get(ikey, set())
        new_pols = {p for p, pol in self.policies.items() if pol.selector.evaluate(item.labels)} if (
            item is not None and is_local) else set()
        for p in old_pols - new_pols:
            self.pol_matches[p].discard(ikey)
            if not self.pol_matches[p]:
                del self.pol_matches[p]
        for p in new_pols - old_pols:
            self.pol_matches.setdefault(p, set()).add(ikey)
        _put(self.ep_policies, ikey, new_pols or None)
        old_profiles = set(old.profiles) if was_local and old is not None else set()
        new_profiles = set(item.profiles) if is_local and item is not None else set()
        for prof in new_profiles - old_profiles:
            self.active_profiles.setdefault(prof, set()).add(ikey)
            if len(self.active_profiles[prof]) == 1:
                self._send_profile(prof)
        for p in sorted(new_pols - old_pols):
            self._sync_policy(p)
        if was_local and (not is_local or (old is not None and item is not None
                                           and old.local_iface != item.local_iface)):
            self._remove_endpoint(ikey, old)  # type: ignore[arg-type]
        self._send_endpoint(ikey)
        for p in sorted(old_pols - new_pols):
            self._sync_policy(p)
            if p not in self.sent_policies:
                self._release(p)
        for prof in old_profiles - new_profiles:
            users = self.active_profiles.get(prof, set())
            users.discard(ikey)
            if not users:
                self.active_profiles.pop(prof, None)
                self._send_profile(prof)

    @staticmethod
    def _members_of(item: Item, data: IPSetData) -> frozenset[object]:
        if not data.selector.evaluate(item.labels):
            return frozenset()
        if not data.named_port:
            return frozenset(item.nets)
        out: set[object] = set()
        for name, proto, port in item.ports:
            if name != data.named_port or (data.protocol != "any" and _PROTO_NAME.get(proto) != data.protocol):
                continue
            for net in item.nets:
                addr, _, plen = net.partition("/")
                if plen == ("128" if ":" in addr else "32"):
                    out.add((addr, proto, port))
        return frozenset(out)

    def _delta(self, sid: str, new: frozenset[object], old: frozenset[object]) -> None:
        if new == old or sid not in self.sets:
            return
        counts = self.members[sid]
        added, removed = set(), set()
        for m in new - old:
            counts[m] += 1
            if counts[m] == 1:
                added.add(m)
        for m in old - new:
            counts[m] -= 1
            if counts[m] <= 0:
                del counts[m]
                removed.add(m)
        if added or removed:
            self.emit(messages.IPSetDelta(sid, frozenset(added), frozenset(removed)))

    # --- IP sets owned by active rules ------------------------------------------------------------

    def _claim(self, owner: object, sets: tuple[IPSetData, ...]) -> None:
        """``owner`` now needs exactly ``sets``; sets nobody needs any more go."""
        want = {d.id: d for d in sets}
        for sid in [s for s, owners in self.set_owners.items() if owner in owners and s not in want]:
            self._unref(sid, owner)
        for sid, data in want.items():
            owners = self.set_owners.setdefault(sid, set())
            owners.add(owner)
            if sid not in self.sets:
                self.sets[sid] = data
                self.members[sid] = Counter()
                self.emit(messages.IPSetUpdate(sid, "ipport" if data.named_port else "net"))
                added: set[object] = set()
                for ikey, item in self.items.items():
                    members = self._members_of(item, data)
                    if members:
                        self.contrib.setdefault(ikey, {})[sid] = members
                        for m in members:
                            self.members[sid][m] += 1
                        added |= members
                if added:
                    self.emit(messages.IPSetDelta(sid, frozenset(added), frozenset()))

    def _unref(self, sid: str, owner: object) -> None:
        owners = self.set_owners.get(sid, set())
        owners.discard(owner)
        if owners:
            return
        self.set_owners.pop(sid, None)
        self.sets.pop(sid, None)
        self.members.pop(sid, None)
        for contrib in self.contrib.values():
            contrib.pop(sid, None)
        self.emit(messages.IPSetRemove(sid))

    def _release(self, owner: object) -> None:
        for sid in [s for s, owners in self.set_owners.items() if owner in owners]:
            self._unref(sid, owner)

    # --- what is sent ---------------------------------------------------------------------------

    def _sync_policy(self, pkey: tuple[str, str, str]) -> None:
        pol = self.policies.get(pkey)
        active = pol is not None and bool(self.pol_matches.get(pkey))
        if active and pol is not None:
            if self.sent_policies.get(pkey) != pol:
                self._claim(("policy", pkey), pol.rules.ip_sets)
                self.sent_policies[pkey] = pol
                self.emit(messages.ActivePolicyUpdate(pol))
        elif pkey in self.sent_policies:
            sent = self.sent_policies.pop(pkey)
            self.emit(messages.ActivePolicyRemove(sent.id))
            self._release(("policy", pkey))

    def _send_profile(self, name: str) -> None:
        if name not in self.active_profiles:
            if self.sent_profiles.pop(name, None) is not None:
                self.emit(messages.ActiveProfileRemove(name))
                self._release(("profile", name))
            return
        rules = self.profile_rules.get(name)
        if rules is None:
            log.info("An endpoint uses profile %s, which does not exist (or cannot be used): "
                     "generating a default-drop profile", name)
            rules = DEFAULT_DROP_PROFILE
        if self.sent_profiles.get(name) != rules:
            self._claim(("profile", name), rules.ip_sets)
            self.sent_profiles[name] = rules
            self.emit(messages.ActiveProfileUpdate(name, rules))

    def _tier_key(self, name: str) -> tuple[int, float, str]:
        tier = self.tiers.get(name)
        if tier is None:
            return (2, 0.0, name)     # a tier that does not exist sorts last (Calico's Valid=false)
        order = tier[0]
        return (0, order, name) if order is not None else (1, 0.0, name)

    def _computed(self, ikey: str) -> messages.EndpointUpdate:
        item = self.items[ikey]
        by_tier: dict[str, list[ParsedPolicy]] = {}
        for p in self.ep_policies.get(ikey, set()):
            pol = self.policies[p]
            by_tier.setdefault(pol.id.tier, []).append(pol)
        tiers: list[messages.TierInfo] = []
        forward: list[messages.TierInfo] = []
        for name in sorted(by_tier, key=self._tier_key):
            pols = sorted(by_tier[name], key=lambda q: (q.order, f"{q.id.name}/{q.id.namespace}/{q.id.kind}"))
            action = self.tiers.get(name, (None, "Deny"))[1]
            if not item.host:
                tiers.append(messages.TierInfo(name, action, tuple(q.id for q in pols if q.ingress),
                                               tuple(q.id for q in pols if q.egress)))
                continue
            # tierInfoToProtoTierInfo: doNotTrack and preDNAT policies are not in the normal tiers
            # (neither is enforced here); applyOnForward ones are also in the forward tiers.
            normal = [q for q in pols if not q.do_not_track and not q.pre_dnat]
            for chosen, out in ((normal, tiers), ([q for q in normal if q.apply_on_forward], forward)):
                ingress = tuple(q.id for q in chosen if q.ingress)
                egress = tuple(q.id for q in chosen if q.egress)
                if ingress or egress:
                    out.append(messages.TierInfo(name, action, ingress, egress))
        return messages.EndpointUpdate(ikey, item.host, item.local_iface, tuple(tiers), item.profiles,
                                       tuple(forward))

    def _send_endpoint(self, ikey: str) -> None:
        item = self.items.get(ikey)
        if item is None or not item.local_iface:
            return
        upd = self._computed(ikey)
        if self.endpoints_sent.get(ikey) != upd:
            self.endpoints_sent[ikey] = upd
            self.emit(upd)

    def _remove_endpoint(self, ikey: str, old: Item) -> None:
        if self.endpoints_sent.pop(ikey, None) is not None:
            self.emit(messages.EndpointRemove(ikey, old.host, old.local_iface))


# --- the dispatcher -----------------------------------------------------------------------------


class CalcGraph:
    """Fans datastore updates out to the calculators by kind (Calico's ``RegisterWith``)."""

    def __init__(self, me: str, emit: Emit, *, interface_prefix: str = "cali",
                 program_cluster_routes: str = "EnabledIPIPOnly") -> None:
        self.routes = RouteResolver(me, emit, interface_prefix=interface_prefix,
                                    program_cluster_routes=program_cluster_routes)
        self.policy = PolicyResolver(me, emit, interface_prefix=interface_prefix)
        self.nodes: set[str] = set()
        by_class: dict[type[api.Resource], list[Callable[[str, str, Any], None]]] = {
            api.IPPool: [lambda ns, n, v: self.routes.on_pool(n, v)],
            api.Node: [lambda ns, n, v: self.routes.on_node(n, v), self._count_node],
            IPAMBlock: [lambda ns, n, v: self.routes.on_block(n, v)],
            api.WorkloadEndpoint: [lambda ns, n, v: self.routes.on_endpoint((ns, n), v),
                                   lambda ns, n, v: self.policy.on_workload((ns, n), v)],
            api.HostEndpoint: [lambda ns, n, v: self.policy.on_host_endpoint(n, v)],
            api.NetworkPolicy: [lambda ns, n, v: self.policy.on_policy(api.NetworkPolicy.KIND, ns, n, v)],
            api.GlobalNetworkPolicy: [lambda ns, n, v: self.policy.on_policy(api.GlobalNetworkPolicy.KIND, "", n, v)],
            api.Profile: [lambda ns, n, v: self.policy.on_profile(n, v)],
            api.Tier: [lambda ns, n, v: self.policy.on_tier(n, v)],
            api.NetworkSet: [lambda ns, n, v: self.policy.on_network_set(ns, n, v)],
            api.GlobalNetworkSet: [lambda ns, n, v: self.policy.on_network_set("", n, v)],
        }
        # Updates arrive with the kind's name (a key's ``kind``): the table is looked up by it.
        self._dispatch = {cls.KIND: handlers for cls, handlers in by_class.items()}

    def _count_node(self, ns: str, name: str, value: Any) -> None:
        if value is None:
            self.nodes.discard(name)
        else:
            self.nodes.add(name)

    def on_update(self, kind: str, namespace: str, name: str, value: Any) -> None:
        for handler in self._dispatch.get(kind, ()):
            try:
                handler(namespace, name, value)
            except Exception:  # a calculator bug must not take the others down: log it, go on
                log.exception("calculation of %s %s failed", kind, f"{namespace}/{name}" if namespace else name)


__all__ = ["CalcGraph", "DEFAULT_TIER", "POLICY_KINDS", "PolicyID", "PolicyResolver", "ROUTE_KINDS",
           "RouteResolver"]
