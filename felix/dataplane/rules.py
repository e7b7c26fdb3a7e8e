"""Calico's rules, rendered as nftables JSON statements: static chains, policies, profiles, endpoints.

The layout is Calico's nftables mode (``felix/rules/static.go``, ``endpoints.go``,
``policy.go``, ``dispatch.go``; ``felix/nftables/table_layer.go``): one table
holds what iptables splits into filter and nat tables, so each chain name
carries its layer, ``filter-`` or ``nat-``, before Calico's name:

* base chains ``filter-INPUT``, ``filter-FORWARD``, ``filter-OUTPUT`` (filter
  hooks, priority 0) and ``nat-POSTROUTING`` (srcnat+10) jump to
  ``filter-cali-INPUT`` ... and ``nat-cali-POSTROUTING``;
* ``filter-cali-FORWARD`` sends traffic from and to ``cali*`` interfaces to the
  dispatch chains, which look the interface up in a verdict map
  (``iifname vmap @filter-cali-from-wl-dispatch``) and go to the endpoint's
  chain, ``filter-cali-fw-<iface>`` (from the workload: egress policy) or
  ``filter-cali-tw-<iface>`` (to it: ingress policy); unknown interfaces drop;
* an endpoint chain accepts established flows, drops invalid ones, clears
  the accept and pass marks (0x10000, 0x20000, in Felix's mask 0xffff0000),
  then per tier jumps to each policy's chain ``filter-cali-pi-<tier>/<ns>/<name>``
  (``-po-`` for egress) and returns once one set the accept mark; a tier
  whose policies all fell through drops (``End of tier``) unless its
  defaultAction is Pass or a Pass rule set the pass mark; then the profiles
  (``filter-cali-pri-``/``-pro-<name>``), and a final drop;
* a policy rule that allows sets the accept mark and returns; Pass sets the
  pass mark and returns; Deny drops; Log logs and goes on. Selectors are IP
  sets ``cali40s-<hash>``, named ports ``cali40n-<hash>`` sets of
  address . protocol . port;
* host endpoints: ``filter-cali-fh-<iface>``/``-th-<iface>`` from the INPUT and
  OUTPUT chains (through ``cali-from-host-endpoint``/``cali-to-host-endpoint``),
  with Calico's failsafe ports first; ``-fhfw-``/``-thfw-<iface>`` from the
  FORWARD chain (through ``cali-from-hep-forward``/``cali-to-hep-forward``), with
  the applyOnForward policies only and forwarded traffic allowed when there are
  none. An all-interfaces host endpoint (``interfaceName: "*"``) has the chains
  ``...-any-interface-at-all``, the dispatch chains' default after the named
  interfaces; workload interfaces never reach INPUT's or OUTPUT's dispatch;
* natOutgoing: ``nat-cali-nat-outgoing`` masquerades from
  ``@cali40masq-ipam-pools`` to outside ``@cali40all-ipam-pools``.

Every rule with an action carries a counter (Calico renders ``counter`` on all of them).

The ``ip6 calico`` table has the same layout, rendered with ``family="ip6"``: each rule
as ``FilterRuleToIPVersion`` leaves it (its ``ipVersion``, its nets of that family, or
no rule at all), ``ip6``/``icmpv6`` matches, ``cali60`` sets, ICMPv6 neighbour
discovery from workloads accepted ahead of policy (``ICMPv6Filter``), and no
natOutgoing chains.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
from typing import Any

from felix.dataplane.nft import BaseChain, Chain, Rule
from felix.messages import TierInfo
from felix.policy import ParsedRule, ParsedRules, PolicyID

MARK_ACCEPT = 0x10000
MARK_PASS = 0x20000
MARK_SCRATCH0 = 0x40000
MARK_SCRATCH1 = 0x80000
MARK_MASK = 0xFFFF0000
ALL_MARKS = MARK_MASK
MAX_NAME = 256            # knftables.NameLengthMax
MAX_SET_NAME = 31         # ipsets.MaxIPSetNameLength: the ``cali40`` names are truncated to it
VXLAN_PORT = 4789

FILTER = "filter-"
NAT = "nat-"
FORWARD = FILTER + "cali-FORWARD"
INPUT = FILTER + "cali-INPUT"
OUTPUT = FILTER + "cali-OUTPUT"
WL_TO_HOST = FILTER + "cali-wl-to-host"
FROM_WL = FILTER + "cali-from-wl-dispatch"
TO_WL = FILTER + "cali-to-wl-dispatch"
FROM_WL_MAP = FILTER + "cali-from-wl-dispatch"
TO_WL_MAP = FILTER + "cali-to-wl-dispatch"
FROM_HEP = FILTER + "cali-from-host-endpoint"
TO_HEP = FILTER + "cali-to-host-endpoint"
FROM_HEP_FORWARD = FILTER + "cali-from-hep-forward"
TO_HEP_FORWARD = FILTER + "cali-to-hep-forward"
# endpoint_mgr.go ``allInterfaces``: the chain suffix of the host endpoint with interfaceName "*".
ALL_INTERFACES = "any-interface-at-all"
HOST_ENDPOINT_PREFIXES = ("cali-th-", "cali-fh-", "cali-thfw-", "cali-fhfw-")
FAILSAFE_IN = FILTER + "cali-failsafe-in"
FAILSAFE_OUT = FILTER + "cali-failsafe-out"
NAT_POSTROUTING = NAT + "cali-POSTROUTING"
NAT_OUTGOING = NAT + "cali-nat-outgoing"
MASQ_SET = "cali40masq-ipam-pools"
ALL_POOLS_SET = "cali40all-ipam-pools"
ALL_VXLAN_SET = "cali40all-vxlan-net"

# FelixConfiguration's defaults (failsafeInboundHostPorts / failsafeOutboundHostPorts).
FAILSAFE_INBOUND = (("tcp", 22), ("udp", 68), ("tcp", 179), ("tcp", 2379), ("tcp", 2380), ("tcp", 5473),
                    ("tcp", 6443), ("tcp", 6666), ("tcp", 6667))
FAILSAFE_OUTBOUND = (("udp", 53), ("udp", 67), ("tcp", 179), ("tcp", 2379), ("tcp", 2380), ("tcp", 5473),
                     ("tcp", 6443), ("tcp", 6666), ("tcp", 6667))
_PROTO = {"tcp": 6, "udp": 17}

# --- names ---------------------------------------------------------------------------------------


def length_limited(prefix: str, suffix: str, max_len: int = MAX_NAME) -> str:
    """libcalico-go ``hash.GetLengthLimitedID``."""
    if not suffix:
        suffix = "_"
    if len(prefix) + len(suffix) > max_len or (len(prefix) + len(suffix) == max_len and suffix[0] == "_"):
        digest = base64.urlsafe_b64encode(hashlib.sha256(suffix.encode()).digest()).decode().rstrip("=")
        return prefix + "_" + digest[:max_len - 1 - len(prefix)]
    return prefix + suffix


def set_name(set_id: str, family: str = "ip") -> str:
    """``cali40`` (``cali60`` in the ``ip6`` table) + the IP set ID, truncated to 31 characters, ':' made '-'
    (``LegalizeSetName``)."""
    return (("cali60" if family == "ip6" else "cali40") + set_id)[:MAX_SET_NAME].replace(":", "-")


def policy_chain(pid: PolicyID, inbound: bool) -> str:
    return FILTER + length_limited("cali-pi-" if inbound else "cali-po-", pid.chain_id(), MAX_NAME - len(FILTER))


def profile_chain(name: str, inbound: bool) -> str:
    return FILTER + length_limited("cali-pri-" if inbound else "cali-pro-", name, MAX_NAME - len(FILTER))


def endpoint_chain(prefix: str, iface: str) -> str:
    """``cali-tw-``/``cali-fw-`` (workloads), ``cali-th-``/``cali-fh-`` (host endpoints) + the interface."""
    return FILTER + length_limited(prefix, iface, MAX_NAME - len(FILTER))


# --- statements --------------------------------------------------------------------------------------

COUNTER: dict[str, Any] = {"counter": {"packets": 0, "bytes": 0}}
ACCEPT: dict[str, Any] = {"accept": None}
DROP: dict[str, Any] = {"drop": None}
RETURN: dict[str, Any] = {"return": None}
_META_MARK: dict[str, Any] = {"meta": {"key": "mark"}}


def jump(target: str) -> dict[str, Any]:
    return {"jump": {"target": target}}


def goto(target: str) -> dict[str, Any]:
    return {"goto": {"target": target}}


def match(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def mark_clear(bits: int) -> dict[str, Any]:
    return match({"&": [_META_MARK, bits]}, 0)


def mark_set_bit(bits: int) -> dict[str, Any]:
    return match({"&": [_META_MARK, bits]}, 0, "!=")


def set_mark(bits: int) -> dict[str, Any]:
    return {"mangle": {"key": _META_MARK, "value": {"|": [_META_MARK, bits]}}}


def clear_mark(bits: int) -> dict[str, Any]:
    return {"mangle": {"key": _META_MARK, "value": {"&": [_META_MARK, bits ^ 0xFFFFFFFF]}}}


def iifname(name: str) -> dict[str, Any]:
    return match({"meta": {"key": "iifname"}}, name)


def oifname(name: str) -> dict[str, Any]:
    return match({"meta": {"key": "oifname"}}, name)


def l4proto(proto: int, op: str = "==") -> dict[str, Any]:
    return match({"meta": {"key": "l4proto"}}, proto, op)


def ct_state(*states: str) -> dict[str, Any]:
    return match({"ct": {"key": "state"}}, list(states) if len(states) > 1 else states[0], "in")


def _addr(side: str, family: str = "ip") -> dict[str, Any]:
    return {"payload": {"protocol": family, "field": side}}


def _icmp(field: str, family: str) -> dict[str, Any]:
    return {"payload": {"protocol": "icmpv6" if family == "ip6" else "icmp", "field": field}}


def _port(side: str) -> dict[str, Any]:
    return {"payload": {"protocol": "th", "field": side}}


def _net(cidr: str) -> Any:
    addr, _, plen = cidr.partition("/")
    full = "128" if ":" in addr else "32"
    return addr if plen in ("", full) else {"prefix": {"addr": addr, "len": int(plen)}}


def _nets(cidrs: tuple[str, ...]) -> Any:
    return _net(cidrs[0]) if len(cidrs) == 1 else {"set": [_net(c) for c in cidrs]}


def _ports(ports: tuple[tuple[int, int], ...]) -> Any:
    items = [lo if lo == hi else {"range": [lo, hi]} for lo, hi in ports]
    return items[0] if len(items) == 1 else {"set": items}


def rule(*stmts: dict[str, Any], comment: str = "") -> Rule:
    """A rule; a counter goes in before its action (the last statement)."""
    if stmts and any(k in stmts[-1] for k in ("accept", "drop", "return", "jump", "goto", "mangle", "log",
                                               "masquerade", "vmap")):
        stmts = (*stmts[:-1], COUNTER, stmts[-1])
    return Rule(tuple(stmts), comment)


# --- policy rules ----------------------------------------------------------------------------------


def _alternatives(ports: tuple[tuple[int, int], ...], named_sets: tuple[str, ...], side: str,
                  family: str) -> list[list[Any]]:
    """The OR of a rule's numeric ports and named ports, as alternative match lists."""
    out: list[list[Any]] = []
    if ports:
        out.append([match(_port(side), _ports(ports))])
    for sid in named_sets:
        key = {"concat": [_addr("saddr" if side == "sport" else "daddr", family), {"meta": {"key": "l4proto"}},
                          _port(side)]}
        out.append([match(key, "@" + set_name(sid, family))])
    return out or [[]]


