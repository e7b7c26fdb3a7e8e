"""Felix's dataplane: managers with one protocol, run in one order on every apply.

Calico's ``int_dataplane.go`` shape. A manager's ``on_update(msg)`` only records
the change (cheap, on the event loop); ``apply()`` does the work. Every apply
runs every manager, in this order, which is the one place the dependencies are
written down:

1. IPIP (tunl0) and VXLAN (the device and its peers' ARP/FDB entries): a
   route through a tunnel needs its device and its VTEP;
2. routes;
3. the nftables managers, which only stage their part of the ``calico``
   table: IP sets (named by rules), policy and profile chains (jumped to by
   endpoint chains), endpoint chains and dispatch maps, natOutgoing;
4. the table itself: one nft transaction, which creates sets before the
   rules that name them and deletes sets after the rules that named them.

A manager that fails is marked for a resync (it will read the kernel back and
reconcile on its next apply) and retried with backoff (0.1 s doubling to 10 s);
the others carry on in the same apply: a VXLAN failure does not stop routes or
policy. Kernel handles are injected, so each manager is unit-tested against a
fake and, separately, on the real kernel.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from felix import calc, messages
from felix.dataplane import nft, rules
from felix.dataplane.ipip import IPIPDevice
from felix.dataplane.routes import RouteTable
from felix.dataplane.vxlan import VXLANDevice
from felix.messages import Message
from felix.policy import PolicyID

log = logging.getLogger("felix.dataplane")

BACKOFF_MIN, BACKOFF_MAX = 0.1, 10.0


class Manager(Protocol):
    """One part of the dataplane."""

    name: str

    def on_update(self, msg: Message) -> None:
        """Record a change; no I/O."""

    def apply(self) -> None:
        """Make the kernel (or the staged table) match; raise on failure."""

    def resync(self) -> None:
        """Forget what is believed programmed: the next apply reads the kernel back."""


# --- tunnels ------------------------------------------------------------------------------------


class IPIPManager:
    name = "ipip"

    def __init__(self, device: IPIPDevice) -> None:
        self.device = device
        self.want: messages.IPIPUpdate = messages.IPIPUpdate(False, "")
        self.dirty = True
        self.problem = ""

    def on_update(self, msg: Message) -> None:
        if isinstance(msg, messages.IPIPUpdate):
            self.want, self.dirty = msg, True

    def apply(self) -> None:
        if self.dirty:
            self.problem = self.device.apply(self.want.enabled, self.want.address)
            self.dirty = False

    def resync(self) -> None:
        self.dirty = True


class VXLANManager:
    name = "vxlan"

    def __init__(self, device: VXLANDevice) -> None:
        self.device = device
        self.want = messages.VXLANUpdate(None, ())
        self.dirty = True

    def on_update(self, msg: Message) -> None:
        if isinstance(msg, messages.VXLANUpdate):
            self.want, self.dirty = msg, True

    def apply(self) -> None:
        if self.dirty:
            self.device.apply(self.want.local, list(self.want.remotes))
            self.dirty = False

    def resync(self) -> None:
        self.dirty = True


# --- routes ---------------------------------------------------------------------------------------


class RouteManager:
    """Routes, route by route: a change writes that route only; a resync dumps and reconciles."""

    name = "routes"

    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.desired: dict[str, calc.Route] = {}
        self.dirty: set[str] = set()
        self.pending: set[str] = set()
        self.programmed: dict[str, calc.Route] = {}
        self.need_resync = True

    def on_update(self, msg: Message) -> None:
        if isinstance(msg, messages.RouteUpdate):
            self.desired[msg.route.dst] = msg.route
            self.dirty.add(msg.route.dst)
        elif isinstance(msg, messages.RouteRemove):
            self.desired.pop(msg.dst, None)
            self.dirty.add(msg.dst)

    def apply(self) -> None:
        if self.need_resync:
            self.dirty.clear()
            stats = self.table.apply(self.desired)
            self.programmed = dict(self.desired)
            self.pending = {d for d, r in self.desired.items() if r.ifname and not self.table.links.index(r.ifname)}
            for d in self.pending:
                self.programmed.pop(d, None)
            self.need_resync = False
        elif self.dirty or self.pending:
            todo, self.dirty = self.dirty | self.pending, set()
            try:
                stats, self.pending = self.table.apply_changes(self.desired, todo, self.programmed)
            except Exception:
                self.dirty |= todo
                raise
        else:
            return
        if stats.added or stats.removed:
            log.info("routes: %d programmed, %d removed, %d waiting for their interface", stats.added,
                     stats.removed, len(self.pending))

    def resync(self) -> None:
        self.need_resync = True

    @property
    def wants_retry(self) -> bool:
        return bool(self.pending)


# --- the nftables table's managers ------------------------------------------------------------------


def _member_key(member: object) -> object:
    if isinstance(member, tuple):
        return ("concat", *member)
    text = str(member)
    if text.endswith("/128" if ":" in text else "/32"):
        return text.rpartition("/")[0]
    return ("prefix", *text.split("/")[:1], int(text.split("/")[1]))


def _family(member: object) -> str:
    """The table a set member goes to: ``ip6`` for an IPv6 address or CIDR, else ``ip``."""
    addr = member[0] if isinstance(member, tuple) else member
    return "ip6" if ":" in str(addr) else "ip"


def _tables(table: nft.Table, table6: nft.Table | None) -> list[nft.Table]:
    return [table] if table6 is None else [table, table6]


class IPSetsManager:
    """``cali40…`` sets (``cali60…`` in the ``ip6`` table): created when a rule needs one, in each
    family's table, members added and removed as they change, each in its family's set.

    Interval sets may not hold overlapping elements, so a set's kernel elements are its members less
    any CIDR inside another member (kept aside, restored when the covering one goes)."""

    name = "ipsets"

    def __init__(self, table: nft.Table, table6: nft.Table | None = None) -> None:
        self.table = table
        self.tables = _tables(table, table6)
        self.kinds: dict[str, str] = {}
        self.members: dict[str, set[object]] = {}
        self.wide: dict[tuple[str, str], set[str]] = {}    # (set, family) -> its CIDR members (not one address)
        self._queue: list[Message] = []

    def on_update(self, msg: Message) -> None:
        if isinstance(msg, (messages.IPSetUpdate, messages.IPSetRemove, messages.IPSetDelta)):
            self._queue.append(msg)

    def apply(self) -> None:
        queue, self._queue = self._queue, []
        for msg in queue:
            if isinstance(msg, messages.IPSetUpdate):
                self.kinds[msg.id] = msg.kind
                self.members.setdefault(msg.id, set())
                for table in self.tables:
                    addr = "ipv6_addr" if table.family == "ip6" else "ipv4_addr"
                    name = rules.set_name(msg.id, table.family)
                    if msg.kind == "ipport":
                        table.ensure_set(name, [addr, "inet_proto", "inet_service"])
                    else:
                        table.ensure_set(name, addr, flags=("interval",))
            elif isinstance(msg, messages.IPSetRemove):
                self.kinds.pop(msg.id, None)
                self.members.pop(msg.id, None)
                for table in self.tables:
                    self.wide.pop((msg.id, table.family), None)
                    table.remove_set(rules.set_name(msg.id, table.family))
            elif isinstance(msg, messages.IPSetDelta) and msg.id in self.members:
                members = self.members[msg.id]
                members -= msg.removed
                members |= msg.added
                for table in self.tables:
                    fam = table.family
                    added = {m for m in msg.added if _family(m) == fam}
                    removed = {m for m in msg.removed if _family(m) == fam}
                    if added or removed:
                        self._delta(table, msg.id, added, removed)

    def _delta(self, table: nft.Table, sid: str, added: set[object], removed: set[object]) -> None:
        fam = table.family
        name = rules.set_name(sid, fam)
        single = "/128" if fam == "ip6" else "/32"
        wide = self.wide.setdefault((sid, fam), set())
        members = self.members[sid]
        changed_wide = False
        for m in added | removed:
            if isinstance(m, str) and not m.endswith(single):
                changed_wide = True
                (wide.add if m in members else wide.discard)(m)
        if self.kinds[sid] == "ipport" or (not wide and not changed_wide):
            table.remove_elements(name, [_member_key(m) for m in removed])
            table.add_elements(name, {_member_key(m): None for m in added})
            return
        # Some CIDRs: recompute this set's non-overlapping cover.
        import ipaddress

        nets = sorted((ipaddress.ip_network(str(m)) for m in members if _family(m) == fam),
                      key=lambda n: (n.prefixlen, n))
        cover: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for n in nets:
            if not any(n.subnet_of(c) for c in cover if c.version == n.version):  # type: ignore[arg-type]
                cover.append(n)
        want = {_member_key(str(n)) for n in cover}
        have = set(table.sets[name].elements)
        table.remove_elements(name, have - want)
        table.add_elements(name, {k: None for k in want - have})

    def resync(self) -> None:
        for table in self.tables:
            table.need_resync = True


class PolicyManager:
    """Chains of active policies (``cali-pi-``/``cali-po-``) and profiles (``cali-pri-``/``cali-pro-``)."""

    name = "policy"

    def __init__(self, table: nft.Table, table6: nft.Table | None = None) -> None:
        self.table = table
        self.tables = _tables(table, table6)
        self._queue: list[Message] = []

    def on_update(self, msg: Message) -> None:
        if isinstance(msg, (messages.ActivePolicyUpdate, messages.ActivePolicyRemove, messages.ActiveProfileUpdate,
                            messages.ActiveProfileRemove)):
            self._queue.append(msg)

    def apply(self) -> None:
        queue, self._queue = self._queue, []
        for msg in queue:
            for table in self.tables:
                fam = table.family
                if isinstance(msg, messages.ActivePolicyUpdate):
                    for chain in rules.policy_chains(msg.policy.id, msg.policy.rules, family=fam):
                        table.set_chain(chain)
                elif isinstance(msg, messages.ActivePolicyRemove):
                    for inbound in (True, False):
                        table.remove_chain(rules.policy_chain(msg.id, inbound))
                elif isinstance(msg, messages.ActiveProfileUpdate):
                    for chain in rules.profile_chains(msg.name, msg.rules, family=fam):
                        table.set_chain(chain)
                elif isinstance(msg, messages.ActiveProfileRemove):
                    for inbound in (True, False):
                        table.remove_chain(rules.profile_chain(msg.name, inbound))

    def resync(self) -> None:
        for table in self.tables:
            table.need_resync = True


class EndpointManager:
    """Per-endpoint chains and the dispatch to them; the static chains, which need no input."""

    name = "endpoints"

    def __init__(self, table: nft.Table, table6: nft.Table | None = None, *, interface_prefix: str = "cali") -> None:
        self.table = table
        self.tables = _tables(table, table6)
        self.prefix = interface_prefix
        self.workloads: dict[str, messages.EndpointUpdate] = {}
        self.hosts: dict[str, messages.EndpointUpdate] = {}
        self._queue: list[Message] = []
        self._static_done = False

    def on_update(self, msg: Message) -> None:
        if isinstance(msg, (messages.EndpointUpdate, messages.EndpointRemove)):
            self._queue.append(msg)

    def _static(self) -> None:
        for table in self.tables:
            table.ensure_set(rules.FROM_WL_MAP, "ifname", map_to="verdict")
            table.ensure_set(rules.TO_WL_MAP, "ifname", map_to="verdict")
            for chain in rules.static_chains(self.prefix, family=table.family):
                table.set_chain(chain)
            for chain in rules.host_dispatch([]):
                table.set_chain(chain)
        self._static_done = True

    def apply(self) -> None:
        if not self._static_done:
            self._static()
        queue, self._queue = self._queue, []
        hosts_changed = False
        for msg in queue:
            if isinstance(msg, messages.EndpointUpdate) and not msg.host:
                old = self.workloads.get(msg.key)
                if old is not None and old.iface != msg.iface:
                    self._remove_workload(old.iface)
                self.workloads[msg.key] = msg
                chains = rules.workload_chains(msg.iface, msg.tiers, msg.profiles)   # the same in both families
                for table in self.tables:
                    for chain in chains:
                        table.set_chain(chain)
                    table.add_elements(rules.FROM_WL_MAP, {msg.iface: "goto " + rules.endpoint_chain("cali-fw-",
                                                                                                       msg.iface)})
                    table.add_elements(rules.TO_WL_MAP, {msg.iface: "goto " + rules.endpoint_chain("cali-tw-",
                                                                                                     msg.iface)})
            elif isinstance(msg, messages.EndpointRemove) and not msg.host:
                old = self.workloads.pop(msg.key, None)
                if old is not None:
                    self._remove_workload(old.iface)
            elif isinstance(msg, messages.EndpointUpdate):
                self.hosts[msg.key] = msg
                hosts_changed = True
            elif isinstance(msg, messages.EndpointRemove):
                hosts_changed = self.hosts.pop(msg.key, None) is not None or hosts_changed
        if hosts_changed:
            self._apply_hosts()

    def _apply_hosts(self) -> None:
        """``resolveHostEndpoints`` + ``updateHostEndpoints``: one host endpoint per interface (the
        lowest name wins), and at most one all-interfaces one (``interfaceName: "*"``, again the
        lowest name), whose chains are the dispatch chains' default for every other interface."""
        chosen: dict[str, messages.EndpointUpdate] = {}
        for key in sorted(self.hosts):
            h = self.hosts[key]
            chosen.setdefault(rules.ALL_INTERFACES if h.iface == "*" else h.iface, h)
        default = rules.ALL_INTERFACES if rules.ALL_INTERFACES in chosen else ""
        named = [i for i in chosen if i != rules.ALL_INTERFACES]
        wanted = {rules.endpoint_chain(p, i) for i in chosen for p in rules.HOST_ENDPOINT_PREFIXES}
        for table in self.tables:
            for iface, h in chosen.items():
                for chain in rules.host_chains(iface, h.tiers, h.profiles, h.forward_tiers):
                    table.set_chain(chain)
            for chain in rules.host_dispatch(named, default):
                table.set_chain(chain)
            for name in [c for c in table.chains
                         if c.startswith(tuple(rules.FILTER + p for p in rules.HOST_ENDPOINT_PREFIXES))]:
                if name not in wanted:
                    table.remove_chain(name)

    def _remove_workload(self, iface: str) -> None:
        for table in self.tables:
            table.remove_elements(rules.FROM_WL_MAP, [iface])
            table.remove_elements(rules.TO_WL_MAP, [iface])
            table.remove_chain(rules.endpoint_chain("cali-fw-", iface))
            table.remove_chain(rules.endpoint_chain("cali-tw-", iface))

    def resync(self) -> None:
        for table in self.tables:
            table.need_resync = True


