"""Property-based fuzzing of what a CNI plugin reads: stdin, the CNI_* variables, the datastore settings.

Whatever the runtime passes, parsing ends in a usable invocation or in a
CNIError with one of the spec's codes for bad input (1 version, 4
environment, 5 I/O, 6 decoding, 7 network config), so that the runtime
always gets the spec's error object: never another exception. Runs are
deterministic (``derandomize``) and keep no example database.
"""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cni import config
from cni.config import CNIError, Invocation

SPEC_CODES = {1, 4, 5, 6, 7}
FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None)

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/p", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/opt/cni/bin", "ETCD_ENDPOINTS": "http://127.0.0.1:2379"}

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
# Values a network config's fields plausibly get, right or wrong.
field_values = (json_values | st.sampled_from(["1.0.0", "0.3.1", "9.9.9", "true", "false", "etcdv3", "kubernetes",
                                               "calico-ipam", "http://127.0.0.1:2379", "a,b", "", "/x", "../.."]) |
                st.integers(min_value=-10, max_value=70000))
def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a good value, sometimes anything: so that most examples get past the first check."""
    return st.integers(0, 3).flatmap(lambda i: field_values if i == 0 else good)


def text_of(*values: str) -> st.SearchStrategy[str]:
    return st.sampled_from(values)


ipam = st.fixed_dictionaries({"type": mostly(text_of("calico-ipam", "host-local"))},
                             optional={"assign_ipv4": mostly(text_of("true", "false")),
                                       "assign_ipv6": mostly(text_of("true", "false")),
                                       "ipv4_pools": mostly(st.lists(text_of("10.244.0.0/16", "pool1"), max_size=2))})
netconfs = st.fixed_dictionaries(
    {"cniVersion": mostly(st.sampled_from(config.SUPPORTED_VERSIONS)),
     "name": mostly(st.from_regex(r"[a-z][a-z0-9.-]{0,10}", fullmatch=True)),
     "type": mostly(text_of("calico", "calico-ipam"))},
    optional={"ipam": mostly(ipam), "mtu": mostly(st.integers(min_value=68, max_value=65535)),
              "datastore_type": mostly(text_of("etcdv3", "kubernetes")),
              "etcd_endpoints": mostly(text_of("http://127.0.0.1:2379", "http://a:1,http://b:2")),
              "etcd_ca_cert_file": mostly(text_of("/etc/calico/ca.pem")),
              "nodename": mostly(text_of("node1")), "log_level": mostly(text_of("info", "debug", "warning")),
              "ipam_lock_file": mostly(text_of("/run/calico/ipam.lock")),
              "prevResult": mostly(st.dictionaries(st.text(max_size=5), json_values, max_size=3)),
              "kubernetes": mostly(st.fixed_dictionaries({}, optional={
                  "kubeconfig": mostly(text_of("/etc/cni/net.d/calico-kubeconfig")),
                  "k8s_api_root": mostly(text_of("https://10.96.0.1:443"))})),
              "policy": mostly(st.just({"type": "k8s"})), "capabilities": json_values, "runtimeConfig": json_values})
cni_text = st.text(max_size=20) | st.sampled_from(["a/b", "..", ".", "-x", "x y", "eth0:1", "e" * 16, "ok_1.2-3"])


def mostly_text(good: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """An environment variable: usually a good value, sometimes any text (variables are always text)."""
    return st.integers(0, 3).flatmap(lambda i: cni_text if i == 0 else good)


environments = st.fixed_dictionaries(
    {"CNI_COMMAND": mostly_text(text_of("ADD", "DEL", "CHECK", "GC", "STATUS", "", "add", "VERSION")),
     "CNI_CONTAINERID": mostly_text(st.from_regex(r"[a-f0-9]{12,64}", fullmatch=True)),
     "CNI_NETNS": mostly_text(text_of("/var/run/netns/p")),
     "CNI_IFNAME": mostly_text(text_of("eth0", "net1"))},
    optional={"CNI_ARGS": mostly_text(text_of("K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns", "IgnoreUnknown=1")),
              "DATASTORE_TYPE": mostly_text(text_of("etcdv3", "kubernetes")),
              "CALICO_API_GROUP": mostly_text(text_of("projectcalico.org/v3"))})
# The pairs, whole or half (a half is code 4 by name).
credentials = st.sampled_from([{}, {}, {}, {"ETCD_CERT_FILE": "/c.pem", "ETCD_KEY_FILE": "/k.pem"},
                               {"ETCD_USERNAME": "u", "ETCD_PASSWORD": "p"}, {"ETCD_CERT_FILE": "/c.pem"},
                               {"ETCD_KEY_FILE": "/k.pem"}, {"ETCD_USERNAME": "u"}, {"ETCD_PASSWORD": "p"}])
environments = st.builds(lambda env, creds: {**env, **creds}, environments, credentials)


def parse(stdin: bytes | io.BytesIO, env: dict[str, str]) -> Invocation | CNIError:
    """What a plugin makes of its input, up to connecting: the invocation and its datastore settings."""
    try:
        inv = config.read(stdin, env)
        inv.conf.datastore(inv.env)
        return inv
    except CNIError as exc:
        assert exc.code in SPEC_CODES, (exc.code, exc.msg)
        assert exc.msg and isinstance(exc.details, str)
        json.dumps(exc.result("1.0.0"))  # the error object always serialises
        return exc


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_on_stdin_are_a_config_or_a_spec_error(data: bytes) -> None:
    parse(data, ENV)
    parse(io.BytesIO(data), ENV)


@FUZZ
@given(json_values)
def test_random_json_on_stdin_is_a_config_or_a_spec_error(doc: Any) -> None:
    result = parse(json.dumps(doc).encode(), ENV)
    if not isinstance(doc, dict):
        assert isinstance(result, CNIError) and result.code == 6


@FUZZ
@given(netconfs)
def test_random_network_configs_are_a_config_or_a_spec_error(doc: dict[str, Any]) -> None:
    result = parse(json.dumps(doc).encode(), ENV)
    if isinstance(result, Invocation):  # accepted: then it is what the config says
        assert result.conf.name == doc["name"] and result.conf.cni_version in config.SUPPORTED_VERSIONS


@FUZZ
@given(environments, netconfs)
def test_random_cni_environments_are_an_invocation_or_a_spec_error(env: dict[str, str],
                                                                   doc: dict[str, Any]) -> None:
    result = parse(json.dumps(doc).encode(), env)
    if isinstance(result, Invocation) and result.command in ("ADD", "DEL", "CHECK"):
        assert config._NAME.fullmatch(result.container_id)  # the spec's characters only
        assert "/" not in result.ifname and len(result.ifname) <= 15
