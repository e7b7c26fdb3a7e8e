"""Felix's dataplane managers against fake kernel handles: batches, resync, isolation, rendering.

:class:`felix.dataplane.nft.FakeNft` applies the JSON batches with nft's
all-or-nothing semantics; a fake route socket records what would be written.
The same managers run on the real kernel in tests/felix/test_felix_policy_netns.py.
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


def _policy(rules_: ParsedRules, pid: PolicyID = PID) -> Any:
    from felix.policy import ParsedPolicy
    from libcalico import selector

    return ParsedPolicy(pid, 100.0, selector.parse("all()"), True, True, rules_)


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


def _tables() -> tuple[nft.Table, nft.Table, nft.FakeNft, dict[str, manager.Manager]]:
    fake = nft.FakeNft()
    t4, t6 = nft.Table(fake), nft.Table(fake, family="ip6")
    ms: dict[str, manager.Manager] = {
        "ipsets": manager.IPSetsManager(t4, t6), "policy": manager.PolicyManager(t4, t6),
        "endpoints": manager.EndpointManager(t4, t6), "nat": manager.NATManager(t4),
        "nftables": manager.TableManager(t4, t6)}
    return t4, t6, fake, ms


class TestTheIPv6Table:
    """``ip6 calico`` beside ``ip calico``, as Calico's nftables mode keeps one table per family."""

    def test_both_tables_are_programmed_in_one_transaction_with_the_same_endpoint_chains(self) -> None:
        _, _, fake, ms = _tables()
        assert _run(ms, _ep("cali1"), messages.ActiveProfileUpdate("kns.default", ALLOW_ALL)) == []
        assert len(fake.batches) == 1
        assert {("ip", "calico"), ("ip6", "calico")} <= set(fake.tables)
        assert fake.chain("filter-cali-tw-cali1", "ip6") == fake.chain("filter-cali-tw-cali1", "ip")
        assert set(fake.elements(rules.TO_WL_MAP, "ip6")) == {"cali1"}
        assert "nat-cali-POSTROUTING" not in fake.tables[("ip6", "calico")]["chains"]
        assert "nat-cali-POSTROUTING" in fake.tables[("ip", "calico")]["chains"]

    def test_workloads_neighbour_discovery_reaches_the_host_only_in_ipv6(self) -> None:
        _, _, fake, ms = _tables()
        _run(ms)
        v6 = fake.chain(rules.WL_TO_HOST, "ip6")
        icmp6 = [next(s["match"]["right"] for s in r if "match" in s and s["match"]["left"].get("payload", {})
                      .get("protocol") == "icmpv6") for r in v6[:6]]
        assert icmp6 == [130, 131, 132, 133, 135, 136]
        assert all(rules.l4proto(58) in r and rules.ACCEPT in r for r in v6[:6])
        assert not any(rules.l4proto(58) in r for r in fake.chain(rules.WL_TO_HOST, "ip"))

    def test_set_members_go_to_their_familys_set(self) -> None:
        _, _, fake, ms = _tables()
        _run(ms, messages.IPSetUpdate("s:abc", "net"),
             messages.IPSetDelta("s:abc", frozenset({"10.0.0.1/32", "fd00::1/128", "fd00:1::/64"}), frozenset()))
        assert fake.tables[("ip6", "calico")]["specs"]["set:cali60s-abc"]["type"] == "ipv6_addr"
        assert set(fake.elements("cali40s-abc", "ip")) == {"10.0.0.1"}
        assert set(fake.elements("cali60s-abc", "ip6")) == {"fd00::1", ("prefix", "fd00:1::", 64)}
        _run(ms, messages.IPSetDelta("s:abc", frozenset(), frozenset({"fd00::1/128"})))
        assert set(fake.elements("cali60s-abc", "ip6")) == {("prefix", "fd00:1::", 64)}
        assert set(fake.elements("cali40s-abc", "ip")) == {"10.0.0.1"}

    def test_named_port_sets_hold_ipv6_address_protocol_port(self) -> None:
        _, _, fake, ms = _tables()
        _run(ms, messages.IPSetUpdate("n:web", "ipport"),
             messages.IPSetDelta("n:web", frozenset({("fd00::5", 6, 8080), ("10.0.0.5", 6, 8080)}), frozenset()))
        assert fake.tables[("ip6", "calico")]["specs"]["set:cali60n-web"]["type"] == [
            "ipv6_addr", "inet_proto", "inet_service"]
        assert set(fake.elements("cali60n-web", "ip6")) == {("concat", "fd00::5", 6, 8080)}
        assert set(fake.elements("cali40n-web", "ip")) == {("concat", "10.0.0.5", 6, 8080)}

    def test_a_failed_transaction_changes_neither_table_and_both_resync(self) -> None:
        t4, t6, fake, ms = _tables()
        _run(ms)
        fake.fail_next = "Error: Could not process rule: No buffer space available"
        assert _run(ms, _ep("cali2")) == ["nftables"]
        assert t4.need_resync and t6.need_resync
        assert "filter-cali-tw-cali2" not in fake.tables[("ip6", "calico")]["chains"]
        ms["nftables"].apply()
        assert "filter-cali-tw-cali2" in fake.tables[("ip6", "calico")]["chains"]


