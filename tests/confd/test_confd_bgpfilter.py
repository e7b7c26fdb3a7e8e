"""BGPFilter: the kind (validation as Calico's CRD rules and validator), calicoctl's table, and confd's functions.

What Calico's confd suite (tests/confd/test_confd_suite.py) renders is checked there,
case by case; here the edges it does not reach: what is refused, calicoctl's
columns, and a filter that a peer names but that does not exist (no call).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from confd import render
from libcalico.api import loading
from libcalico.errors import ValidationError


def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name}, "spec": spec}


RULE = {"cidr": "10.0.0.0/8", "matchOperator": "In", "action": "Accept"}


@pytest.mark.parametrize("rule, field", [
    ({"cidr": "10.0.0.0/8", "action": "Accept"}, "cidr"),                          # no matchOperator
    ({"matchOperator": "In", "action": "Accept"}, "cidr"),                         # no cidr
    ({**RULE, "action": "Maybe"}, "action"),
    ({**RULE, "action": "Reject", "operations": [{"setPriority": {"value": 5}}]}, "operations"),
    ({"prefixLength": {"min": 8}, "action": "Accept"}, "prefixLength"),            # no cidr
    ({**RULE, "prefixLength": {"max": 33}}, "prefixLength.max"),
    ({**RULE, "communities": {"values": ["65536:1"]}}, "communities.values"),     # 16-bit parts
    ({**RULE, "communities": {"values": ["1:2", "3:4"]}}, "communities.values"),  # exactly one
    ({**RULE, "interface": "eth 0"}, "interface"),
    ({**RULE, "peerType": "internal"}, "peerType"),
    ({**RULE, "operations": [{"setPriority": {"value": 5}, "addCommunity": {"value": "1:2"}}]}, "operations"),
    ({**RULE, "cidr": "fd00::/8"}, "cidr"),                                        # a v6 CIDR in a v4 rule
])
def test_a_bgpfilter_rule_calico_refuses_is_refused_naming_its_field(rule: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        loading.parse_resource(doc("BGPFilter", "f", {"exportV4": [rule]}))
    assert field in str(err.value), str(err.value)


def test_a_bgppeer_takes_calicos_rules_for_asnumber() -> None:
    # A peerIP without asNumber is valid (Calico's own suite has one); with peerSelector asNumber must be empty.
    loading.parse_resource(doc("BGPPeer", "p", {"peerIP": "fe0a::2"}))
    with pytest.raises(ValidationError) as err:
        loading.parse_resource(doc("BGPPeer", "p", {"peerSelector": "all()", "asNumber": 64512}))
    assert "asNumber must be empty when peerSelector is set" in str(err.value)


def test_calicoctl_creates_bgpfilters_and_lists_them_with_calicos_columns(etcd_env: dict[str, str]) -> None:
    manifest = """
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {name: only-ten}
spec:
  exportV4: [{cidr: 10.0.0.0/8, matchOperator: In, action: Accept}, {action: Reject}]
  importV6: [{cidr: "fd00::/8", matchOperator: NotIn, action: Reject}]
"""
    r = subprocess.run(["calicoctl", "create", "-f", "-"], input=manifest, env=etcd_env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["calicoctl", "get", "bgpf"], env=etcd_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0].split() == ["NAME", "NUMEXPORTV4", "NUMIMPORTV4", "NUMEXPORTV6", "NUMIMPORTV6"]
    assert r.stdout.split("\n")[1].split() == ["only-ten", "2", "0", "0", "1"]


def test_filter_functions_and_calls_are_written_per_ip_version_and_a_missing_filter_is_not_called() -> None:
    flt = loading.parse_resource(doc("BGPFilter", "f", {"exportV4": [RULE], "importV6": [
        {**RULE, "cidr": "fd00::/8", "peerType": "eBGP", "action": "Reject"}]}))
    node = loading.parse_resource({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "n1"},
                                   "spec": {"bgp": {"ipv4Address": "10.1.0.1/24", "ipv6Address": "fd01::1/64"}}})
    peer = loading.parse_resource(doc("BGPPeer", "p", {"peerIP": "10.1.0.9", "asNumber": 65000,
                                                       "filters": ["f", "gone"]}))
    peer6 = loading.parse_resource(doc("BGPPeer", "p6", {"peerIP": "fd01::9", "asNumber": 65000, "filters": ["f"]}))
    inputs = render.Inputs("n1", nodes={"n1": node}, peers={"p": peer, "p6": peer6}, filters={"f": flt})  # type: ignore[dict-item]
    files = render.render(inputs)
    v4, v6 = files["bird.cfg"], files["bird6.cfg"]
    assert "function 'bgp_f_exportFilterV4'() {" in v4 and "  if ((net ~ 10.0.0.0/8)) then { accept; }" in v4
    assert "'bgp_f_exportFilterV4'();" in v4 and "importFilterV4" not in v4 and "gone" not in v4
    assert "function 'bgp_f_importFilterV6'(bool is_same_as) {" in v6
    assert "  if (!is_same_as) then { if ((net ~ fd00::/8)) then { reject; } }" in v6
    assert "'bgp_f_importFilterV6'(false);" in v6 and "exportFilterV6" not in v6 and "V4" not in v6


def test_a_long_filter_name_is_truncated_and_hashed_to_birds_symbol_length() -> None:
    name = "a" * 60
    fn = render.filter_function(name, "import", 4)
    assert len(fn.strip("'")) == 64 and fn.startswith("'bgp_" + "a" * 28 + "_") and fn.endswith("_importFilterV4'")
    assert render.filter_function("short", "export", 6) == "'bgp_short_exportFilterV6'"
