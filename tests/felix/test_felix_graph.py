"""Felix's calculation graph, state by state: what each change emits, and only that.

The route resolver is checked against :func:`felix.calc.calculate` (the full, pure
calculation) over sequences of states replayed in every order; the policy resolver
against Calico's semantics: active policies, IP sets and their members, tiers in
order, profiles, label inheritance, and bad values treated as absent.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest

from felix import calc, graph, messages
from felix.policy import make_unique_id, selector_id
from libcalico import api, selector
from tests.felix.test_felix_calc import BLOCKS, THREE_NODES, block, pool, wep


def _updates(msgs: list[messages.Message]) -> dict[str, calc.Route]:
    routes: dict[str, calc.Route] = {}
    for m in msgs:
        if isinstance(m, messages.RouteUpdate):
            routes[m.route.dst] = m.route
        elif isinstance(m, messages.RouteRemove):
            routes.pop(m.dst, None)
    return routes


class TestRoutesAreCalculatesAnswerIncrementally:
    STATES: list[tuple[str, str, Any]] = [
        ("IPPool", "p", pool(vxlanMode="Always")),
        *[("Node", n.metadata.name, n) for n in THREE_NODES],
        *[("IPAMBlock", b.metadata.name, b) for b in BLOCKS],
        ("WorkloadEndpoint", "a", wep("a", "node1", "10.244.1.1", "cali1")),
        ("WorkloadEndpoint", "b", wep("b", "node2", "10.244.2.1", "cali2")),
    ]

    @pytest.mark.parametrize("order", list(itertools.permutations(range(4)))[:12])
    def test_every_order_of_updates_ends_in_calculates_routes(self, order: tuple[int, ...]) -> None:
        msgs: list[messages.Message] = []
        r = graph.RouteResolver("node1", msgs.append)
        states = [self.STATES[i] for i in order] + self.STATES[4:]
        cs = calc.ClusterState()
        for kind, name, value in states:
            if kind == "IPPool":
                r.on_pool(name, value)
                cs.pools[name] = value
            elif kind == "Node":
                r.on_node(name, value)
                cs.nodes[name] = value
            elif kind == "IPAMBlock":
                r.on_block(name, value)
                cs.blocks[name] = value
            else:
                r.on_endpoint(("default", name), value)
                cs.endpoints[("default", name)] = value
            assert _updates(msgs) == calc.calculate(cs, "node1").routes == r.routes

    def test_one_endpoint_emits_one_route_and_nothing_else(self) -> None:
        msgs: list[messages.Message] = []
        r = graph.RouteResolver("node1", msgs.append)
        for kind, name, value in self.STATES[:7]:
            {"IPPool": r.on_pool, "Node": r.on_node, "IPAMBlock": r.on_block}[kind](name, value)
        msgs.clear()
        r.on_endpoint(("default", "x"), wep("x", "node1", "10.244.1.7", "calix"))
        assert msgs == [messages.RouteUpdate(calc.Route("10.244.1.7/32", "local", "calix"))]
        msgs.clear()
        r.on_endpoint(("default", "x"), None)
        assert msgs == [messages.RouteRemove("10.244.1.7/32")]
        msgs.clear()
        r.on_endpoint(("default", "y"), wep("y", "node2", "10.244.2.7", "caliy"))  # another node's: nothing
        assert msgs == []

    def test_a_block_deleted_takes_its_route_and_a_pool_change_reroutes_without_endpoints(self) -> None:
        msgs: list[messages.Message] = []
        r = graph.RouteResolver("node1", msgs.append)
        for kind, name, value in self.STATES[:7]:
            {"IPPool": r.on_pool, "Node": r.on_node, "IPAMBlock": r.on_block}[kind](name, value)
        b2 = BLOCKS[1].metadata.name
        msgs.clear()
        r.on_block(b2, None)
        assert msgs == [messages.RouteRemove("10.244.2.0/26")]
        r.on_block(b2, BLOCKS[1])
        msgs.clear()
        r.on_pool("p", pool(vxlanMode="CrossSubnet"))
        assert messages.RouteUpdate(calc.Route("10.244.2.0/26", "noencap", "", "192.168.3.112")) in msgs


# --- policy ---------------------------------------------------------------------------------------

def _wep(name: str, ip: str, node: str = "node1", labels: dict[str, str] | None = None, ns: str = "default",
         ports: list[dict[str, Any]] | None = None, profiles: list[str] | None = None) -> api.WorkloadEndpoint:
    return api.WorkloadEndpoint.model_validate({
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"projectcalico.org/namespace": ns, **(labels or {})}},
        "spec": {"node": node, "orchestrator": "k8s", "pod": name, "endpoint": "eth0",
                 "interfaceName": f"cali{name}", "ipNetworks": [f"{ip}/32"], "ports": ports or [],
                 "profiles": profiles if profiles is not None else [f"kns.{ns}"]}})


def _gnp(name: str, **spec: Any) -> api.GlobalNetworkPolicy:
    return api.GlobalNetworkPolicy.model_validate({"metadata": {"name": name}, "spec": spec})


def _np(name: str, ns: str = "default", **spec: Any) -> api.NetworkPolicy:
    return api.NetworkPolicy.model_validate({"metadata": {"name": name, "namespace": ns}, "spec": spec})


def _profile(name: str, labels: dict[str, str] | None = None) -> api.Profile:
    return api.Profile.model_validate({"metadata": {"name": name}, "spec": {
        "ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}], "labelsToApply": labels or {}}})


class Recorder:
    def __init__(self) -> None:
        self.msgs: list[messages.Message] = []
        self.g = graph.CalcGraph("node1", self.msgs.append)

    def __call__(self, kind: str, name: str, value: Any, ns: str = "") -> list[messages.Message]:
        self.msgs.clear()
        self.g.on_update(kind, ns, name, value)
        return list(self.msgs)

    def of(self, typ: type[Any], msgs: list[messages.Message]) -> list[Any]:
        return [m for m in msgs if isinstance(m, typ)]


def _sid(text: str) -> str:
    return selector_id(selector.parse(text))


class TestActivePolicies:
    def test_a_policy_is_sent_only_while_it_selects_a_local_endpoint(self) -> None:
        rec = Recorder()
        assert rec.of(messages.ActivePolicyUpdate, rec("GlobalNetworkPolicy", "p", _gnp(
            "p", selector="app == 'a'", types=["Ingress"], ingress=[{"action": "Allow"}]))) == []
        out = rec("WorkloadEndpoint", "a", _wep("a", "10.0.0.1", labels={"app": "a"}), ns="default")
        [upd] = rec.of(messages.ActivePolicyUpdate, out)
        assert upd.policy.id.name == "p" and upd.policy.ingress and not upd.policy.egress
        [ep] = rec.of(messages.EndpointUpdate, out)
        assert ep.iface == "calia" and ep.tiers[0].ingress == (upd.policy.id,) and ep.tiers[0].egress == ()
        # Relabelled away: the endpoint loses it, then the policy goes.
        out = rec("WorkloadEndpoint", "a", _wep("a", "10.0.0.1", labels={"app": "b"}), ns="default")
        assert [type(m) for m in out if not isinstance(m, messages.IPSetDelta)][-2:] == [
            messages.EndpointUpdate, messages.ActivePolicyRemove]
        assert rec.of(messages.EndpointUpdate, out)[0].tiers == ()

    def test_a_remote_endpoint_never_activates_a_policy_but_fills_its_ip_sets(self) -> None:
        rec = Recorder()
        rec("WorkloadEndpoint", "a", _wep("a", "10.0.0.1", labels={"app": "a"}), ns="default")
        rec("WorkloadEndpoint", "r", _wep("r", "10.0.9.9", node="node2", labels={"role": "client"}), ns="default")
        out = rec("GlobalNetworkPolicy", "p", _gnp("p", selector="app == 'a'", ingress=[
            {"action": "Allow", "source": {"selector": "role == 'client'"}}]))
        sid = _sid("role == 'client'")
        assert messages.IPSetUpdate(sid, "net") in out
        assert messages.IPSetDelta(sid, frozenset({"10.0.9.9/32"}), frozenset()) in out
        assert out.index(messages.IPSetUpdate(sid, "net")) < next(
            i for i, m in enumerate(out) if isinstance(m, messages.ActivePolicyUpdate))
        # The member leaves the set when it stops matching, and the set goes with the policy.
        out = rec("WorkloadEndpoint", "r", _wep("r", "10.0.9.9", node="node2", labels={}), ns="default")
        assert out == [messages.IPSetDelta(sid, frozenset(), frozenset({"10.0.9.9/32"}))]
        out = rec("GlobalNetworkPolicy", "p", None)
        assert messages.IPSetRemove(sid) in out and any(isinstance(m, messages.ActivePolicyRemove) for m in out)

    def test_namespace_labels_reach_endpoints_through_their_profile(self) -> None:
        rec = Recorder()
        rec("Profile", "kns.prod", _profile("kns.prod", {"pcns.team": "x"}))
        rec("WorkloadEndpoint", "a", _wep("a", "10.0.0.1", labels={"app": "a"}), ns="default")
        rec("WorkloadEndpoint", "p", _wep("p", "10.0.5.5", node="node2", ns="prod"), ns="prod")
        rec("GlobalNetworkPolicy", "p", _gnp("p", selector="app == 'a'", ingress=[
            {"action": "Allow", "source": {"namespaceSelector": "team == 'x'"}}]))
        sid = _sid("pcns.team == 'x'")
        assert rec.g.policy.members[sid] == {"10.0.5.5/32": 1}
        out = rec("Profile", "kns.prod", _profile("kns.prod", {"pcns.team": "y"}))   # relabel the namespace
        assert messages.IPSetDelta(sid, frozenset(), frozenset({"10.0.5.5/32"})) in out

    def test_named_ports_become_address_protocol_port_members(self) -> None:
        rec = Recorder()
        rec("WorkloadEndpoint", "a", _wep("a", "10.0.0.1", labels={"app": "a"},
                                          ports=[{"name": "http", "protocol": "TCP", "port": 8080}]), ns="default")
        out = rec("GlobalNetworkPolicy", "p", _gnp("p", selector="app == 'a'", ingress=[
            {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http"]}}]))
        sid = make_unique_id("n", f"{_sid('all()')},tcp,http")
        assert messages.IPSetUpdate(sid, "ipport") in out
        assert messages.IPSetDelta(sid, frozenset({("10.0.0.1", 6, 8080)}), frozenset()) in out

    def test_an_endpoints_ipv6_addresses_are_set_members_too_and_named_ports_too(self) -> None:
        rec = Recorder()
        dual = _wep("r", "10.0.9.9", node="node2", labels={"role": "client"},
                    ports=[{"name": "http", "protocol": "TCP", "port": 8080}])
        dual.spec.ip_networks.append("fd00::9/128")
        rec("WorkloadEndpoint", "a", _wep("a", "10.0.0.1", labels={"app": "a"}), ns="default")
        rec("WorkloadEndpoint", "r", dual, ns="default")
        out = rec("GlobalNetworkPolicy", "p", _gnp("p", selector="app == 'a'", ingress=[
            {"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'client'"}},
            {"action": "Allow", "protocol": "TCP", "destination": {"selector": "role == 'client'", "ports": ["http"]}}]))
        sid = _sid("role == 'client'")
        assert messages.IPSetDelta(sid, frozenset({"10.0.9.9/32", "fd00::9/128"}), frozenset()) in out
        nid = make_unique_id("n", f"{sid},tcp,http")
        assert messages.IPSetDelta(nid, frozenset({("10.0.9.9", 6, 8080), ("fd00::9", 6, 8080)}), frozenset()) in out

    def test_tiers_sort_by_order_and_policies_by_order_then_name(self) -> None:
        rec = Recorder()
        rec("Tier", "security", api.Tier.model_validate({"metadata": {"name": "security"},
                                                          "spec": {"order": 10, "defaultAction": "Pass"}}))
        rec("Tier", "default", api.Tier.model_validate({"metadata": {"name": "default"},
                                                         "spec": {"order": 1e6, "defaultAction": "Deny"}}))
        for name, tier, order in (("z", "default", 5), ("b", "default", None), ("a", "default", None),
                                  ("s", "security", 1)):
            rec("GlobalNetworkPolicy", name, _gnp(name, tier=tier, order=order, selector="all()",
                                                  ingress=[{"action": "Allow"}]))
        out = rec("WorkloadEndpoint", "a", _wep("a", "10.0.0.1"), ns="default")
        [ep] = rec.of(messages.EndpointUpdate, out)
        assert [(t.name, t.default_action, [p.name for p in t.ingress]) for t in ep.tiers] == [
            ("security", "Pass", ["s"]), ("default", "Deny", ["z", "a", "b"])]

    def test_no_types_means_both_directions_in_felix(self) -> None:
        rec = Recorder()
        rec("WorkloadEndpoint", "a", _wep("a", "10.0.0.1"), ns="default")
        [upd] = rec.of(messages.ActivePolicyUpdate, rec("NetworkPolicy", "p", _np("p", selector="all()"),
                                                        ns="default"))
        assert upd.policy.ingress and upd.policy.egress


class TestBadValuesAreAbsent:
    def test_a_policy_with_a_broken_selector_is_logged_and_the_others_still_sent(
            self, caplog: pytest.LogCaptureFixture) -> None:
        rec = Recorder()
        rec("WorkloadEndpoint", "a", _wep("a", "10.0.0.1"), ns="default")
        bad = _gnp("bad", selector="all()")
        bad.spec.selector = "app == "  # written straight into the datastore, never validated
        with caplog.at_level(logging.ERROR, "felix.calc"):
            assert rec.of(messages.ActivePolicyUpdate, rec("GlobalNetworkPolicy", "bad", bad)) == []
        assert "GlobalNetworkPolicy bad cannot be used" in caplog.text
        assert rec.of(messages.ActivePolicyUpdate, rec("GlobalNetworkPolicy", "ok", _gnp("ok", selector="all()")))

    def test_a_missing_profile_is_default_drop(self) -> None:
        rec = Recorder()
        out = rec("WorkloadEndpoint", "a", _wep("a", "10.0.0.1", profiles=["kns.nope"]), ns="default")
        [prof] = rec.of(messages.ActiveProfileUpdate, out)
        assert prof.name == "kns.nope" and [r.action for r in prof.rules.inbound] == ["deny"]
        [prof] = rec.of(messages.ActiveProfileUpdate, rec("Profile", "kns.nope", _profile("kns.nope")))
        assert [r.action for r in prof.rules.inbound] == ["allow"]


class TestWorkIsProportionalToTheChange:
    def test_an_endpoint_added_among_many_emits_only_its_own_messages(self) -> None:
        rec = Recorder()
        for i in range(200):
            rec("GlobalNetworkPolicy", f"p{i}", _gnp(f"p{i}", selector=f"app == 'a{i % 10}'", ingress=[
                {"action": "Allow", "source": {"selector": f"role == 'r{i % 7}'"}}]))
        for i in range(300):
            rec("WorkloadEndpoint", f"w{i}", _wep(f"w{i}", f"10.1.{i // 250}.{i % 250}", labels={
                "app": f"a{i % 10}", "role": f"r{i % 7}"}), ns="default")
        out = rec("WorkloadEndpoint", "new", _wep("new", "10.9.0.1", labels={"app": "a3", "role": "r2"}),
                  ns="default")
        assert {type(m) for m in out} == {messages.EndpointUpdate, messages.IPSetDelta, messages.RouteUpdate}
        assert len(rec.of(messages.EndpointUpdate, out)) == 1
        assert all(m.added == frozenset({"10.9.0.1/32"}) for m in rec.of(messages.IPSetDelta, out))


def _hep(name: str, node: str = "node1", iface: str = "*", labels: dict[str, str] | None = None) -> api.HostEndpoint:
    return api.HostEndpoint.model_validate({
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"node": node, "interfaceName": iface, "expectedIPs": ["192.168.0.1"],
                 "profiles": ["projectcalico-default-allow"]}})


class TestAllInterfacesHostEndpoints:
    def test_a_local_all_interfaces_host_endpoint_is_sent_with_calicos_tier_split(self) -> None:
        rec = Recorder()
        assert rec.of(messages.EndpointUpdate, rec("HostEndpoint", "node2-auto-hep", _hep("node2-auto-hep", "node2",
                                                                                        labels={"zone": "a"}))) == []
        out = rec("HostEndpoint", "node1-auto-hep", _hep("node1-auto-hep", labels={"zone": "a"}))
        [ep] = rec.of(messages.EndpointUpdate, out)
        assert (ep.key, ep.host, ep.iface, ep.tiers, ep.profiles) == (
            "hep:node1-auto-hep", True, "*", (), ("projectcalico-default-allow",))
        rec("GlobalNetworkPolicy", "host", _gnp("host", selector="zone == 'a'", types=["Ingress"],
                                                ingress=[{"action": "Allow"}]))
        out = rec("GlobalNetworkPolicy", "fwd", _gnp("fwd", selector="zone == 'a'", order=5, applyOnForward=True,
                                                     types=["Ingress"], ingress=[{"action": "Allow"}]))
        [ep] = rec.of(messages.EndpointUpdate, out)
        out = rec("GlobalNetworkPolicy", "raw", _gnp("raw", selector="zone == 'a'", preDNAT=True, applyOnForward=True,
                                                     types=["Ingress"], ingress=[{"action": "Allow"}]))
        assert rec.of(messages.EndpointUpdate, out) == [], "a preDNAT policy is in none of its filter tiers"
        assert [p.name for p in ep.tiers[0].ingress] == ["fwd", "host"]
        assert [p.name for p in ep.forward_tiers[0].ingress] == ["fwd"]
        assert len(ep.tiers) == len(ep.forward_tiers) == 1
        out = rec("HostEndpoint", "node1-auto-hep", None)
        assert rec.of(messages.EndpointRemove, out) == [messages.EndpointRemove("hep:node1-auto-hep", True, "*")]
