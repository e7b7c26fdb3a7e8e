"""calicoctl against hostile input and a hostile environment, on a real etcd.

Each case is something a careless or hostile user can do (issue 18): write
IPAM's own state, feed an alias bomb, a binary file, a 100,000-deep JSON, a
closed stdin, quoted booleans and numbers, a missing config file. Each must
end in one clear line on stderr, exit code 1, and an unchanged datastore,
never a traceback. Calico's own messages are used where Calico has one.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from calicoctl import crud
from calicoctl.main import main as calicoctl_main
from libcalico import api
from libcalico.api import manifests
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.errors import ValidationError
from libcalico.ipam import IPAM, pod_handle
from libcalico.model import KVPair, ResourceKey
from tests.etcd_server import EtcdServer

V3 = "projectcalico.org/v3"


def calicoctl(env: dict[str, str], *args: str, stdin: str | bytes | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    r = subprocess.run(["calicoctl", *args], env=env, input=data, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
    """calicoctl in this process (fast), with ``stdin`` as its standard input."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            rc = calicoctl_main(list(args))
    finally:
        sys.stdin = old
    return rc, out.getvalue(), err.getvalue()


def snapshot(endpoint: str) -> list[tuple[str, str, int]]:
    """Every key, value and mod revision in etcd: equal snapshots mean nothing was written."""
    out = subprocess.run(["etcdctl", f"--endpoints={endpoint}", "get", "--prefix", "", "-w", "json"],
                         env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True, check=True,
                         timeout=30).stdout
    return [(kv["key"], kv["value"], kv["mod_revision"]) for kv in json.loads(out).get("kvs", [])]


