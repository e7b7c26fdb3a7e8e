"""Policy as Felix computes with it: v3 resources converted to selectors, rules and IP set IDs.

Two conversions of Calico's, in one place:

* libcalico-go's update processors (``syncersv1/updateprocessors/rules.go``,
  ``networkpolicyprocessor.go``): a NetworkPolicy's selector gets
  ``projectcalico.org/namespace == '<ns>'``, a rule's ``namespaceSelector``
  becomes a ``pcns.``-prefixed selector, ``serviceAccounts`` become
  ``projectcalico.org/serviceaccount in {...}`` and ``pcsa.``-prefixed
  selectors; Pass is Calico's "next-tier";
* Felix's rule scanner (``felix/calc/rule_scanner.go``): each selector a rule
  uses becomes an IP set named by the selector's unique ID (``s:<sha224>``),
  each named port an IP-and-port set (``n:<sha224>`` of selector, protocol and
  port name), negated selectors folded into the positive one where there is one.

A value that fails here (a selector that does not parse, written straight into
the datastore) raises :class:`PolicyError`; the calculation graph logs it and
treats the policy as absent, as Calico treats a value that fails to parse.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass

from libcalico import api, selector
from libcalico.api.policy import DEFAULT_TIER, EntityRule, Rule

NAMESPACE_LABEL = "projectcalico.org/namespace"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
NAMESPACE_LABEL_PREFIX = "pcns."
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}
PROTOCOL_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}


class PolicyError(ValueError):
    """A policy or profile Felix cannot use (it is treated as absent)."""


def make_unique_id(prefix: str, content: str) -> str:
    """libcalico-go ``hash.MakeUniqueID``: ``<prefix>:`` + base64url(SHA-224(``<prefix>:<content>``))."""
    digest = hashlib.sha224(f"{prefix}:{content}".encode()).digest()
    return f"{prefix}:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def parse_selector(text: str) -> selector.Selector:
    try:
        return selector.parse(text)
    except selector.SelectorError as exc:
        raise PolicyError(str(exc)) from exc


def selector_id(sel: selector.Selector) -> str:
    return make_unique_id("s", str(sel))


# --- selector rewriting (PrefixVisitor) -----------------------------------------------------------


def _prefix_node(node: selector.parsing.Node, prefix: str) -> selector.parsing.Node:
    p = selector.parsing
    if isinstance(node, p.Has):
        return p.Has(prefix + node.label)
    if isinstance(node, p.Compare):
        return p.Compare(prefix + node.label, node.op, node.value)
    if isinstance(node, p.InSet):
        return p.InSet(prefix + node.label, node.values, node.negated)
    if isinstance(node, p.Not):
        return p.Not(_prefix_node(node.operand, prefix))
    if isinstance(node, p.And):
        return p.And(tuple(_prefix_node(o, prefix) for o in node.operands))
    if isinstance(node, p.Or):
        return p.Or(tuple(_prefix_node(o, prefix) for o in node.operands))
    return node


def attach_prefix(text: str, prefix: str) -> str:
    """``parseSelectorAttachPrefix``: every label in the selector gets ``prefix``."""
    return str(selector.Selector(_prefix_node(parse_selector(text).root, prefix)))


def _service_accounts(sam: api.policy.ServiceAccountMatch) -> str:
    out = attach_prefix(sam.selector, SERVICE_ACCOUNT_LABEL_PREFIX) if sam.selector else ""
    if not sam.names:
        return out
    names = "', '".join(sam.names)
    by_name = str(parse_selector(f"{SERVICE_ACCOUNT_LABEL} in {{ '{names}' }}"))
    return f"({out}) && ({by_name})" if out else by_name


def entity_selector(er: EntityRule, ns: str) -> str:
    """``GetEntityRuleSelector``: the endpoint selector a rule side stands for."""
    ns_sel = ""
    if er.namespace_selector:
        ns_sel = attach_prefix(er.namespace_selector, NAMESPACE_LABEL_PREFIX)
        ns_sel = ns_sel.replace("all()", f"has({NAMESPACE_LABEL})")
        ns_sel = ns_sel.replace("global()", f"!has({NAMESPACE_LABEL})")
    elif ns:
        ns_sel = f"{NAMESPACE_LABEL} == '{ns}'"
    parts = []
    if er.service_accounts is not None:
        sa = _service_accounts(er.service_accounts)
        if sa:
            parts.append(sa)
    if er.selector:
        parts.append(er.selector)
    sel = parts[0] if len(parts) == 1 else ("(" + ") && (".join(parts) + ")" if parts else "")
    if ns_sel and (sel or er.not_selector or er.namespace_selector):
        sel = f"({ns_sel}) && ({sel})" if sel else ns_sel
    return sel


# --- parsed rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IPSetData:
    """An IP set a rule needs: the addresses of what ``selector`` matches, or with ``named_port``
    the (address, protocol, port) of those endpoints' ports of that name."""

    selector: selector.Selector
    named_port: str = ""
    protocol: str = ""  # for named ports: tcp | udp | sctp | any

    @property
    def id(self) -> str:
        sel_id = selector_id(self.selector)
        if not self.named_port:
            return sel_id
        return make_unique_id("n", f"{sel_id},{self.protocol},{self.named_port}")