class TestRenderedIPv6Rules:
    """``FilterRuleToIPVersion``: each family's table gets the rule with that family's nets, or not at all."""

    def _one(self, r: ParsedRule, family: str) -> list[list[dict[str, Any]]]:
        return [list(x.expr) for x in rules.render_rule(r, family=family)]

    def test_ip_version_picks_the_table(self) -> None:
        assert self._one(ParsedRule("allow", ip_version=6), "ip6") != []
        assert self._one(ParsedRule("allow", ip_version=4), "ip6") == []
        assert self._one(ParsedRule("allow", ip_version=4), "ip") != []

    def test_mixed_nets_are_split_by_family(self) -> None:
        r = ParsedRule("allow", src_nets=("10.0.0.0/8", "fd00::/8", "fd00::7/128"))
        [v6, _] = self._one(r, "ip6")
        assert v6[0] == rules.match({"payload": {"protocol": "ip6", "field": "saddr"}},
                                    {"set": [{"prefix": {"addr": "fd00::", "len": 8}}, "fd00::7"]})
        [v4, _] = self._one(r, "ip")
        assert v4[0] == rules.match(rules._addr("saddr"), {"prefix": {"addr": "10.0.0.0", "len": 8}})

    def test_a_rule_whose_nets_are_all_of_the_other_family_is_left_out(self) -> None:
        assert self._one(ParsedRule("allow", dst_nets=("10.1.0.0/16",)), "ip6") == []
        assert self._one(ParsedRule("deny", not_src_nets=("fd00::/8",)), "ip") == []
        assert self._one(ParsedRule("deny", not_src_nets=("::/0",)), "ip6") == []   # a negated catch-all

    def test_an_icmp_rule_is_only_in_the_ip_table_and_an_icmpv6_rule_only_in_the_ip6_one(self) -> None:
        assert self._one(ParsedRule("allow", protocol=1, icmp_type=8), "ip6") == []
        assert self._one(ParsedRule("allow", protocol=58, icmp_type=128), "ip") == []
        assert self._one(ParsedRule("allow", protocol=1, icmp_type=8), "ip") != []

    def test_icmp_and_sets_use_the_ipv6_names(self) -> None:
        [r] = self._one(ParsedRule("deny", protocol=58, icmp_type=128, src_sets=("s:abc",)), "ip6")
        assert rules.match({"payload": {"protocol": "icmpv6", "field": "type"}}, 128) in r
        assert rules.match({"payload": {"protocol": "ip6", "field": "saddr"}}, "@cali60s-abc") in r

    def test_policy_chains_differ_per_family_only_where_addresses_do(self) -> None:
        pr = ParsedRules((ParsedRule("allow", src_sets=("s:abc",)), ParsedRule("allow", ip_version=4)), (), ())
        pi4, _ = rules.policy_chains(PID, pr)
        pi6, _ = rules.policy_chains(PID, pr, family="ip6")
        assert pi4.name == pi6.name and len(pi4.rules) == 3 and len(pi6.rules) == 1