def pool(name: str = "pool-a", cidr: str = "10.244.0.0/16", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": "IPPool", "metadata": {"name": name}, "spec": {"cidr": cidr, **spec}}


def one_line(stderr: str) -> str:
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    return stderr.rstrip("\n")


@pytest.fixture
def seeded(etcd: EtcdServer, etcd_env: dict[str, str]) -> Iterator[list[tuple[str, str, int]]]:
    """A pool in the datastore (so "unchanged" is a real check); yields the snapshot to compare against."""
    rc, _, err = run("apply", "-f", "-", stdin=json.dumps(pool()))
    assert rc == 0, err
    yield snapshot(etcd.endpoint)


# --- IPAM's own kinds ------------------------------------------------------------------------------

IPAM_DOCS = {
    "IPAMBlock": {"metadata": {"name": "10-244-0-0-26"},
                  "spec": {"cidr": "10.244.0.0/26", "allocations": [None] * 64, "unallocated": list(range(64)),
                           "attributes": []}},
    "BlockAffinity": {"metadata": {"name": "node-a-10-244-0-0-26"},
                      "spec": {"state": "confirmed", "node": "node-a", "cidr": "10.244.0.0/26"}},
    "IPAMHandle": {"metadata": {"name": "k8s-pod-network.abc"},
                   "spec": {"handleID": "k8s-pod-network.abc", "block": {"10.244.0.0/26": 1}}},
    "IPAMConfig": {"metadata": {"name": "default"}, "spec": {"strictAffinity": True}},
}


class TestIPAMKindsAreRefused:
    @pytest.mark.parametrize("action", ["apply", "create", "replace", "delete"])
    @pytest.mark.parametrize("group", [V3, "crd.projectcalico.org/v1"])
    @pytest.mark.parametrize("kind", list(IPAM_DOCS))
    def test_writing_an_ipam_kind_from_a_file_is_refused_naming_the_kind_and_writes_nothing(
            self, etcd: EtcdServer, seeded: list[Any], kind: str, group: str, action: str) -> None:
        doc = {"apiVersion": group, "kind": kind, **IPAM_DOCS[kind]}
        # Behind a valid pool in the same file: the whole file is refused.
        rc, out, err = run(action, "-f", "-", stdin=json.dumps(pool("pool-b", "10.245.0.0/16")) + "\n---\n" +
                           json.dumps(doc))
        assert rc == 1
        assert out == ""
        assert f"error with field kind = '{kind}' ({kind} is IPAM state" in err
        assert "calicoctl ipam" in err
        assert snapshot(etcd.endpoint) == seeded

    def test_a_live_block_cannot_be_overwritten_or_deleted_with_apply_or_delete(
            self, etcd: EtcdServer, etcd_env: dict[str, str], tmp_path: Path) -> None:
        import asyncio

        async def allocate() -> tuple[str, str]:
            be = EtcdBackend(EtcdConfig(endpoints=(etcd.endpoint,)))
            try:
                p = api.IPPool.model_validate(pool(blockSize=26))
                await be.create(KVPair(ResourceKey.for_resource(p), p))
                node = api.Node.model_validate({"metadata": {"name": "node-a"}})
                await be.create(KVPair(ResourceKey.for_resource(node), node))
                ip = (await IPAM(be).auto_assign("node-a", pod_handle("pod-1"), {"node": "node-a"}))[0]
                blocks = (await be.list(api_list("IPAMBlock"))).items
                return ip, blocks[0].value.metadata.name
            finally:
                await be.close()

        ip, block_name = asyncio.run(allocate())
        before = snapshot(etcd.endpoint)
        r = calicoctl(etcd_env, "get", "ipamblocks")
        assert r.returncode == 1 and "resource type 'ipamblocks' is not supported" in r.stderr
        empty = {"apiVersion": V3, "kind": "IPAMBlock", "metadata": {"name": block_name},
                 "spec": {"cidr": "10.244.0.0/26", "allocations": [None] * 64, "unallocated": list(range(64))}}
        f = tmp_path / "block.yaml"
        f.write_text(yaml.safe_dump(empty))
        for action in ("apply", "replace", "delete"):
            r = calicoctl(etcd_env, action, "-f", str(f))
            assert r.returncode == 1, r.stdout
            assert r.stdout == ""
            assert one_line(r.stderr).startswith(f"failed to execute command: {f} document 1: error with field "
                                                 "kind = 'IPAMBlock'")
        assert snapshot(etcd.endpoint) == before
        r = calicoctl(etcd_env, "ipam", "show", "--ip", ip)
        assert r.stdout.startswith(f"IP {ip} is in use\n")


def api_list(kind: str) -> Any:
    from libcalico.model import ResourceListOptions

    return ResourceListOptions(kind)


# --- bounded parsing ---------------------------------------------------------------------------------


def alias_bomb(levels: int = 9, width: int = 9, pad: int = 17_500) -> str:
    """A "billion laughs" IPPool: each anchor repeats the one before it ``width`` times."""
    lines = [f"apiVersion: {V3}", "kind: IPPool", "metadata:", "  name: bomb", "spec:", "  cidr: 10.0.0.0/16",
             "  x0: &a0 [" + ", ".join(["lol"] * pad) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"  x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


class TestBoundedParsing:
    def test_an_87_kb_alias_bomb_is_refused_quickly_and_clearly(self, etcd: EtcdServer, etcd_env: dict[str, str],
                                                                 seeded: list[Any], tmp_path: Path) -> None:
        f = tmp_path / "bomb.yaml"
        f.write_text(alias_bomb())
        assert 80_000 < f.stat().st_size < 100_000
        # Before the bound this took over a minute and 60 MB; the deadline only keeps a
        # regression from hanging the suite.
        r = calicoctl(etcd_env, "apply", "-f", str(f), timeout=20)
        assert r.returncode == 1
        assert r.stdout == ""
        line = one_line(r.stderr)
        assert line.startswith(f"failed to execute command: error with field (document) (cannot parse {f}: "
                               "document contains excessive aliasing")
        assert snapshot(etcd.endpoint) == seeded

    def test_a_few_aliases_are_fine(self) -> None:
        text = (f"apiVersion: {V3}\nkind: GlobalNetworkPolicy\nmetadata: {{name: p}}\nspec:\n"
                "  ingress:\n  - &rule {action: Allow, protocol: TCP, destination: {ports: [80, 443]}}\n"
                "  egress:\n  - *rule\n")
        gnp = api.load_resources(text)[0]
        assert gnp.to_wire()["spec"]["egress"] == gnp.to_wire()["spec"]["ingress"]

    def test_an_anchor_that_contains_itself_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="an anchor's value contains an alias to itself"):
            api.load_documents("a: &x [1, *x]\n")

    def test_100000_deep_json_gives_one_line_and_no_recursion_error(self, etcd: EtcdServer,
                                                                    etcd_env: dict[str, str], seeded: list[Any],
                                                                    tmp_path: Path) -> None:
        f = tmp_path / "deep.json"
        f.write_text("[" * 100_000 + "]" * 100_000)
        r = calicoctl(etcd_env, "apply", "-f", str(f))
        assert r.returncode == 1
        assert one_line(r.stderr) == (f"failed to execute command: error with field (document) (cannot parse {f}: "
                                      f"line 1: nested deeper than {manifests.MAX_DEPTH} levels)")
        assert snapshot(etcd.endpoint) == seeded

    def test_a_resource_over_3_mib_is_refused(self, etcd: EtcdServer, seeded: list[Any]) -> None:
        big = pool("big", "10.246.0.0/16")
        big["metadata"]["annotations"] = {f"k{i}": "v" * 200 for i in range(16_000)}
        rc, out, err = run("apply", "-f", "-", stdin=json.dumps(big))
        assert rc == 1 and out == ""
        assert "a resource is larger than 3 MiB" in one_line(err)
        assert snapshot(etcd.endpoint) == seeded

    def test_a_list_may_be_larger_than_one_resource(self) -> None:
        items = [pool(f"p{i}", f"10.{i // 256}.{i % 256}.0/24", blockSize=26,
                      nodeSelector="all()" + " " * 1000) for i in range(4000)]
        text = json.dumps({"apiVersion": V3, "kind": "IPPoolList", "items": items})
        assert len(text) > manifests.MAX_RESOURCE_BYTES
        assert len(api.load_documents(text)) == 4000

    def test_an_input_over_the_limit_is_refused_before_parsing(self, etcd: EtcdServer, etcd_env: dict[str, str],
                                                               seeded: list[Any], tmp_path: Path) -> None:
        f = tmp_path / "huge.yaml"
        with open(f, "w") as out:
            out.write("# " + "x" * (manifests.MAX_INPUT_BYTES + 10) + "\n")
        r = calicoctl(etcd_env, "apply", "-f", str(f))
        assert r.returncode == 1
        assert one_line(r.stderr) == (f"failed to execute command: error with field (document) (cannot parse {f}: "
                                      "it is larger than 32 MiB)")
        assert snapshot(etcd.endpoint) == seeded

    def test_a_duplicate_key_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="key 'natOutgoing' already set in map"):
            api.load_documents("spec:\n  natOutgoing: false\n  natOutgoing: true\n")