def _filter_nets(nets: tuple[str, ...], family: str, *, negated: bool) -> tuple[tuple[str, ...], bool]:
    """``filterNets``: this family's nets, and whether the rule must go (nets given, none of this family;
    or a negated catch-all, a contradiction)."""
    if not nets:
        return (), False
    want_v6 = family == "ip6"
    out = []
    for n in nets:
        if (":" in n) != want_v6:
            continue
        if negated and n in ("0.0.0.0/0", "::/0"):
            return (), True
        out.append(n)
    return tuple(out), not out


def for_family(r: ParsedRule, family: str) -> ParsedRule | None:
    """``FilterRuleToIPVersion``: the rule as it applies to one family's table, or None where it does not."""
    if r.ip_version is not None and r.ip_version != (6 if family == "ip6" else 4):
        return None
    if r.protocol == (1 if family == "ip6" else 58):
        # ICMP in the ip6 table, ICMPv6 in the ip one: it can match nothing there, and its type match
        # (``icmpv6 type`` after ``meta l4proto 1``) is one nft refuses, which would fail the batch.
        return None
    fields: dict[str, tuple[str, ...]] = {}
    for name, negated in (("src_nets", False), ("not_src_nets", True), ("dst_nets", False), ("not_dst_nets", True)):
        nets, gone = _filter_nets(getattr(r, name), family, negated=negated)
        if gone:
            return None
        fields[name] = nets
    return dataclasses.replace(r, **fields)  # type: ignore[arg-type]


