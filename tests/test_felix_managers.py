"""Felix's dataplane managers against fake kernel handles: batches, resync, isolation, rendering.

:class:`felix.dataplane.nft.FakeNft` applies the JSON batches with nft's
all-or-nothing semantics; a fake route socket records what would be written.
The same managers run on the real kernel in tests/test_felix_policy_netns.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from felix import calc, messages
from felix.dataplane import manager, nft, rtnl, rules
from felix.dataplane.routes import RouteTable
from felix.messages import TierInfo
from felix.policy import ParsedRule, ParsedRules, PolicyID


class FakeRoutes:
    def __init__(self) -> None:
        self.kernel: dict[str, rtnl.KernelRoute] = {}
        self.writes: list[list[rtnl.RouteOp]] = []
        self.dumps = 0
        self.fail = False

    def __call__(self) -> FakeRoutes:
        return self

    def dump(self, table: int = 254) -> list[rtnl.KernelRoute]:
        self.dumps += 1
        return list(self.kernel.values())

    def write(self, ops: list[rtnl.RouteOp], table: int = 254) -> dict[str, int]:
        if self.fail:
            return {ops[0].dst: 22}
        self.writes.append(ops)
        for op in ops:
            if op.op == "delete":
                self.kernel.pop(op.dst, None)
            else:
                self.kernel[op.dst] = rtnl.KernelRoute(op.dst, op.type, op.proto, op.scope, op.flags, op.oif,
                                                       op.gateway, table)
        return {}

    def close(self) -> None:
        pass


class FakeLinks:
    def __init__(self, *names: str) -> None:
        self.names = {n: i + 10 for i, n in enumerate(names)}

    def index(self, name: str) -> int:
        return self.names.get(name, 0)

    def name(self, index: int) -> str:
        return next((n for n, i in self.names.items() if i == index), "")


PID = PolicyID("default", "ns1", "web", "NetworkPolicy")


def _table() -> tuple[nft.Table, nft.FakeNft, dict[str, manager.Manager]]:
    fake = nft.FakeNft()
    table = nft.Table(fake)
    ms: dict[str, manager.Manager] = {
        "ipsets": manager.IPSetsManager(table), "policy": manager.PolicyManager(table),
        "endpoints": manager.EndpointManager(table), "nat": manager.NATManager(table),
        "nftables": manager.TableManager(table)}
    return table, fake, ms


def _run(ms: dict[str, manager.Manager], *msgs: messages.Message) -> list[str]:
    dp = manager.Dataplane(list(ms.values()))
    for m in msgs:
        dp.on_update(m)
    return dp.apply()


def _ep(iface: str = "cali1", tiers: tuple[TierInfo, ...] = ()) -> messages.EndpointUpdate:
    return messages.EndpointUpdate(f"wep:default/{iface}", False, iface, tiers, ("kns.default",))


ALLOW_ALL = ParsedRules((ParsedRule("allow"),), (ParsedRule("allow"),), ())


class TestTheTable:
    def test_the_first_apply_creates_the_table_with_calicos_base_chains_and_dispatch_maps(self) -> None:
        _, fake, ms = _table()
        assert _run(ms) == []
        t = fake.tables[("ip", "calico")]
        assert {"filter-FORWARD", "filter-INPUT", "filter-OUTPUT", "nat-POSTROUTING", "filter-cali-FORWARD",
                "filter-cali-from-wl-dispatch", "filter-cali-to-wl-dispatch", "nat-cali-nat-outgoing",
                "filter-cali-failsafe-in"} <= set(t["chains"])
        assert t["specs"]["chain:filter-FORWARD"]["hook"] == "forward"
        assert t["specs"]["set:filter-cali-from-wl-dispatch"]["map"] == "verdict"
        for r in t["chains"]["filter-cali-FORWARD"]:
            assert r["comment"].startswith("cali:") and any("counter" in s for s in r["expr"])

    def test_an_endpoint_added_is_one_small_transaction_of_its_chains_and_map_elements(self) -> None:
        _, fake, ms = _table()
        _run(ms, messages.ActiveProfileUpdate("kns.default", ALLOW_ALL), _ep("cali1"))
        fake.batches.clear()
        _run(ms, _ep("cali2"))
        [batch] = fake.batches
        verbs = sorted({f"{next(iter(c))} {next(iter(next(iter(c.values()))))}" for c in batch})
        assert verbs == ["add chain", "add element", "add rule", "add table"]
        names = {c["add"]["chain"]["name"] for c in batch if "chain" in c.get("add", {})}
        assert names == {"filter-cali-tw-cali2", "filter-cali-fw-cali2"}
        assert fake.elements("filter-cali-from-wl-dispatch")["cali2"] == {"goto": {"target": "filter-cali-fw-cali2"}}

    def test_a_policy_change_replaces_only_its_chains(self) -> None:
        _, fake, ms = _table()
        tiers = (TierInfo("default", "Deny", (PID,), ()),)
        pol = messages.ActivePolicyUpdate(_policy(ParsedRules((ParsedRule("allow", protocol=6, dst_ports=((80, 80),)),),
                                                              (), ())))
        _run(ms, messages.ActiveProfileUpdate("kns.default", ALLOW_ALL), pol, _ep("cali1", tiers))
        fake.batches.clear()
        _run(ms, messages.ActivePolicyUpdate(_policy(ParsedRules((ParsedRule("allow", protocol=6,
                                                                             dst_ports=((81, 81),)),), (), ()))))
        [batch] = fake.batches
        assert {"flush"} <= {next(iter(c)) for c in batch}
        flushed = {c["flush"]["chain"]["name"] for c in batch if "flush" in c}
        rule_chains = {c["add"]["rule"]["chain"] for c in batch if "rule" in c.get("add", {})}
        assert flushed == {"filter-cali-pi-default/ns1/web"}                # egress had no rules: unchanged
        assert rule_chains == flushed

    def test_removing_an_endpoint_deletes_its_elements_before_its_chains(self) -> None:
        _, fake, ms = _table()
        _run(ms, messages.ActiveProfileUpdate("kns.default", ALLOW_ALL), _ep("cali1"))
        fake.batches.clear()
        _run(ms, messages.EndpointRemove("wep:default/cali1", False, "cali1"))
        [batch] = fake.batches
        kinds = [f"{next(iter(c))} {next(iter(next(iter(c.values()))))}" for c in batch]
        assert kinds.index("delete element") < kinds.index("delete chain")
        assert "cali1" not in fake.elements("filter-cali-from-wl-dispatch")

    def test_resync_repairs_drift_and_removes_only_what_felix_does_not_want(self) -> None:
        table, fake, ms = _table()
        _run(ms, messages.ActiveProfileUpdate("kns.default", ALLOW_ALL), _ep("cali1"))
        t = fake.tables[("ip", "calico")]
        t["chains"]["filter-cali-tw-cali1"].pop()                        # a rule deleted by hand
        t["chains"]["filter-stray"] = []                                 # a chain nobody wants
        t["specs"]["chain:filter-stray"] = {"family": "ip", "table": "calico", "name": "filter-stray"}
        del t["sets"]["filter-cali-to-wl-dispatch"]["cali1"]             # a map element lost
        fake.tables[("ip", "other")] = {"chains": {"x": []}, "sets": {}, "specs": {"chain:x": {"name": "x"}}}
        counters_before = t["chains"]["filter-cali-FORWARD"]
        fake.batches.clear()
        ms["nftables"].resync()
        _run(ms)
        [batch] = fake.batches
        t = fake.tables[("ip", "calico")]
        assert "filter-stray" not in t["chains"] and ("ip", "other") in fake.tables
        assert len(t["chains"]["filter-cali-tw-cali1"]) == len(table.chains["filter-cali-tw-cali1"].rules)
        assert "cali1" in t["sets"]["filter-cali-to-wl-dispatch"]
        assert t["chains"]["filter-cali-FORWARD"] is counters_before        # untouched chains keep their counters
        assert not any(c.get("flush", {}).get("chain", {}).get("name") == "filter-cali-FORWARD" for c in batch)

    def test_a_refused_batch_is_retried_as_a_resync(self) -> None:
        _, fake, ms = _table()
        _run(ms)
        fake.fail_next = "Error: Could not process rule: No buffer space available"
        assert _run(ms, messages.ActiveProfileUpdate("kns.default", ALLOW_ALL), _ep("cali1")) == ["nftables"]
        dp = manager.Dataplane(list(ms.values()), clock=lambda: 1e9)
        dp.apply()
        assert "filter-cali-tw-cali1" in fake.tables[("ip", "calico")]["chains"]


def _policy(rules_: ParsedRules) -> Any:
    from felix.policy import ParsedPolicy
    from libcalico import selector

    return ParsedPolicy(PID, 100.0, selector.parse("all()"), True, True, rules_)


class TestRenderedRules:
    """The nft JSON each rule shape renders to (Calico's ``CombineMatchAndActionsForProtoRule``)."""

    def _one(self, r: ParsedRule) -> list[list[dict[str, Any]]]:
        return [list(x.expr) for x in rules.render_rule(r)]

    def test_allow_sets_the_accept_mark_then_returns(self) -> None:
        [first, second] = self._one(ParsedRule("allow", protocol=6, dst_ports=((80, 80), (8000, 8100))))
        assert first == [rules.l4proto(6), rules.match(rules._port("dport"), {"set": [80, {"range": [8000, 8100]}]}),
                         rules.COUNTER, rules.set_mark(rules.MARK_ACCEPT)]
        assert second == [rules.mark_set_bit(rules.MARK_ACCEPT), rules.COUNTER, rules.RETURN]

    def test_pass_sets_the_pass_mark_deny_drops_log_logs_and_goes_on(self) -> None:
        assert self._one(ParsedRule("pass"))[0][-1] == rules.set_mark(rules.MARK_PASS)
        assert self._one(ParsedRule("deny", protocol=1, icmp_type=8))[0] == [
            rules.l4proto(1), rules.match({"payload": {"protocol": "icmp", "field": "type"}}, 8), rules.COUNTER,
            rules.DROP]
        assert self._one(ParsedRule("log"))[0] == [rules.COUNTER, {"log": {"prefix": "calico-packet: ",
                                                                           "level": "info"}}]

    def test_selectors_nets_and_negations_render_as_set_and_prefix_matches(self) -> None:
        [r] = self._one(ParsedRule("deny", src_sets=("s:abc",), not_dst_nets=("10.0.0.0/8", "1.2.3.4/32"),
                                   not_protocol=17))
        assert rules.match(rules._addr("saddr"), "@cali40s-abc") in r
        assert rules.match(rules._addr("daddr"), {"set": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, "1.2.3.4"]},
                           "!=") in r
        assert rules.l4proto(17, "!=") in r

    def test_numeric_and_named_ports_are_alternatives(self) -> None:
        out = self._one(ParsedRule("allow", protocol=6, dst_ports=((80, 80),), dst_named_port_sets=("n:x",)))
        assert len(out) == 4  # two alternatives, each: set mark, return
        assert any({"concat": [rules._addr("daddr"), {"meta": {"key": "l4proto"}}, rules._port("dport")]}
                   == s["match"]["left"] for s in out[2] if "match" in s)

    def test_ipv6_only_rules_are_not_in_the_ipv4_table(self) -> None:
        assert self._one(ParsedRule("allow", ip_version=6)) == []

    def test_endpoint_chains_go_through_tiers_then_profiles_then_drop(self) -> None:
        tw, fw = rules.workload_chains("cali1", (TierInfo("t1", "Pass", (PID,), ()),
                                                 TierInfo("default", "Deny", (PID,), (PID,))), ("kns.a",))
        comments = [r.comment for r in tw.rules if r.comment]
        assert comments == ["Start of tier t1", "Return if policy accepted", "Start of tier default",
                            "Return if policy accepted", "End of tier default. Drop if no policies passed packet",
                            "Return if profile accepted", "Drop if no profiles matched"]
        assert "Drop VXLAN encapped packets originating in workloads" in [r.comment for r in fw.rules]
        assert rules.policy_chain(PID, True) == "filter-cali-pi-default/ns1/web"