class TestScalarsAsGoYAMLReadsThem:
    def test_a_port_range_is_a_string_not_a_base_60_number(self) -> None:
        text = (f"apiVersion: {V3}\nkind: GlobalNetworkPolicy\nmetadata: {{name: p}}\nspec:\n"
                "  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: [20:30, 80]\n")
        gnp = api.load_resources(text)[0]
        assert gnp.to_wire()["spec"]["ingress"][0]["destination"]["ports"] == ["20:30", 80]

    def test_dates_stay_text_and_numeric_keys_become_strings(self) -> None:
        assert api.load_documents("a: 2024-01-02\n1: x\ntrue: y\n") == [{"a": "2024-01-02", "1": "x", "true": "y"}]

    def test_yaml_numbers_and_booleans_become_label_values(self) -> None:
        text = (f"apiVersion: {V3}\nkind: IPPool\nmetadata:\n  name: p\n  labels: {{version: 1, beta: true, "
                "ratio: 1.5}\nspec:\n  cidr: 10.0.0.0/16\n")
        assert api.load_resources(text)[0].metadata.labels == {"version": "1", "beta": "true", "ratio": "1.5"}


# --- strict types ----------------------------------------------------------------------------------


class TestStrictTypes:
    @pytest.mark.parametrize("field,value,go_type", [
        ("blockSize", "26", "int"),
        ("natOutgoing", "yes", "bool"),
        ("disabled", "on", "bool"),
        ("disabled", "true", "bool"),
        ("disableBGPExport", 1, "bool"),
        ("blockSize", True, "int"),
        ("blockSize", 26.5, "int"),
    ])
    def test_a_wrong_json_type_is_refused_naming_the_field(self, etcd: EtcdServer, seeded: list[Any], field: str,
                                                           value: Any, go_type: str) -> None:
        rc, out, err = run("apply", "-f", "-", stdin=json.dumps(pool("pool-b", "10.245.0.0/16", **{field: value})))
        assert rc == 1 and out == ""
        assert f"error with field spec.{field} = " in err
        assert f"into Go value of type {go_type})" in err
        assert snapshot(etcd.endpoint) == seeded

    def test_a_quoted_on_does_not_disable_a_pool_but_yaml_booleans_and_numbers_work(self, etcd_env: dict[str, str],
                                                                                   etcd: EtcdServer) -> None:
        quoted = (f"apiVersion: {V3}\nkind: IPPool\nmetadata: {{name: p}}\nspec:\n  cidr: 10.1.0.0/16\n"
                  "  disabled: \"on\"\n")
        rc, _, err = run("apply", "-f", "-", stdin=quoted)
        assert rc == 1 and "spec.disabled = 'on'" in err
        native = (f"apiVersion: {V3}\nkind: IPPool\nmetadata: {{name: p}}\nspec:\n  cidr: 10.1.0.0/16\n"
                  "  blockSize: 26\n  natOutgoing: yes\n  disabled: off\n")
        rc, _, err = run("apply", "-f", "-", stdin=native)
        assert rc == 0, err
        rc, out, _ = run("get", "ippool", "p", "-o", "json")
        spec = json.loads(out)["spec"]
        assert spec["blockSize"] == 26 and spec["natOutgoing"] is True and "disabled" not in spec

    def test_null_leaves_a_field_at_its_default_as_encoding_json_does(self) -> None:
        res = api.load_resources(json.dumps(pool(natOutgoing=None, blockSize=None, nodeSelector=None)))[0]
        assert isinstance(res, api.IPPool)
        assert (res.spec.nat_outgoing, res.spec.block_size, res.spec.node_selector) == (False, 0, "")

    def test_stored_json_gets_no_yaml_conversion(self) -> None:
        # Calico's backends read stored values with encoding/json alone: a number is not a name.
        with pytest.raises(Exception, match="Input should be a valid string"):
            api.IPPool.model_validate({"metadata": {"name": 5}, "spec": {"cidr": "10.0.0.0/16"}})