def rule_matches(r: ParsedRule, family: str = "ip") -> list[list[dict[str, Any]]]:
    """The match statements of a rule (already :func:`for_family`): one list, or several alternatives
    (numeric OR named ports)."""
    base: list[dict[str, Any]] = []

    def addr(side: str) -> dict[str, Any]:
        return _addr(side, family)

    def sname(sid: str) -> str:
        return set_name(sid, family)

    if r.protocol is not None:
        base.append(l4proto(r.protocol))
    if r.src_nets:
        base.append(match(addr("saddr"), _nets(r.src_nets)))
    for sid in r.src_sets:
        base.append(match(addr("saddr"), "@" + sname(sid)))
    if r.dst_nets:
        base.append(match(addr("daddr"), _nets(r.dst_nets)))
    for sid in r.dst_sets:
        base.append(match(addr("daddr"), "@" + sname(sid)))
    if r.icmp_type is not None:
        base.append(match(_icmp("type", family), r.icmp_type))
        if r.icmp_code is not None:
            base.append(match(_icmp("code", family), r.icmp_code))
    if r.not_protocol is not None:
        base.append(l4proto(r.not_protocol, "!="))
    if r.not_src_nets:
        base.append(match(addr("saddr"), _nets(r.not_src_nets), "!="))
    for sid in r.not_src_sets:
        base.append(match(addr("saddr"), "@" + sname(sid), "!="))
    if r.not_src_ports:
        base.append(match(_port("sport"), _ports(r.not_src_ports), "!="))
    for sid in r.not_src_named_port_sets:
        key = {"concat": [addr("saddr"), {"meta": {"key": "l4proto"}}, _port("sport")]}
        base.append(match(key, "@" + sname(sid), "!="))
    if r.not_dst_nets:
        base.append(match(addr("daddr"), _nets(r.not_dst_nets), "!="))
    for sid in r.not_dst_sets:
        base.append(match(addr("daddr"), "@" + sname(sid), "!="))
    if r.not_dst_ports:
        base.append(match(_port("dport"), _ports(r.not_dst_ports), "!="))
    for sid in r.not_dst_named_port_sets:
        key = {"concat": [addr("daddr"), {"meta": {"key": "l4proto"}}, _port("dport")]}
        base.append(match(key, "@" + sname(sid), "!="))
    if r.not_icmp_type is not None:
        # Calico: "icmp type != T code != C" (both negated).
        base.append(match(_icmp("type", family), r.not_icmp_type, "!="))
        if r.not_icmp_code is not None:
            base.append(match(_icmp("code", family), r.not_icmp_code, "!="))
    out = []
    for src in _alternatives(r.src_ports, r.src_named_port_sets, "sport", family):
        for dst in _alternatives(r.dst_ports, r.dst_named_port_sets, "dport", family):
            out.append(base[:1] + src + dst + base[1:] if r.protocol is not None else src + dst + base)
    return out


