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
    return text[:-3] if text.endswith("/32") else ("prefix", *text.split("/")[:1], int(text.split("/")[1]))


class IPSetsManager:
    """``cali40…`` sets: created when a rule needs one, members added and removed as they change.

    Interval sets may not hold overlapping elements, so a set's kernel elements are its members less
    any CIDR inside another member (kept aside, restored when the covering one goes)."""

    name = "ipsets"

    def __init__(self, table: nft.Table) -> None:
        self.table = table
        self.kinds: dict[str, str] = {}
        self.members: dict[str, set[object]] = {}
        self.wide: dict[str, set[str]] = {}          # set -> its non-/32 members
        self._queue: list[Message] = []

    def on_update(self, msg: Message) -> None:
        if isinstance(msg, (messages.IPSetUpdate, messages.IPSetRemove, messages.IPSetDelta)):
            self._queue.append(msg)

    def apply(self) -> None:
        queue, self._queue = self._queue, []
        for msg in queue:
            if isinstance(msg, messages.IPSetUpdate):
                name = rules.set_name(msg.id)
                self.kinds[msg.id] = msg.kind
                self.members.setdefault(msg.id, set())
                if msg.kind == "ipport":
                    self.table.ensure_set(name, ["ipv4_addr", "inet_proto", "inet_service"])
                else:
                    self.table.ensure_set(name, "ipv4_addr", flags=("interval",))
            elif isinstance(msg, messages.IPSetRemove):
                self.kinds.pop(msg.id, None)
                self.members.pop(msg.id, None)
                self.wide.pop(msg.id, None)
                self.table.remove_set(rules.set_name(msg.id))
            elif isinstance(msg, messages.IPSetDelta) and msg.id in self.members:
                self._delta(msg)

    def _delta(self, msg: messages.IPSetDelta) -> None:
        name = rules.set_name(msg.id)
        members = self.members[msg.id]
        members -= msg.removed
        members |= msg.added
        wide = self.wide.setdefault(msg.id, set())
        changed_wide = False
        for m in msg.added | msg.removed:
            if isinstance(m, str) and not m.endswith("/32"):
                changed_wide = True
                (wide.add if m in members else wide.discard)(m)
        if self.kinds[msg.id] == "ipport" or (not wide and not changed_wide):
            self.table.remove_elements(name, [_member_key(m) for m in msg.removed])
            self.table.add_elements(name, {_member_key(m): None for m in msg.added})
            return
        # Some CIDRs: recompute this set's non-overlapping cover.
        import ipaddress

        nets = sorted((ipaddress.ip_network(str(m)) for m in members), key=lambda n: (n.prefixlen, n))
        cover: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for n in nets:
            if not any(n.subnet_of(c) for c in cover if c.version == n.version):  # type: ignore[arg-type]
                cover.append(n)
        want = {_member_key(str(n)) for n in cover}
        have = set(self.table.sets[name].elements)
        self.table.remove_elements(name, have - want)
        self.table.add_elements(name, {k: None for k in want - have})

    def resync(self) -> None:
        self.table.need_resync = True


class PolicyManager:
    """Chains of active policies (``cali-pi-``/``cali-po-``) and profiles (``cali-pri-``/``cali-pro-``)."""

    name = "policy"

    def __init__(self, table: nft.Table) -> None:
        self.table = table
        self._queue: list[Message] = []

    def on_update(self, msg: Message) -> None:
        if isinstance(msg, (messages.ActivePolicyUpdate, messages.ActivePolicyRemove, messages.ActiveProfileUpdate,
                            messages.ActiveProfileRemove)):
            self._queue.append(msg)

    def apply(self) -> None:
        queue, self._queue = self._queue, []
        for msg in queue:
            if isinstance(msg, messages.ActivePolicyUpdate):
                for chain in rules.policy_chains(msg.policy.id, msg.policy.rules):
                    self.table.set_chain(chain)
            elif isinstance(msg, messages.ActivePolicyRemove):
                for inbound in (True, False):
                    self.table.remove_chain(rules.policy_chain(msg.id, inbound))
            elif isinstance(msg, messages.ActiveProfileUpdate):
                for chain in rules.profile_chains(msg.name, msg.rules):
                    self.table.set_chain(chain)
            elif isinstance(msg, messages.ActiveProfileRemove):
                for inbound in (True, False):
                    self.table.remove_chain(rules.profile_chain(msg.name, inbound))

    def resync(self) -> None:
        self.table.need_resync = True


