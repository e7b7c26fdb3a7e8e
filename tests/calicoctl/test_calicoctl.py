"""calicoctl end to end: the real console script against a real etcd.

Expected tables are copied from the seed document (Calico's own output), with
the trailing padding Calico's tabwriter leaves on every line.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.etcd_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def calicoctl(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["calicoctl", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


def table(text: str) -> str:
    """The seed's table text with Calico's per-cell padding restored on the last column."""
    lines = textwrap.dedent(text).strip("\n").splitlines()
    return "\n".join(lines) + "\n\n"


class TestSeedViews:
    def test_apply_the_seed_pool_then_get_ippool_wide_prints_calicos_layout(self, etcd_env: dict[str, str]) -> None:
        r = calicoctl(etcd_env, "apply", "-f", str(ROOT / "examples/ippool.yaml"))
        assert r.returncode == 0, r.stderr
        assert r.stdout == "Successfully applied 1 'IPPool' resource(s)\n"
        r = calicoctl(etcd_env, "get", "ippool", "-o", "wide")
        assert r.returncode == 0, r.stderr
        # From the seed (IPIP-always section), plus the tabwriter's trailing padding.
        assert r.stdout == (
            "NAME                  CIDR            NAT    IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR   \n"
            "default-ipv4-ippool   10.244.0.0/16   true   Always     Never       false      false              all()      \n"
            "\n")
        assert [line.rstrip() for line in r.stdout.splitlines()][:2] == [
            "NAME                  CIDR            NAT    IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR",
            "default-ipv4-ippool   10.244.0.0/16   true   Always     Never       false      false              all()",
        ]

    def test_get_node_wide_shows_the_default_asn_in_parentheses(self, etcd_env: dict[str, str],
                                                                 tmp_path: Path) -> None:
        nodes = [("master-c3.myk8s.example.com", "192.168.3.110/24"),
                 ("worker1-c3.myk8s.example.com", "192.168.3.111/24"),
                 ("worker2-c3.myk8s.example.com", "192.168.3.112/24"),
                 ("worker3-c3.myk8s.example.com", "192.168.3.113/24")]
        docs = [{"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": n},
                 "spec": {"bgp": {"ipv4Address": ip}}} for n, ip in nodes]
        f = tmp_path / "nodes.yaml"
        f.write_text(yaml.safe_dump_all(docs))
        r = calicoctl(etcd_env, "create", "-f", str(f))
        assert r.stdout == "Successfully created 4 'Node' resource(s)\n", r.stderr
        r = calicoctl(etcd_env, "get", "node", "-o", "wide")
        assert [line.rstrip() for line in r.stdout.splitlines()] == [
            "NAME                           ASN       IPV4               IPV6",
            "master-c3.myk8s.example.com    (64512)   192.168.3.110/24",
            "worker1-c3.myk8s.example.com   (64512)   192.168.3.111/24",
            "worker2-c3.myk8s.example.com   (64512)   192.168.3.112/24",
            "worker3-c3.myk8s.example.com   (64512)   192.168.3.113/24",
            "",
        ]
        # A BGPConfiguration default AS number replaces 64512.
        r = calicoctl(etcd_env, "apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
             "spec": {"asNumber": "1.10"}}))
        assert r.returncode == 0, r.stderr
        r = calicoctl(etcd_env, "get", "node", "-o", "wide")
        assert "(65546)" in r.stdout.splitlines()[1]

    def test_get_workloadendpoints_prints_the_seed_columns(self, etcd_env: dict[str, str], tmp_path: Path) -> None:
        weps = [("client-6d96c457bc-bd2p9", "worker1-k8s.myk8s.example.com", "10.244.56.65/32", "cali3745790aa7e"),
                ("nginx-deployment-66b6c48dd5-hfqkp", "worker1-k8s.myk8s.example.com", "10.244.56.67/32",
                 "calieae43b83db8")]
        docs = [{"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                 "metadata": {"name": f"{node}-k8s-{pod}-eth0", "namespace": "default"},
                 "spec": {"orchestrator": "k8s", "node": node, "pod": pod, "endpoint": "eth0",
                          "ipNetworks": [ip], "interfaceName": iface}} for pod, node, ip, iface in weps]
        f = tmp_path / "weps.yaml"
        f.write_text(yaml.safe_dump({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpointList",
                                     "items": docs}))
        assert calicoctl(etcd_env, "apply", "-f", str(f)).returncode == 0
        r = calicoctl(etcd_env, "get", "workloadendpoints")
        assert [line.rstrip() for line in r.stdout.splitlines()] == [
            "WORKLOAD                            NODE                            NETWORKS          INTERFACE",
            "client-6d96c457bc-bd2p9             worker1-k8s.myk8s.example.com   10.244.56.65/32   cali3745790aa7e",
            "nginx-deployment-66b6c48dd5-hfqkp   worker1-k8s.myk8s.example.com   10.244.56.67/32   calieae43b83db8",
            "",
        ]
        r = calicoctl(etcd_env, "get", "wep", "-A")
        assert r.stdout.splitlines()[0].split() == ["NAMESPACE", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE"]


class TestCrud:
    def test_yaml_output_round_trips_through_apply(self, etcd_env: dict[str, str], tmp_path: Path) -> None:
        calicoctl(etcd_env, "apply", "-f", str(ROOT / "examples/ippool.yaml"))
        r = calicoctl(etcd_env, "get", "ippool", "default-ipv4-ippool", "-o", "yaml")
        doc = yaml.safe_load(r.stdout)
        assert doc["spec"] == {"allowedUses": ["Workload", "Tunnel"], "assignmentMode": "Automatic",
                               "blockSize": 26, "cidr": "10.244.0.0/16", "ipipMode": "Always",
                               "natOutgoing": True, "nodeSelector": "all()", "vxlanMode": "Never"}
        assert doc["metadata"]["resourceVersion"] and doc["metadata"]["uid"]
        assert list(yaml.safe_load(calicoctl(etcd_env, "get", "ippool", "-o", "yaml").stdout)) == [
            "apiVersion", "items", "kind", "metadata"]
        f = tmp_path / "p.yaml"
        f.write_text(r.stdout)
        assert calicoctl(etcd_env, "replace", "-f", str(f)).stdout == "Successfully replaced 1 'IPPool' resource(s)\n"
        # The same file again carries a now-stale resourceVersion: a conflict, nothing changes.
        r = calicoctl(etcd_env, "replace", "-f", str(f))
        assert r.returncode == 1
        assert "update conflict: IPPool(default-ipv4-ippool)" in r.stderr

    def test_create_twice_fails_with_already_exists_and_skip_exists_skips(self, etcd_env: dict[str, str]) -> None:
        pool = str(ROOT / "examples/ippool.yaml")
        assert calicoctl(etcd_env, "create", "-f", pool).returncode == 0
        r = calicoctl(etcd_env, "create", "-f", pool)
        assert r.returncode == 1
        assert r.stderr == ("failed to create 'IPPool' resource: [resource already exists: "
                            "IPPool(default-ipv4-ippool) with error: <nil>]\n")
        assert calicoctl(etcd_env, "create", "--skip-exists", "-f", pool).returncode == 0

    def test_get_and_delete_of_a_missing_resource_fail_clearly(self, etcd_env: dict[str, str]) -> None:
        r = calicoctl(etcd_env, "get", "ippool", "nope")
        assert (r.returncode, r.stderr) == (1, "resource does not exist: IPPool(nope) with error: <nil>\n")
        r = calicoctl(etcd_env, "delete", "ippool", "nope")
        assert r.returncode == 1
        assert r.stderr.startswith("Failed to delete 'IPPool' resource: resource does not exist: IPPool(nope)")
        assert calicoctl(etcd_env, "delete", "ippool", "nope", "--skip-not-exists").returncode == 0

    def test_delete_by_kind_and_name(self, etcd_env: dict[str, str]) -> None:
        calicoctl(etcd_env, "apply", "-f", str(ROOT / "examples/ippool.yaml"))
        r = calicoctl(etcd_env, "delete", "pool", "default-ipv4-ippool")
        assert r.stdout == "Successfully deleted 1 'IPPool' resource(s)\n"
        assert calicoctl(etcd_env, "get", "ippool").stdout == "NAME   CIDR   SELECTOR   \n\n"

    def test_overlapping_pool_is_rejected_with_both_names(self, etcd_env: dict[str, str]) -> None:
        calicoctl(etcd_env, "apply", "-f", str(ROOT / "examples/ippool.yaml"))
        r = calicoctl(etcd_env, "create", "-f", "-", stdin=json.dumps(
            {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "other"},
             "spec": {"cidr": "10.244.128.0/17"}}))
        assert r.returncode == 1
        assert ("spec.cidr = '10.244.128.0/17' (IPPool(other) CIDR overlaps with IPPool(default-ipv4-ippool) "
                "CIDR 10.244.0.0/16)") in r.stderr

    def test_changing_a_pool_cidr_or_block_size_is_refused(self, etcd_env: dict[str, str]) -> None:
        calicoctl(etcd_env, "apply", "-f", str(ROOT / "examples/ippool.yaml"))
        r = calicoctl(etcd_env, "patch", "ippool", "default-ipv4-ippool", "-p", '{"spec":{"blockSize":24}}')
        assert r.returncode == 1 and "IPPool BlockSize cannot be modified" in r.stderr
        r = calicoctl(etcd_env, "patch", "ippool", "default-ipv4-ippool", "-p", '{"spec":{"ipipMode":"Never",'
                      '"vxlanMode":"Always"}}')
        assert r.stdout == "Successfully patched 1 'IPPool' resource\n", r.stderr
        wide = calicoctl(etcd_env, "get", "ippool", "-o", "wide").stdout
        assert wide.splitlines()[1].split()[3:5] == ["Never", "Always"]

    def test_namespaced_kinds_default_to_the_default_namespace(self, etcd_env: dict[str, str]) -> None:
        pol = {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "allow-web"},
               "spec": {"selector": "app == 'web'", "ingress": [{"action": "Allow", "protocol": "TCP",
                                                                 "destination": {"ports": [80]}}]}}
        assert calicoctl(etcd_env, "apply", "-f", "-", stdin=json.dumps(pol)).returncode == 0
        r = calicoctl(etcd_env, "get", "networkpolicy", "allow-web", "-n", "default", "-o", "json")
        doc = json.loads(r.stdout)
        assert doc["metadata"]["namespace"] == "default"
        assert doc["spec"]["types"] == ["Ingress"] and doc["spec"]["tier"] == "default"
        r = calicoctl(etcd_env, "get", "ippool", "-n", "default")
        assert (r.returncode, r.stderr) == (1, "IPPool is not namespaced\n")

    def test_get_output_name_and_custom_columns(self, etcd_env: dict[str, str]) -> None:
        calicoctl(etcd_env, "apply", "-f", str(ROOT / "examples/ippool.yaml"))
        assert calicoctl(etcd_env, "get", "ippool", "-o", "name").stdout == \
            "ippool.projectcalico.org/default-ipv4-ippool\n"
        r = calicoctl(etcd_env, "get", "ippool", "-o", "custom-columns=NAME,NAT")
        assert [line.rstrip() for line in r.stdout.splitlines()] == ["NAME                  NAT",
                                                                       "default-ipv4-ippool   true", ""]
        r = calicoctl(etcd_env, "get", "ippool", "-o", "bogus")
        assert (r.returncode, r.stderr) == (1, "unrecognized output format 'bogus'\n")

    def test_clusterinformation_is_written_on_first_write_and_cannot_be_deleted(
            self, etcd_env: dict[str, str]) -> None:
        calicoctl(etcd_env, "apply", "-f", str(ROOT / "examples/ippool.yaml"))
        r = calicoctl(etcd_env, "get", "clusterinformation", "default", "-o", "yaml")
        assert yaml.safe_load(r.stdout)["spec"]["datastoreReady"] is True
        r = calicoctl(etcd_env, "delete", "clusterinformation", "default")
        assert r.returncode == 1 and "operation delete is not supported on ClusterInformation" in r.stderr


class TestConfiguration:
    def test_unreachable_datastore_is_a_clear_error(self, etcd_env: dict[str, str]) -> None:
        env = {**etcd_env, "ETCD_ENDPOINTS": f"http://127.0.0.1:{free_port()}"}
        r = calicoctl(env, "get", "ippool")
        assert r.returncode == 1
        assert "etcd list failed" in r.stderr and "Connection refused" in r.stderr
        r = calicoctl(env, "apply", "-f", str(ROOT / "examples/ippool.yaml"))
        assert r.returncode == 1 and "failed to apply 'IPPool' resource" in r.stderr

    def test_config_file_takes_precedence_over_the_environment(self, etcd_env: dict[str, str],
                                                               tmp_path: Path) -> None:
        cfg = tmp_path / "calicoctl.cfg"
        cfg.write_text(yaml.safe_dump({"apiVersion": "projectcalico.org/v3", "kind": "CalicoAPIConfig",
                                       "metadata": {}, "spec": {"datastoreType": "etcdv3",
                                                                "etcdEndpoints": etcd_env["ETCD_ENDPOINTS"]}}))
        env = {**etcd_env, "ETCD_ENDPOINTS": f"http://127.0.0.1:{free_port()}"}
        r = calicoctl(env, "apply", "-c", str(cfg), "-f", str(ROOT / "examples/ippool.yaml"))
        assert r.returncode == 0, r.stderr
        bad = tmp_path / "bad.cfg"
        bad.write_text("kind: CalicoAPIConfig\nspec:\n  datastoreTyp: etcdv3\n")
        r = calicoctl(env, "get", "ippool", "-c", str(bad))
        assert r.returncode == 1 and "spec.datastoreTyp (unknown field)" in r.stderr

    def test_unsupported_datastore_types_say_so(self, etcd_env: dict[str, str]) -> None:
        r = calicoctl({**etcd_env, "DATASTORE_TYPE": "consul"}, "get", "ippool")
        assert r.returncode == 1
        assert "must be etcdv3 or kubernetes" in r.stderr

    def test_kubernetes_without_a_kubeconfig_outside_a_cluster_says_so(self, etcd_env: dict[str, str]) -> None:
        env = {k: v for k, v in etcd_env.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
        r = calicoctl({**env, "DATASTORE_TYPE": "kubernetes"}, "get", "ippool")
        assert r.returncode == 1
        assert "cannot load the Kubernetes client configuration (in-cluster)" in r.stderr