def render_rule(r: ParsedRule, *, log_prefix: str = "calico-packet", family: str = "ip") -> list[Rule]:
    """``CombineMatchAndActionsForProtoRule``: Allow and Pass set their mark, then return. Nothing for a
    rule that does not apply to this family's table (``FilterRuleToIPVersion``)."""
    fr = for_family(r, family)
    if fr is None:
        return []
    r = fr
    out: list[Rule] = []
    for m in rule_matches(r, family):
        if r.action == "log":
            out.append(rule(*m, {"log": {"prefix": f"{log_prefix}: ", "level": "info"}}))
        elif r.action == "deny":
            out.append(rule(*m, DROP))
        else:
            mark = MARK_ACCEPT if r.action == "allow" else MARK_PASS
            out.append(rule(*m, set_mark(mark)))
            out.append(rule(mark_set_bit(mark), RETURN))
    return out


def _rules_chain(name: str, rules: tuple[ParsedRule, ...], comment: str, family: str = "ip") -> Chain:
    """``ProtoRulesToIptablesRules``: trailing returns are no-ops and go; the first rule carries the
    chain's comment (an empty chain gets a ``continue`` rule to carry it)."""
    rendered: list[Rule] = []
    for r in rules:
        rendered += render_rule(r, family=family)
    while rendered and rendered[-1].expr and rendered[-1].expr[-1] == RETURN:
        rendered.pop()
    if not rendered:
        return Chain(name, (Rule(({"continue": None},), comment),))
    rendered[0] = Rule(rendered[0].expr, comment)
    return Chain(name, tuple(rendered))