class NATManager:
    """natOutgoing in the ``calico`` table: the pools' sets and the masquerade rule."""

    name = "nat"

    def __init__(self, table: nft.Table, *, legacy_cleanup: Callable[[], None] | None = None) -> None:
        self.table = table
        self.want = messages.NATPoolsUpdate((), ())
        self.dirty = True
        self.legacy_cleanup = legacy_cleanup

    def on_update(self, msg: Message) -> None:
        if isinstance(msg, messages.NATPoolsUpdate):
            self.want, self.dirty = msg, True

    def apply(self) -> None:
        if self.legacy_cleanup is not None:
            self.legacy_cleanup()
            self.legacy_cleanup = None
        if not self.dirty:
            return
        for name, cidrs in ((rules.MASQ_SET, self.want.masquerade), (rules.ALL_POOLS_SET, self.want.all_pools)):
            self.table.ensure_set(name, "ipv4_addr", flags=("interval",))
            want = {_member_key(c if "/" in c else c + "/32") for c in cidrs}
            have = set(self.table.sets[name].elements)
            self.table.remove_elements(name, have - want)
            self.table.add_elements(name, {k: None for k in want - have})
        self.table.set_chain(rules.nat_outgoing_chain(bool(self.want.masquerade)))
        self.dirty = False

    def resync(self) -> None:
        self.table.need_resync = True