class TestRoutesAndIsolation:
    def test_a_route_change_writes_one_route_without_dumping_the_table(self) -> None:
        fake = FakeRoutes()
        rm = manager.RouteManager(RouteTable(("cali",), handle=fake, links=FakeLinks("cali1", "cali2")))
        rm.on_update(messages.RouteUpdate(calc.Route("10.0.0.1/32", "local", "cali1")))
        rm.apply()                                   # the first apply is a resync: one dump
        assert fake.dumps == 1
        rm.on_update(messages.RouteUpdate(calc.Route("10.0.0.2/32", "local", "cali2")))
        rm.apply()
        assert fake.dumps == 1 and [op.dst for op in fake.writes[-1]] == ["10.0.0.2/32"]
        rm.on_update(messages.RouteRemove("10.0.0.1/32"))
        rm.apply()
        assert [(op.op, op.dst, op.proto) for op in fake.writes[-1]] == [("delete", "10.0.0.1/32", 3)]

    def test_a_route_whose_interface_is_missing_waits_and_is_retried(self) -> None:
        fake = FakeRoutes()
        links = FakeLinks()
        rm = manager.RouteManager(RouteTable(("cali",), handle=fake, links=links))
        rm.apply()
        rm.on_update(messages.RouteUpdate(calc.Route("10.0.0.3/32", "local", "cali3")))
        rm.apply()
        assert rm.wants_retry and "10.0.0.3/32" not in fake.kernel
        links.names["cali3"] = 99
        rm.apply()
        assert not rm.wants_retry and fake.kernel["10.0.0.3/32"].oif == 99

    def test_one_failing_manager_never_stops_the_others_and_backs_off(self) -> None:
        class Broken:
            name = "vxlan"
            calls = 0

            def on_update(self, msg: messages.Message) -> None:
                pass

            def apply(self) -> None:
                Broken.calls += 1
                raise OSError("netlink: operation not supported")

            def resync(self) -> None:
                pass

        now = [0.0]
        fake = FakeRoutes()
        rm = manager.RouteManager(RouteTable(("cali",), handle=fake, links=FakeLinks("cali1")))
        dp = manager.Dataplane([Broken(), rm], clock=lambda: now[0])
        dp.on_update(messages.RouteUpdate(calc.Route("10.0.0.1/32", "local", "cali1")))
        assert dp.apply() == ["vxlan"]
        assert "10.0.0.1/32" in fake.kernel
        dp.apply()
        assert Broken.calls == 1                   # backing off
        assert dp.next_retry() == pytest.approx(0.1)
        now[0] = 0.2
        dp.apply()
        assert Broken.calls == 2 and dp.next_retry() == pytest.approx(0.2)