def policy_chains(pid: PolicyID, rules: ParsedRules, *, family: str = "ip") -> list[Chain]:
    what = f"{pid.kind} {pid.namespace + '/' if pid.namespace else ''}{pid.name}"
    return [_rules_chain(policy_chain(pid, True), rules.inbound, f"{what} ingress", family),
            _rules_chain(policy_chain(pid, False), rules.outbound, f"{what} egress", family)]


def profile_chains(name: str, rules: ParsedRules, *, family: str = "ip") -> list[Chain]:
    return [_rules_chain(profile_chain(name, True), rules.inbound, f"Profile {name} ingress", family),
            _rules_chain(profile_chain(name, False), rules.outbound, f"Profile {name} egress", family)]


# --- endpoint chains ------------------------------------------------------------------------------


def _conntrack() -> list[Rule]:
    return [rule(ct_state("established", "related"), ACCEPT), rule(ct_state("invalid"), DROP)]


def _endpoint_chain(name: str, tiers: tuple[TierInfo, ...], profiles: tuple[str, ...], *, ingress: bool,
                    failsafe: str = "", drop_encap: bool = False, forward: bool = False) -> Chain:
    """``endpointIptablesChain``; ``forward`` is its chainTypeForward: no profiles and no final drop, and
    forwarded traffic allowed when no tier applies."""
    return Chain(name, _endpoint_rules(tiers, profiles, ingress, failsafe, drop_encap, forward))


@functools.lru_cache(maxsize=4096)
def _endpoint_rules(tiers: tuple[TierInfo, ...], profiles: tuple[str, ...], ingress: bool, failsafe: str,
                    drop_encap: bool, forward: bool) -> tuple[Rule, ...]:
    """An endpoint chain's rules depend on its tiers and profiles, not on its interface: endpoints with the
    same policies share the very Rule objects, so each rule's JSON is rendered once (Rule.rendering), not
    once per endpoint (100 endpoints of 100 policies each: 40,000 renderings become 400)."""
    rules = _conntrack()
    if failsafe:
        rules.append(rule(jump(failsafe)))
    rules.append(rule(clear_mark(MARK_ACCEPT | MARK_PASS)))
    if drop_encap:
        rules.append(rule(l4proto(17), match(_port("dport"), VXLAN_PORT), DROP,
                          comment="Drop VXLAN encapped packets originating in workloads"))
        rules.append(rule(l4proto(4), DROP, comment="Drop IPinIP encapped packets originating in workloads"))
    for tier in tiers:
        pols = tier.ingress if ingress else tier.egress
        if not pols:
            continue
        rules.append(rule(clear_mark(MARK_PASS), comment=f"Start of tier {tier.name}"))
        for pid in pols:
            rules.append(rule(mark_clear(MARK_PASS), jump(policy_chain(pid, ingress))))
            rules.append(rule(mark_set_bit(MARK_ACCEPT), RETURN, comment="Return if policy accepted"))
        if tier.default_action != "Pass":
            rules.append(rule(mark_clear(MARK_PASS), DROP,
                              comment=f"End of tier {tier.name}. Drop if no policies passed packet"))
    if forward:
        if not tiers:
            rules.append(rule(set_mark(MARK_ACCEPT), comment="Allow forwarded traffic by default"))
            rules.append(rule(RETURN, comment="Return for accepted forward traffic"))
        return tuple(rules)
    for prof in profiles:
        rules.append(rule(jump(profile_chain(prof, ingress))))
        rules.append(rule(mark_set_bit(MARK_ACCEPT), RETURN, comment="Return if profile accepted"))
    rules.append(rule(DROP, comment="Drop if no profiles matched"))
    return tuple(rules)