class TunnelFilterManager:
    """VXLAN from and to Calico's hosts only (``cali40all-vxlan-net``: the other nodes' addresses), ahead of
    host endpoint policy, so a host endpoint's default deny cannot cut the overlay."""

    name = "tunnel-filter"

    def __init__(self, table: nft.Table, *, interface_prefix: str = "cali") -> None:
        self.table = table
        self.prefix = interface_prefix
        self.want = messages.VXLANUpdate(None, ())
        self.dirty = True

    def on_update(self, msg: Message) -> None:
        if isinstance(msg, messages.VXLANUpdate):
            self.want, self.dirty = msg, True

    def apply(self) -> None:
        if not self.dirty:
            return
        enabled = self.want.local is not None
        if enabled:
            self.table.ensure_set(rules.ALL_VXLAN_SET, "ipv4_addr", flags=("interval",))
            want = {v.node_ip for v in self.want.remotes}
            have = set(self.table.sets[rules.ALL_VXLAN_SET].elements)
            self.table.remove_elements(rules.ALL_VXLAN_SET, have - want)
            self.table.add_elements(rules.ALL_VXLAN_SET, {k: None for k in want - have})
        self.table.set_chain(rules.input_chain(self.prefix, vxlan=enabled))
        self.table.set_chain(rules.output_chain(self.prefix, vxlan=enabled))
        if not enabled:
            self.table.remove_set(rules.ALL_VXLAN_SET)
        self.dirty = False

    def resync(self) -> None:
        self.table.need_resync = True