PortRange = tuple[int, int]


@dataclass(frozen=True)
class ParsedRule:
    action: str                            # allow | deny | log | pass
    ip_version: int | None = None
    protocol: int | None = None
    not_protocol: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    not_icmp_type: int | None = None
    not_icmp_code: int | None = None
    src_nets: tuple[str, ...] = ()
    not_src_nets: tuple[str, ...] = ()
    dst_nets: tuple[str, ...] = ()
    not_dst_nets: tuple[str, ...] = ()
    src_ports: tuple[PortRange, ...] = ()
    not_src_ports: tuple[PortRange, ...] = ()
    dst_ports: tuple[PortRange, ...] = ()
    not_dst_ports: tuple[PortRange, ...] = ()
    src_sets: tuple[str, ...] = ()
    not_src_sets: tuple[str, ...] = ()
    dst_sets: tuple[str, ...] = ()
    not_dst_sets: tuple[str, ...] = ()
    src_named_port_sets: tuple[str, ...] = ()
    not_src_named_port_sets: tuple[str, ...] = ()
    dst_named_port_sets: tuple[str, ...] = ()
    not_dst_named_port_sets: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedRules:
    """A policy's or profile's rules, and the IP sets they need."""

    inbound: tuple[ParsedRule, ...]
    outbound: tuple[ParsedRule, ...]
    ip_sets: tuple[IPSetData, ...]


@dataclass(frozen=True, order=True)
class PolicyID:
    tier: str
    namespace: str
    name: str
    kind: str = api.GlobalNetworkPolicy.KIND  # the kind name: it is part of messages and logs

    def chain_id(self) -> str:
        """``<tier>/<name>`` or ``<tier>/<namespace>/<name>``: the policy's part of its chain names."""
        return f"{self.tier}/{self.namespace}/{self.name}" if self.namespace else f"{self.tier}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


@dataclass(frozen=True)
class ParsedPolicy:
    id: PolicyID
    order: float                  # +inf for no order
    selector: selector.Selector
    ingress: bool                 # governs ingress
    egress: bool
    rules: ParsedRules
    # GlobalNetworkPolicy's host endpoint flags (policy_sorter.go policyMetadata): which of a host
    # endpoint's tier lists the policy goes in (event_sequencer.go tierInfoToProtoTierInfo).
    apply_on_forward: bool = False
    pre_dnat: bool = False
    do_not_track: bool = False


def _nets(nets: list[str]) -> tuple[str, ...]:
    out = []
    for n in nets:
        try:
            out.append(str(ipaddress.ip_network(n, strict=False)))
        except ValueError:
            continue  # ConvertStringsToNets skips what does not parse
    return tuple(out)


def _split_ports(ports: list[int | str]) -> tuple[tuple[PortRange, ...], list[str]]:
    numeric: list[PortRange] = []
    named: list[str] = []
    for p in ports:
        if isinstance(p, int):
            numeric.append((p, p))
        elif ":" in p:
            lo, hi = p.split(":")
            numeric.append((int(lo), int(hi)))
        else:
            named.append(p)
    return tuple(numeric), named


def _protocol(p: int | str | None) -> int | None:
    if p is None:
        return None
    return p if isinstance(p, int) else PROTOCOL_NUMBERS[p]


def _combine(positive: str, negated: str) -> tuple[str, str]:
    """``combineMatchesIfPossible``."""
    if positive and negated:
        return f"({positive}) && (!({negated}))", ""
    return positive, negated