# --- the command line ------------------------------------------------------------------------------


class TestArguments:
    def test_names_and_flags_come_in_any_order(self, etcd_env: dict[str, str], seeded: list[Any]) -> None:
        r = calicoctl(etcd_env, "get", "ippool", "-o", "wide", "pool-a")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[1].split()[:2] == ["pool-a", "10.244.0.0/16"]
        r = calicoctl(etcd_env, "get", "-o", "name", "ippool", "pool-a")
        assert r.stdout == "ippool.projectcalico.org/pool-a\n", r.stderr
        r = calicoctl(etcd_env, "patch", "ippool", "-p", '{"spec":{"natOutgoing":true}}', "pool-a")
        assert r.returncode == 0, r.stderr
        r = calicoctl(etcd_env, "delete", "ippool", "--skip-not-exists", "no-such-pool")
        assert r.returncode == 0, r.stderr
        r = calicoctl(etcd_env, "delete", "ippool", "pool-a", "-s")
        assert r.returncode == 0 and r.stdout == "Successfully deleted 1 'IPPool' resource(s)\n", r.stderr

    @pytest.mark.parametrize("flag", ["-c", "--config"])
    @pytest.mark.parametrize("command", [["get", "ippool"], ["apply", "-f", "-"], ["ipam", "show"]])
    def test_a_named_config_file_that_does_not_exist_is_an_error(self, etcd_env: dict[str, str], flag: str,
                                                                  command: list[str]) -> None:
        r = calicoctl(etcd_env, *command, flag, "/nonexistent.cfg", stdin=json.dumps(pool()))
        assert r.returncode == 1
        assert r.stdout == ""
        assert r.stderr == "Error reading config file: /nonexistent.cfg\n"

    def test_the_default_config_path_falls_back_to_the_environment(self, etcd_env: dict[str, str]) -> None:
        assert not os.path.exists("/etc/calico/calicoctl.cfg")
        r = calicoctl(etcd_env, "get", "ippool", "-c", "/etc/calico/calicoctl.cfg")
        assert r.returncode == 0, r.stderr

    def test_an_unexpected_error_is_one_line_naming_its_type(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def boom(opts: crud.Options) -> None:
            raise RuntimeError("something\nunforeseen")

        monkeypatch.setattr(crud, "run", boom)
        rc, out, err = run("get", "ippool")
        assert rc == 1 and out == ""
        assert err == "unexpected error: RuntimeError: something unforeseen\n"


class TestTracebacksBecomeMessages:
    def test_a_binary_file(self, etcd: EtcdServer, etcd_env: dict[str, str], seeded: list[Any],
                           tmp_path: Path) -> None:
        f = tmp_path / "binary.yaml"
        f.write_bytes(bytes(range(256)) * 4)
        r = calicoctl(etcd_env, "apply", "-f", str(f))
        assert r.returncode == 1
        assert one_line(r.stderr) == (f"failed to execute command: error with field (document) (cannot parse {f}: "
                                      "not UTF-8 text (byte 0x80 at offset 128); a manifest is YAML or JSON)")
        f.write_bytes(b"kind: IPPool\x00\x01\n")
        r = calicoctl(etcd_env, "apply", "-f", str(f))
        assert r.returncode == 1
        assert "special characters are not allowed" in one_line(r.stderr)
        assert snapshot(etcd.endpoint) == seeded

    def test_stdin_empty_or_closed(self, etcd: EtcdServer, etcd_env: dict[str, str], seeded: list[Any]) -> None:
        r = subprocess.run(["calicoctl", "apply", "-f", "-"], env=etcd_env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        assert one_line(r.stderr) == "no resources specified in file -"
        r = subprocess.run(["sh", "-c", "exec calicoctl apply -f - 0<&-"], env=etcd_env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1
        assert one_line(r.stderr) == "failed to execute command: cannot read stdin: it is closed"
        assert snapshot(etcd.endpoint) == seeded

    def test_a_patch_that_removes_the_spec(self, etcd: EtcdServer, etcd_env: dict[str, str],
                                           seeded: list[Any]) -> None:
        r = calicoctl(etcd_env, "patch", "ippool", "pool-a", "-p", '{"spec":null}')
        assert r.returncode == 1
        assert one_line(r.stderr) == ("hit error: [IPPool(pool-a): error with field spec.cidr = '' "
                                      "(IPPool CIDR must be specified)]")
        r = calicoctl(etcd_env, "patch", "ippool", "pool-a", "-p", "[" * 100_000)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert snapshot(etcd.endpoint) == seeded


class TestEmptyInput:
    def test_an_empty_directory_is_an_error_unless_skip_empty(self, etcd_env: dict[str, str],
                                                              tmp_path: Path) -> None:
        d = tmp_path / "manifests"
        d.mkdir()
        (d / "README.txt").write_text("not a manifest")
        r = calicoctl(etcd_env, "apply", "-f", str(d))
        assert r.returncode == 1
        assert r.stderr == f"no resources specified in directory {d}\n"
        r = calicoctl(etcd_env, "apply", "-f", str(d), "--skip-empty")
        assert r.returncode == 0 and r.stdout == "No resources specified\n", r.stderr

    def test_a_file_of_empty_documents_is_an_error(self, etcd_env: dict[str, str], tmp_path: Path) -> None:
        f = tmp_path / "empty.yaml"
        f.write_text("---\n# nothing\n---\n...\n")
        r = calicoctl(etcd_env, "apply", "-f", str(f))
        assert r.returncode == 1
        assert r.stderr == f"no resources specified in file {f}\n"