def delete_legacy_nat_table() -> None:
    """Earlier pycalico Felix kept natOutgoing in its own table ``ip calico-nat``: it was Felix's, it goes."""
    subprocess.run(["nft", "delete", "table", "ip", "calico-nat"], capture_output=True, timeout=30)


class TableManager:
    """The ``calico`` tables' one transaction per apply (after the managers that stage into it): the
    ``ip`` and ``ip6`` tables' changes in one nft batch, all or nothing."""

    name = "nftables"

    def __init__(self, table: nft.Table, table6: nft.Table | None = None) -> None:
        self.table = table
        self.tables = _tables(table, table6)

    def on_update(self, msg: Message) -> None:
        pass

    def apply(self) -> None:
        for table in self.tables:
            self._fill_missing_chains(table)
        nft.apply_tables(self.table.handle, self.tables)

    @staticmethod
    def _fill_missing_chains(table: nft.Table) -> None:
        """A chain named by a jump, goto or map element whose manager failed is created empty (it falls
        through to the endpoint chain's drop), so one manager's failure cannot fail everyone's
        transaction. Only what changed since the last apply is looked at."""
        missing = table.missing_targets()
        for name in sorted(missing):
            log.warning("chain %s is referenced but was not programmed in %s %s; creating it empty", name,
                        table.family, nft.TABLE)
            table.set_chain(nft.Chain(name, ()))

    def resync(self) -> None:
        for table in self.tables:
            table.need_resync = True