class EndpointManager:
    """Per-endpoint chains and the dispatch to them; the static chains, which need no input."""

    name = "endpoints"

    def __init__(self, table: nft.Table, *, interface_prefix: str = "cali") -> None:
        self.table = table
        self.prefix = interface_prefix
        self.workloads: dict[str, messages.EndpointUpdate] = {}
        self.hosts: dict[str, messages.EndpointUpdate] = {}
        self._queue: list[Message] = []
        self._static_done = False

    def on_update(self, msg: Message) -> None:
        if isinstance(msg, (messages.EndpointUpdate, messages.EndpointRemove)):
            self._queue.append(msg)

    def _static(self) -> None:
        self.table.ensure_set(rules.FROM_WL_MAP, "ifname", map_to="verdict")
        self.table.ensure_set(rules.TO_WL_MAP, "ifname", map_to="verdict")
        for chain in rules.static_chains(self.prefix):
            self.table.set_chain(chain)
        for chain in rules.host_dispatch([]):
            self.table.set_chain(chain)
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
                for chain in rules.workload_chains(msg.iface, msg.tiers, msg.profiles):
                    self.table.set_chain(chain)
                self.table.add_elements(rules.FROM_WL_MAP, {msg.iface: "goto " + rules.endpoint_chain("cali-fw-",
                                                                                                        msg.iface)})
                self.table.add_elements(rules.TO_WL_MAP, {msg.iface: "goto " + rules.endpoint_chain("cali-tw-",
                                                                                                      msg.iface)})
            elif isinstance(msg, messages.EndpointRemove) and not msg.host:
                old = self.workloads.pop(msg.key, None)
                if old is not None:
                    self._remove_workload(old.iface)
            elif isinstance(msg, messages.EndpointUpdate):
                old = self.hosts.get(msg.key)
                if old is not None and old.iface != msg.iface:
                    self._remove_host(old.iface)
                self.hosts[msg.key] = msg
                for chain in rules.host_chains(msg.iface, msg.tiers, msg.profiles):
                    self.table.set_chain(chain)
                hosts_changed = True
            elif isinstance(msg, messages.EndpointRemove):
                old = self.hosts.pop(msg.key, None)
                if old is not None:
                    hosts_changed = True
        if hosts_changed:
            ifaces = [h.iface for h in self.hosts.values()]
            for chain in rules.host_dispatch(ifaces):
                self.table.set_chain(chain)
            for name in [c for c in self.table.chains if c.startswith((rules.FILTER + "cali-th-",
                                                                       rules.FILTER + "cali-fh-"))]:
                if name.split("-", 3)[-1] not in ifaces:
                    self.table.remove_chain(name)

    def _remove_workload(self, iface: str) -> None:
        self.table.remove_elements(rules.FROM_WL_MAP, [iface])
        self.table.remove_elements(rules.TO_WL_MAP, [iface])
        self.table.remove_chain(rules.endpoint_chain("cali-fw-", iface))
        self.table.remove_chain(rules.endpoint_chain("cali-tw-", iface))

    def _remove_host(self, iface: str) -> None:
        self.table.remove_chain(rules.endpoint_chain("cali-fh-", iface))
        self.table.remove_chain(rules.endpoint_chain("cali-th-", iface))

    def resync(self) -> None:
        self.table.need_resync = True


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
    """The ``calico`` table's one transaction per apply (after the managers that stage into it)."""

    name = "nftables"

    def __init__(self, table: nft.Table) -> None:
        self.table = table

    def on_update(self, msg: Message) -> None:
        pass

    def apply(self) -> None:
        self._fill_missing_chains()
        self.table.apply()

    def _fill_missing_chains(self) -> None:
        """A chain named by a jump, goto or map element whose manager failed is created empty (it falls
        through to the endpoint chain's drop), so one manager's failure cannot fail everyone's
        transaction. Only what changed since the last apply is looked at."""
        missing = self.table.missing_targets()
        for name in sorted(missing):
            log.warning("chain %s is referenced but was not programmed; creating it empty", name)
            self.table.set_chain(nft.Chain(name, ()))

    def resync(self) -> None:
        self.table.need_resync = True


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
          interface_prefix: str = "cali", legacy_cleanup: bool = True) -> tuple[Dataplane, nft.Table, dict[str, Manager]]:
    """The managers in Felix's apply order, sharing one ``ip calico`` table."""
    table = nft.Table(nft_handle)
    managers: list[Manager] = [
        IPIPManager(ipip), VXLANManager(vxlan), RouteManager(route_table),
        IPSetsManager(table), PolicyManager(table), EndpointManager(table, interface_prefix=interface_prefix),
        NATManager(table, legacy_cleanup=delete_legacy_nat_table if legacy_cleanup else None),
        TunnelFilterManager(table, interface_prefix=interface_prefix), TableManager(table),
    ]
    return Dataplane(managers), table, {m.name: m for m in managers}


__all__ = ["Dataplane", "EndpointManager", "IPIPManager", "IPSetsManager", "Manager", "NATManager", "PolicyID",
           "PolicyManager", "RouteManager", "TableManager", "TunnelFilterManager", "VXLANManager", "build"]