def workload_chains(iface: str, tiers: tuple[TierInfo, ...], profiles: tuple[str, ...]) -> list[Chain]:
    """``WorkloadEndpointToIptablesChains``: to the workload (ingress), from it (egress)."""
    return [_endpoint_chain(endpoint_chain("cali-tw-", iface), tiers, profiles, ingress=True),
            _endpoint_chain(endpoint_chain("cali-fw-", iface), tiers, profiles, ingress=False, drop_encap=True)]


def host_chains(iface: str, tiers: tuple[TierInfo, ...], profiles: tuple[str, ...],
                forward_tiers: tuple[TierInfo, ...] = ()) -> list[Chain]:
    """``HostEndpointToFilterChains``: to the host endpoint (egress from the host), from it (ingress), and
    forwarded to it and from it (the applyOnForward policies, no failsafes, no profiles). ``iface`` is
    the interface, or :data:`ALL_INTERFACES` for the all-interfaces host endpoint."""
    return [_endpoint_chain(endpoint_chain("cali-th-", iface), tiers, profiles, ingress=False,
                            failsafe=FAILSAFE_OUT),
            _endpoint_chain(endpoint_chain("cali-fh-", iface), tiers, profiles, ingress=True,
                            failsafe=FAILSAFE_IN),
            _endpoint_chain(endpoint_chain("cali-thfw-", iface), forward_tiers, profiles, ingress=False,
                            forward=True),
            _endpoint_chain(endpoint_chain("cali-fhfw-", iface), forward_tiers, profiles, ingress=True,
                            forward=True)]


def host_dispatch(ifaces: list[str], default: str = "") -> list[Chain]:
    """``HostDispatchChains`` (applyOnForward): each named interface goes to its chains; what is left goes
    to ``default``'s (the all-interfaces host endpoint's) when there is one, else returns."""
    def chain(name: str, pfx: str, side: Any) -> Chain:
        rules_ = [rule(side(i), goto(endpoint_chain(pfx, i))) for i in sorted(ifaces)]
        if default:
            rules_.append(rule(goto(endpoint_chain(pfx, default))))
        return Chain(name, tuple(rules_))
    return [chain(FROM_HEP, "cali-fh-", iifname), chain(TO_HEP, "cali-th-", oifname),
            chain(FROM_HEP_FORWARD, "cali-fhfw-", iifname), chain(TO_HEP_FORWARD, "cali-thfw-", oifname)]


# --- static chains -------------------------------------------------------------------------------


def _failsafe(ports: tuple[tuple[str, int], ...], side: str) -> tuple[Rule, ...]:
    return tuple(rule(l4proto(_PROTO[p]), match(_port(side), n), ACCEPT) for p, n in ports)


def icmpv6_filter() -> tuple[Rule, ...]:
    """``ICMPv6Filter``: what a workload must reach its router with (multicast listener query, report,
    done; router solicitation; neighbour solicitation and advertisement), ahead of its policy."""
    return tuple(rule(l4proto(58), match(_icmp("type", "ip6"), t), ACCEPT) for t in (130, 131, 132, 133, 135, 136))