def parse_rule(rule: Rule, ns: str, sets: dict[str, IPSetData]) -> ParsedRule:
    """One v3 rule as Felix renders it; the IP sets it needs are added to ``sets``."""
    src_raw, not_src_raw = _combine(entity_selector(rule.source, ns), rule.source.not_selector)
    dst_raw, not_dst_raw = _combine(entity_selector(rule.destination, ns), rule.destination.not_selector)
    src_sel = parse_selector(src_raw) if src_raw else None
    dst_sel = parse_selector(dst_raw) if dst_raw else None
    proto = _protocol(rule.protocol)
    np_proto = PROTOCOL_NAMES.get(proto, "any") if proto is not None else "any"

    def named(ports: list[str], positive: selector.Selector | None) -> tuple[str, ...]:
        ids = []
        for port in ports:
            data = IPSetData(positive or selector.parse("all()"), port, np_proto)
            sets[data.id] = data
            ids.append(data.id)
        return tuple(ids)

    def plain(sel: selector.Selector | None) -> tuple[str, ...]:
        if sel is None:
            return ()
        data = IPSetData(sel)
        sets[data.id] = data
        return (data.id,)

    src_num, src_named = _split_ports(rule.source.ports)
    dst_num, dst_named = _split_ports(rule.destination.ports)
    not_src_num, not_src_named = _split_ports(rule.source.not_ports)
    not_dst_num, not_dst_named = _split_ports(rule.destination.not_ports)
    icmp, not_icmp = rule.icmp, rule.not_icmp
    action = rule.action.value.lower()
    return ParsedRule(
        action=action, ip_version=rule.ip_version, protocol=proto, not_protocol=_protocol(rule.not_protocol),
        icmp_type=icmp.type if icmp else None, icmp_code=icmp.code if icmp else None,
        not_icmp_type=not_icmp.type if not_icmp else None, not_icmp_code=not_icmp.code if not_icmp else None,
        src_nets=_nets(rule.source.nets), not_src_nets=_nets(rule.source.not_nets),
        dst_nets=_nets(rule.destination.nets), not_dst_nets=_nets(rule.destination.not_nets),
        src_ports=src_num, not_src_ports=not_src_num, dst_ports=dst_num, not_dst_ports=not_dst_num,
        src_named_port_sets=named(src_named, src_sel), dst_named_port_sets=named(dst_named, dst_sel),
        not_src_named_port_sets=named(not_src_named, src_sel), not_dst_named_port_sets=named(not_dst_named, dst_sel),
        src_sets=plain(src_sel) if (src_num or not src_named) else (),
        dst_sets=plain(dst_sel) if (dst_num or not dst_named) else (),
        not_src_sets=plain(parse_selector(not_src_raw) if not_src_raw else None),
        not_dst_sets=plain(parse_selector(not_dst_raw) if not_dst_raw else None),
    )


def parse_rules(ingress: list[Rule], egress: list[Rule], ns: str) -> ParsedRules:
    sets: dict[str, IPSetData] = {}
    inbound = tuple(parse_rule(r, ns, sets) for r in ingress)
    outbound = tuple(parse_rule(r, ns, sets) for r in egress)
    return ParsedRules(inbound, outbound, tuple(sets[k] for k in sorted(sets)))


def policy_selector(res: api.NetworkPolicy | api.GlobalNetworkPolicy) -> str:
    """``ConvertNetworkPolicyV3ToV1Value`` / the GNP processor: the endpoint selector of a policy."""
    spec = res.spec
    sel = spec.selector
    if isinstance(res, api.NetworkPolicy):
        ns_sel = f"{NAMESPACE_LABEL} == '{res.metadata.namespace}'"
        sel = f"({sel}) && {ns_sel}" if sel else ns_sel
    else:
        ns_selector = res.spec.namespace_selector
        if ns_selector:
            prefixed = attach_prefix(ns_selector, NAMESPACE_LABEL_PREFIX)
            sel = f"({sel}) && {prefixed}" if sel else prefixed
    if spec.service_account_selector:
        prefixed = attach_prefix(spec.service_account_selector, SERVICE_ACCOUNT_LABEL_PREFIX)
        sel = f"({sel}) && {prefixed}" if sel else prefixed
    return sel


def parse_policy(res: api.NetworkPolicy | api.GlobalNetworkPolicy) -> ParsedPolicy:
    spec = res.spec
    ns = res.metadata.namespace if isinstance(res, api.NetworkPolicy) else ""
    pid = PolicyID(spec.tier or DEFAULT_TIER, ns, res.metadata.name, res.KIND)
    types = {t.value for t in spec.types}
    if not types:  # Felix's back-compatibility: no types means both
        types = {"Ingress", "Egress"}
    return ParsedPolicy(
        id=pid, order=float("inf") if spec.order is None else float(spec.order),
        selector=parse_selector(policy_selector(res)),
        ingress="Ingress" in types, egress="Egress" in types,
        rules=parse_rules(spec.ingress, spec.egress, ns),
        apply_on_forward=bool(getattr(spec, "apply_on_forward", False)),
        pre_dnat=bool(getattr(spec, "pre_dnat", False)), do_not_track=bool(getattr(spec, "do_not_track", False)))


def parse_profile(res: api.Profile) -> ParsedRules:
    return parse_rules(res.spec.ingress, res.spec.egress, "")


DEFAULT_DROP_PROFILE = ParsedRules((ParsedRule("deny"),), (ParsedRule("deny"),), ())
"""What a missing profile becomes (``DummyDropRules``): endpoints naming it are not left open."""