# --- the dataplane driver ---------------------------------------------------------------------------


@dataclass
class _State:
    failures: int = 0
    retry_at: float = 0.0
    backoff: float = BACKOFF_MIN
    last_error: str = ""


@dataclass
class Dataplane:
    """Runs every manager on every apply, each isolated from the others' failures."""

    managers: list[Manager]
    clock: Callable[[], float] = time.monotonic
    on_failure: Callable[[str, BaseException], None] | None = None
    states: dict[str, _State] = field(default_factory=dict)

    def on_update(self, msg: Message) -> None:
        for m in self.managers:
            m.on_update(msg)

    def resync(self) -> None:
        for m in self.managers:
            m.resync()

    def apply(self) -> list[str]:
        """Apply every manager that is due; return the names of those that failed."""
        failed = []
        now = self.clock()
        for m in self.managers:
            st = self.states.setdefault(m.name, _State())
            if st.failures and now < st.retry_at:
                failed.append(m.name)
                continue
            try:
                m.apply()
            except Exception as exc:  # any failure: this manager resyncs later, the others go on
                st.failures += 1
                st.last_error = str(exc)
                st.retry_at = now + st.backoff
                log.warning("%s: apply failed (%s); resync in %.1fs", m.name, exc, st.backoff)
                st.backoff = min(st.backoff * 2, BACKOFF_MAX)
                m.resync()
                failed.append(m.name)
                if self.on_failure is not None:
                    self.on_failure(m.name, exc)
            else:
                if st.failures:
                    log.info("%s: recovered after %d failed apply(s)", m.name, st.failures)
                self.states[m.name] = _State()
        return failed

    def next_retry(self) -> float | None:
        """Seconds until a failed manager is due again (or a route waits for its interface)."""
        now = self.clock()
        waits = [max(0.0, st.retry_at - now) for st in self.states.values() if st.failures]
        if any(getattr(m, "wants_retry", False) for m in self.managers):
            waits.append(0.5)
        return min(waits) if waits else None


def build(*, nft_handle: nft.NftHandle, route_table: RouteTable, vxlan: VXLANDevice, ipip: IPIPDevice,
          interface_prefix: str = "cali", legacy_cleanup: bool = True,
          ipv6: bool = True) -> tuple[Dataplane, nft.Table, dict[str, Manager]]:
    """The managers in Felix's apply order, sharing the ``ip calico`` and (with ``ipv6``, Calico's
    ``ipv6Support``, on by default) ``ip6 calico`` tables (the ``ip`` one is returned; natOutgoing and
    the VXLAN filter are IPv4's only)."""
    table = nft.Table(nft_handle)
    table6 = nft.Table(nft_handle, family="ip6") if ipv6 else None
    managers: list[Manager] = [
        IPIPManager(ipip), VXLANManager(vxlan), RouteManager(route_table),
        IPSetsManager(table, table6), PolicyManager(table, table6),
        EndpointManager(table, table6, interface_prefix=interface_prefix),
        NATManager(table, legacy_cleanup=delete_legacy_nat_table if legacy_cleanup else None),
        TunnelFilterManager(table, interface_prefix=interface_prefix), TableManager(table, table6),
    ]
    return Dataplane(managers), table, {m.name: m for m in managers}


__all__ = ["Dataplane", "EndpointManager", "IPIPManager", "IPSetsManager", "Manager", "NATManager", "PolicyID",
           "PolicyManager", "RouteManager", "TableManager", "TunnelFilterManager", "VXLANManager", "build"]