def static_chains(prefix: str = "cali", *, family: str = "ip") -> list[Chain]:
    """The chains that do not depend on endpoints or policy (``static.go``), and the base chains. The
    ``ip6`` table has no natOutgoing chains, and lets workloads' neighbour discovery reach the host."""
    wl = f"{prefix}*"
    chains = [
        Chain(FILTER + "FORWARD", (rule(jump(FORWARD)),
                                   rule(mark_set_bit(MARK_ACCEPT), ACCEPT, comment="Policy explicitly accepted packet."),
                                   rule(set_mark(MARK_ACCEPT))),
              BaseChain("filter", "forward", 0)),
        Chain(FILTER + "INPUT", (rule(jump(INPUT)),), BaseChain("filter", "input", 0)),
        Chain(FILTER + "OUTPUT", (rule(jump(OUTPUT)),), BaseChain("filter", "output", 0)),
        Chain(NAT + "POSTROUTING", (rule(jump(NAT_POSTROUTING)),), BaseChain("nat", "postrouting", 110)),
        Chain(FORWARD, (rule(clear_mark(ALL_MARKS & ~MARK_ACCEPT)),
                        rule(mark_clear(MARK_ACCEPT), jump(FROM_HEP_FORWARD)),
                        rule(iifname(wl), jump(FROM_WL)),
                        rule(oifname(wl), jump(TO_WL)),
                        rule(jump(TO_HEP_FORWARD)))),
        input_chain(prefix, vxlan=False),
        output_chain(prefix, vxlan=False),
        Chain(WL_TO_HOST, (*(icmpv6_filter() if family == "ip6" else ()),
                           rule(jump(FROM_WL)),
                           rule(DROP, comment="Configured DefaultEndpointToHostAction"))),
        Chain(FROM_WL, (rule({"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@" + FROM_WL_MAP}}),
                        rule(DROP, comment="Unknown interface"))),
        Chain(TO_WL, (rule({"vmap": {"key": {"meta": {"key": "oifname"}}, "data": "@" + TO_WL_MAP}}),
                      rule(DROP, comment="Unknown interface"))),
        Chain(FAILSAFE_IN, _failsafe(FAILSAFE_INBOUND, "dport")),
        Chain(FAILSAFE_OUT, _failsafe(FAILSAFE_OUTBOUND, "dport")),
        Chain(NAT_POSTROUTING, (rule(jump(NAT_OUTGOING)),)),
    ]
    if family == "ip6":
        chains = [c for c in chains if not c.name.startswith(NAT)]
    return chains


def input_chain(prefix: str = "cali", *, vxlan: bool) -> Chain:
    """``filterInputChain``: VXLAN only from Calico's hosts, workloads to the host, then host endpoints."""
    head: list[Rule] = []
    if vxlan:
        head = [rule(l4proto(17), match(_port("dport"), VXLAN_PORT), match(_addr("saddr"), "@" + ALL_VXLAN_SET),
                     match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"), ACCEPT,
                     comment="Allow IPv4 VXLAN packets from allowed hosts"),
                rule(l4proto(17), match(_port("dport"), VXLAN_PORT),
                     match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"), DROP,
                     comment="Drop IPv4 VXLAN packets from non-allowed hosts")]
    return Chain(INPUT, (*head,
                         rule(iifname(f"{prefix}*"), goto(WL_TO_HOST)),
                         rule(mark_set_bit(MARK_ACCEPT), ACCEPT),
                         rule(clear_mark(ALL_MARKS)),
                         rule(jump(FROM_HEP)),
                         rule(mark_set_bit(MARK_ACCEPT), ACCEPT, comment="Host endpoint policy accepted packet.")))


def output_chain(prefix: str = "cali", *, vxlan: bool) -> Chain:
    """``filterOutputChain``: to workloads is not policed here; VXLAN to Calico's hosts always goes."""
    head: list[Rule] = []
    if vxlan:
        head = [rule(l4proto(17), match(_port("dport"), VXLAN_PORT),
                     match({"fib": {"result": "type", "flags": ["saddr"]}}, "local"),
                     match(_addr("daddr"), "@" + ALL_VXLAN_SET), ACCEPT,
                     comment="Allow IPv4 VXLAN packets to other allowed hosts")]
    return Chain(OUTPUT, (rule(mark_set_bit(MARK_ACCEPT), ACCEPT),
                          rule(oifname(f"{prefix}*"), RETURN),
                          *head,
                          rule(clear_mark(ALL_MARKS)),
                          rule(match({"ct": {"key": "status"}}, "dnat", "!="), jump(TO_HEP)),
                          rule(mark_set_bit(MARK_ACCEPT), ACCEPT, comment="Host endpoint policy accepted packet.")))


def nat_outgoing_chain(active: bool) -> Chain:
    """``NATOutgoingChain``: masquerade pool traffic leaving the pools, when a pool has natOutgoing."""
    if not active:
        return Chain(NAT_OUTGOING, ())
    return Chain(NAT_OUTGOING, (rule(match(_addr("saddr"), "@" + MASQ_SET), match(_addr("daddr"), "@" + ALL_POOLS_SET,
                                                                                  "!="),
                                     {"masquerade": {"flags": ["fully-random"]}}),))
