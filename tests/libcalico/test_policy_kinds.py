"""The policy kinds through calicoctl: Tier, Profile, NetworkSet, GlobalNetworkSet, and policies
Calico would refuse, refused with the field named.

Tables are calicoctl's (``resourcemgr/<kind>.go``): Go's ``%v`` prints the default tier's order
1,000,000 as ``1e+06``.
"""

from __future__ import annotations

import json

import pytest

from libcalico import api
from libcalico.api import loading
from libcalico.errors import ValidationError
from tests.calicoctl.test_calicoctl import calicoctl


def _apply(env: dict[str, str], doc: dict[str, object]) -> str:
    r = calicoctl(env, "apply", "-f", "-", stdin=json.dumps(doc))
    assert r.returncode == 0, r.stderr
    return r.stdout


class TestTiers:
    def test_the_default_tier_exists_after_the_first_write_with_order_1e6_and_deny(
            self, etcd_env: dict[str, str]) -> None:
        _apply(etcd_env, {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                          "metadata": {"name": "deny-all"}, "spec": {"selector": "all()"}})
        r = calicoctl(etcd_env, "get", "tier")
        assert r.stdout.splitlines()[:2] == ["NAME      ORDER   ", "default   1e+06   "], r.stdout
        tier = json.loads(calicoctl(etcd_env, "get", "tier", "default", "-o", "json").stdout)
        assert tier["spec"] == {"order": 1000000, "defaultAction": "Deny"}

    def test_a_named_tier_defaults_to_deny_and_prints_its_order(self, etcd_env: dict[str, str]) -> None:
        _apply(etcd_env, {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "security"},
                          "spec": {"order": 100}})
        tier = json.loads(calicoctl(etcd_env, "get", "tier", "security", "-o", "json").stdout)
        assert tier["spec"] == {"order": 100, "defaultAction": "Deny"}
        assert "security   100" in calicoctl(etcd_env, "get", "tiers").stdout

    @pytest.mark.parametrize("spec, field, reason", [
        ({"order": 5}, "spec.order", "default tier order must be 1000000"),
        ({"order": 1000000, "defaultAction": "Pass"}, "spec.defaultAction",
         "The 'default' tier must have default action 'Deny'"),
    ])
    def test_the_default_tier_keeps_its_order_and_action(self, spec: dict[str, object], field: str,
                                                          reason: str) -> None:
        with pytest.raises(ValidationError) as err:
            loading.parse_resource({"apiVersion": "projectcalico.org/v3", "kind": "Tier",
                                    "metadata": {"name": "default"}, "spec": spec})
        assert field in str(err.value) and reason in str(err.value)

    def test_tier_names_have_no_dots_and_actions_are_deny_or_pass(self) -> None:
        with pytest.raises(ValidationError, match="metadata.name"):
            loading.parse_resource({"kind": "Tier", "apiVersion": "projectcalico.org/v3",
                                    "metadata": {"name": "a.b"}})
        with pytest.raises(ValidationError, match="defaultAction"):
            loading.parse_resource({"kind": "Tier", "apiVersion": "projectcalico.org/v3",
                                    "metadata": {"name": "t"}, "spec": {"defaultAction": "Allow"}})


class TestProfilesAndNetworkSets:
    def test_profiles_print_their_labels_wide(self, etcd_env: dict[str, str]) -> None:
        _apply(etcd_env, {"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "kns.prod"},
                          "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
                                   "labelsToApply": {"pcns.team": "b", "pcns.projectcalico.org/name": "prod"}}})
        out = calicoctl(etcd_env, "get", "profile", "-o", "wide").stdout
        assert out.splitlines()[1].split() == ["kns.prod", "pcns.projectcalico.org/name=prod,pcns.team=b"]

    def test_network_sets_print_nets_truncated_to_80(self, etcd_env: dict[str, str]) -> None:
        nets = [f"10.{i}.0.0/16" for i in range(12)]
        _apply(etcd_env, {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
                          "metadata": {"name": "many", "labels": {"role": "ext"}}, "spec": {"nets": nets}})
        _apply(etcd_env, {"apiVersion": "projectcalico.org/v3", "kind": "NetworkSet",
                          "metadata": {"name": "one", "namespace": "default"}, "spec": {"nets": ["1.2.3.4"]}})
        row = calicoctl(etcd_env, "get", "globalnetworkset", "-o", "wide").stdout.splitlines()[1].split()
        assert row[0] == "many" and len(row[1]) == 80 and row[1].endswith("...")
        assert calicoctl(etcd_env, "get", "networksets", "-o", "wide").stdout.splitlines()[1].split() == [
            "one", "1.2.3.4"]

    def test_a_bad_cidr_in_a_network_set_is_refused_with_the_field(self) -> None:
        with pytest.raises(ValidationError, match="spec.nets"):
            loading.parse_resource({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
                                    "metadata": {"name": "x"}, "spec": {"nets": ["10.0.0.0/33"]}})


class TestRefusedPolicies:
    @pytest.mark.parametrize("rule, field", [
        ({"action": "Allow", "source": {"selector": "app == "}}, "source.selector"),
        ({"action": "Allow", "destination": {"ports": [80]}}, "destination.ports"),
        ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["90:80"]}}, "destination.ports"),
        ({"action": "Allow", "protocol": "ICMP", "destination": {"ports": [80]}}, "destination.ports"),
        ({"action": "Allow", "source": {"nets": ["10.0.0.0/40"]}}, "source.nets"),
        ({"action": "Allow", "source": {"notNets": ["0.0.0.0/0"]}}, "source.notNets"),
        ({"action": "Allow", "icmp": {"type": 8}}, "icmp"),
        ({"action": "Accept"}, "action"),
        ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["not_a_name!"]}}, "destination.ports"),
    ])
    def test_calicoctl_names_the_field_calico_would_refuse(self, etcd_env: dict[str, str],
                                                            rule: dict[str, object], field: str) -> None:
        doc = {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
               "metadata": {"name": "bad", "namespace": "default"}, "spec": {"ingress": [rule]}}
        r = calicoctl(etcd_env, "apply", "-f", "-", stdin=json.dumps(doc))
        assert r.returncode != 0
        assert f"ingress[0].{field}" in r.stderr, r.stderr
        assert "NetworkPolicy" not in calicoctl(etcd_env, "get", "networkpolicy", "-A").stdout.split("\n", 1)[1]

    def test_types_are_inferred_as_libcalico_go_does(self, etcd_env: dict[str, str]) -> None:
        for name, spec, types in (("i", {"ingress": [{"action": "Allow"}]}, ["Ingress"]),
                                  ("e", {"egress": [{"action": "Allow"}]}, ["Egress"]),
                                  ("b", {"ingress": [{"action": "Allow"}], "egress": [{"action": "Deny"}]},
                                   ["Ingress", "Egress"]),
                                  ("n", {}, ["Ingress"])):
            _apply(etcd_env, {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                              "metadata": {"name": name}, "spec": spec})
            got = json.loads(calicoctl(etcd_env, "get", "gnp", name, "-o", "json").stdout)
            assert got["spec"]["types"] == types, name


def test_every_new_kind_is_registered_with_its_plural() -> None:
    assert {k: api.KINDS[k].PLURAL for k in ("Tier", "Profile", "NetworkSet", "GlobalNetworkSet")} == {
        "Tier": "tiers", "Profile": "profiles", "NetworkSet": "networksets", "GlobalNetworkSet": "globalnetworksets"}