def _hep(name: str, iface: str, tiers: tuple[TierInfo, ...] = (),
         forward: tuple[TierInfo, ...] = ()) -> messages.EndpointUpdate:
    return messages.EndpointUpdate(f"hep:{name}", True, iface, tiers, ("projectcalico-default-allow",), forward)


def _targets(fake: nft.FakeNft, chain: str) -> list[str]:
    out = []
    for r in fake.tables[("ip", "calico")]["chains"][chain]:
        for s in r["expr"]:
            for verb in ("goto", "jump"):
                if verb in s:
                    out.append(f"{verb} {s[verb]['target']}")
    return out


class TestAllInterfacesHostEndpoints:
    def test_it_is_the_default_of_the_host_dispatch_chains_after_the_named_interfaces(self) -> None:
        _, fake, ms = _table()
        pid = PolicyID("default", "", "host", "GlobalNetworkPolicy")
        tiers = (TierInfo("default", "Deny", (pid,), ()),)
        _run(ms, messages.ActiveProfileUpdate("projectcalico-default-allow", ALLOW_ALL),
             messages.ActivePolicyUpdate(_policy(ALLOW_ALL, pid)), _hep("n1-eth0", "eth0"),
             _hep("n1-auto-hep", "*", tiers), _hep("z-other", "*"))
        chains = fake.tables[("ip", "calico")]["chains"]
        any_ = "any-interface-at-all"
        assert {f"filter-cali-{p}-{any_}" for p in ("fh", "th", "fhfw", "thfw")} <= set(chains)
        assert not any("z-other" in c for c in chains)
        assert _targets(fake, "filter-cali-from-host-endpoint") == ["goto filter-cali-fh-eth0",
                                                                    f"goto filter-cali-fh-{any_}"]
        assert _targets(fake, "filter-cali-to-host-endpoint") == ["goto filter-cali-th-eth0",
                                                                  f"goto filter-cali-th-{any_}"]
        assert _targets(fake, "filter-cali-from-hep-forward") == ["goto filter-cali-fhfw-eth0",
                                                                  f"goto filter-cali-fhfw-{any_}"]
        assert _targets(fake, "filter-cali-FORWARD") == ["jump filter-cali-from-hep-forward",
                                                         "jump filter-cali-from-wl-dispatch",
                                                         "jump filter-cali-to-wl-dispatch",
                                                         "jump filter-cali-to-hep-forward"]
        # From the host endpoint: failsafes, the tier (policy, then end-of-tier drop), the profile, drop.
        assert _targets(fake, f"filter-cali-fh-{any_}") == [
            "jump filter-cali-failsafe-in", "jump filter-cali-pi-default/host",
            "jump filter-cali-pri-projectcalico-default-allow"]
        comments = [r["comment"] for r in chains[f"filter-cali-fh-{any_}"]]
        assert any("End of tier default" in c for c in comments) and "Drop if no profiles matched" in comments[-1]
        # Forwarded traffic: no applyOnForward policy, so allowed; no failsafes, no profiles.
        assert _targets(fake, f"filter-cali-fhfw-{any_}") == []
        assert "Allow forwarded traffic by default" in " ".join(r["comment"] for r in chains[f"filter-cali-fhfw-{any_}"])

        _run(ms, messages.EndpointRemove("hep:n1-auto-hep", True, "*"))
        chains = fake.tables[("ip", "calico")]["chains"]
        assert {f"filter-cali-{p}-{any_}" for p in ("fh", "th", "fhfw", "thfw")} <= set(chains), \
            "the next all-interfaces host endpoint by name takes over"
        _run(ms, messages.EndpointRemove("hep:z-other", True, "*"))
        chains = fake.tables[("ip", "calico")]["chains"]
        assert not any(any_ in c for c in chains)
        assert _targets(fake, "filter-cali-from-host-endpoint") == ["goto filter-cali-fh-eth0"]
