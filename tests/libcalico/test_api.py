"""The v3 models accept what Calico accepts, default what Calico defaults, and write Calico's wire form."""

from __future__ import annotations

import pytest

from libcalico import api, client
from libcalico.errors import ValidationError


def load_one(text: str) -> api.Resource:
    (res,) = api.load_resources(text)
    return res


class TestAccepted:
    @pytest.mark.parametrize("mode", ["ipipMode: CrossSubnet", "vxlanMode: CrossSubnet", "vxlanMode: Always",
                                      "ipipMode: Never\n  vxlanMode: Never"])
    def test_the_seeds_pool_variants_are_valid(self, mode: str) -> None:
        res = load_one(f"""
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: ippool-1}}
spec:
  cidr: 192.168.0.0/16
  {mode}
  natOutgoing: true
""")
        assert isinstance(res, api.IPPool)

    def test_dotted_and_plain_as_numbers(self) -> None:
        peer = api.BGPPeer.model_validate({"metadata": {"name": "p"}, "spec": {"peerIP": "[fd00::1]:179",
                                                                              "asNumber": "1.10"}})
        assert peer.spec.as_number == 65546
        cfg = api.BGPConfiguration.model_validate({"metadata": {"name": "default"}, "spec": {"asNumber": 64512}})
        assert cfg.to_wire()["spec"] == {"asNumber": 64512}

    def test_a_list_kind_and_a_multi_document_stream_are_flattened(self) -> None:
        items = api.load_resources("""
apiVersion: projectcalico.org/v3
kind: IPPoolList
items:
- {apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: a}, spec: {cidr: 10.1.0.0/16}}
- {apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: b}, spec: {cidr: 10.2.0.0/16}}
---
{"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "c"},
 "spec": {"peerIP": "10.0.0.1", "asNumber": 64513}}
""")
        assert [(r.KIND, r.name) for r in items] == [("IPPool", "a"), ("IPPool", "b"), ("BGPPeer", "c")]

    def test_unknown_felix_fields_of_calico_are_kept(self) -> None:
        res = api.FelixConfiguration.model_validate(
            {"metadata": {"name": "default"}, "spec": {"bpfLogLevel": "Debug", "vxlanVNI": 4096}})
        assert res.to_wire()["spec"] == {"bpfLogLevel": "Debug", "vxlanVNI": 4096}

    def test_policy_names_allow_the_knp_prefix_and_one_dot(self) -> None:
        api.NetworkPolicy.model_validate({"metadata": {"name": "knp.default.allow-all", "namespace": "ns"}})
        api.GlobalNetworkPolicy.model_validate({"metadata": {"name": "security.deny"}})
        with pytest.raises(ValueError):
            api.GlobalNetworkPolicy.model_validate({"metadata": {"name": "a.b.c"}})


class TestDefaults:
    def test_ippool_defaults_match_calicos_client(self) -> None:
        pool = client.apply_defaults(api.IPPool.model_validate({"metadata": {"name": "p"},
                                                                "spec": {"cidr": "fd00:10::/48"}}))
        assert pool.to_wire()["spec"] == {
            "cidr": "fd00:10::/48", "vxlanMode": "Never", "ipipMode": "Never", "blockSize": 122,
            "nodeSelector": "all()", "allowedUses": ["Workload", "Tunnel"], "assignmentMode": "Automatic"}

    @pytest.mark.parametrize("rules,types", [({}, ["Ingress"]), ({"egress": [{"action": "Allow"}]}, ["Egress"]),
                                             ({"ingress": [{"action": "Allow"}], "egress": [{"action": "Deny"}]},
                                              ["Ingress", "Egress"])])
    def test_policy_types_follow_the_rules_present(self, rules: dict[str, object], types: list[str]) -> None:
        pol = client.apply_defaults(api.GlobalNetworkPolicy.model_validate({"metadata": {"name": "p"},
                                                                            "spec": rules}))
        assert pol.to_wire()["spec"]["types"] == types

    def test_a_pool_smaller_than_the_default_block_is_refused(self) -> None:
        with pytest.raises(ValidationError, match=r"spec.cidr = '10.0.0.0/28' \(IP pool size is too small"):
            api.parse_resource({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p"},
                                "spec": {"cidr": "10.0.0.0/28"}})
        # ... unless disabled, as in Calico.
        api.IPPool.model_validate({"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/28", "disabled": True}})


class TestWireForm:
    def test_zero_values_are_omitted_like_go_omitempty_but_explicit_false_pointers_stay(self) -> None:
        cfg = api.BGPConfiguration.model_validate({"metadata": {"name": "default"},
                                                   "spec": {"nodeToNodeMeshEnabled": False}})
        assert cfg.to_wire() == {"kind": "BGPConfiguration", "apiVersion": "projectcalico.org/v3",
                                 "metadata": {"name": "default"}, "spec": {"nodeToNodeMeshEnabled": False}}

    def test_an_ipv6_cidr_is_normalised(self) -> None:
        pool = api.IPPool.model_validate({"metadata": {"name": "p"}, "spec": {"cidr": "FD00:0010:0000::/48"}})
        assert pool.spec.cidr == "fd00:10::/48"
