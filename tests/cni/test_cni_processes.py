"""The CNI plugins as a runtime runs them, as processes against a real etcd, without network namespaces.

``calico-ipam`` never touches the network namespace, so it runs here on the
host's loopback; the ``calico`` plugin runs here only where it must fail
before it wires anything (its wiring is tests/cni/test_cni.py's, in namespaces).
Every failure must reach the runtime as the spec's error object (``code``,
``msg``, ``details``) on stdout with a nonzero exit, whatever went wrong:
never an empty stdout, never a traceback instead. Each test gets its own IPAM
lock file (Calico's ``ipam_lock_file``), so runs elsewhere on this host do not
wait on it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from libcalico.ipam import IPAM
from tests.etcd_server import EtcdServer, free_port
from tests.libcalico.test_ipam_processes import calicoctl, seed_pool

PLUGINS = ["calico", "calico-ipam"]


def netconf(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico-ipam",
                            "nodename": "worker1", "log_level": "warning",
                            "ipam_lock_file": str(tmp_path / "calico" / "ipam.lock"),
                            "ipam": {"type": "calico-ipam", "assign_ipv4": "true"}}
    conf.update(overrides)
    return conf


def cni_env(endpoints: str, command: str = "ADD", container: str = "c1", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "DATASTORE_", "CNI_", "CALICO_"))}
    env.update({"ETCD_ENDPOINTS": endpoints, "DATASTORE_TYPE": "etcdv3", "CNI_COMMAND": command,
                "CNI_CONTAINERID": container, "CNI_NETNS": "/var/run/netns/none", "CNI_IFNAME": "eth0",
                "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"})
    env.update(extra)
    return env


def start(plugin: str, env: dict[str, str], stdin: Path) -> subprocess.Popen[str]:
    with stdin.open("rb") as f:
        return subprocess.Popen([plugin], env=env, stdin=f, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(plugin: str, env: dict[str, str], stdin: str | None) -> tuple[int, dict[str, Any] | None, str]:
    """Run a plugin; ``stdin`` None runs it with stdin closed (``0<&-``)."""
    if stdin is None:
        r = subprocess.run(f"exec {plugin} 0<&-", shell=True, env=env, capture_output=True, text=True, timeout=60)
    else:
        r = subprocess.run([plugin], env=env, input=stdin, capture_output=True, text=True, timeout=60)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else None, r.stderr


def assert_cni_error(rc: int, out: dict[str, Any] | None, err: str, code: int, *words: str) -> dict[str, Any]:
    assert rc == 1, (rc, out, err)
    assert out is not None and set(out) == {"cniVersion", "code", "msg", "details"}, (out, err)
    assert out["code"] == code, out
    for w in words:
        assert w in out["msg"] + " " + out["details"], out
    assert "Traceback" not in err, err
    return out


# --- item 2: ADDs racing for one container ------------------------------------------------------------------

async def test_eight_concurrent_adds_for_one_container_all_answer_its_one_address(
        etcd: EtcdServer, tmp_path: Path) -> None:
    be = await seed_pool(etcd.endpoint)
    try:
        stdin = tmp_path / "netconf.json"
        stdin.write_text(json.dumps(netconf(tmp_path)))
        procs = [start("calico-ipam", cni_env(etcd.endpoint, container="racer"), stdin) for _ in range(8)]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, (out, err)
        replies = [json.loads(out) for out, _ in outs]
        assert all(r == replies[0] for r in replies), replies
        [address] = replies[0]["ips"]
        held = await IPAM(be).ips_by_handle("k8s-pod-network.racer")
        assert held == [address["address"].removesuffix("/32")]
        assert sum(b.used for b in await IPAM(be).blocks()) == 1
    finally:
        await be.close()


# --- items 7, 13, 14: TLS and credential mistakes, named, before anything connects -----------------------------

@pytest.fixture
def junk(tmp_path: Path) -> Path:
    path = tmp_path / "junk.pem"
    path.write_text("this is not a certificate\n")
    return path


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("case, code, words", [
    ("cert-without-key", 4, ["ETCD_KEY_FILE", "must be set when ETCD_CERT_FILE is set"]),
    ("key-without-cert", 4, ["ETCD_CERT_FILE", "must be set when ETCD_KEY_FILE is set"]),
    ("user-without-password", 4, ["ETCD_PASSWORD", "must be set when ETCD_USERNAME is set"]),
    ("password-without-user", 4, ["ETCD_USERNAME", "must be set when ETCD_PASSWORD is set"]),
    ("netconf-cert-without-key", 7, ["ETCD_KEY_FILE", "must be set when etcd_cert_file is set"]),
    ("missing-ca", 100, ["cannot read etcd CA certificate file", "nope.crt", "No such file or directory"]),
    ("directory-as-ca", 100, ["cannot read etcd CA certificate file", "Is a directory"]),
    ("junk-ca", 100, ["etcd CA certificate file", "junk.pem", "holds no PEM CA certificate"]),
    ("junk-cert-and-key", 100, ["etcd certificate file", "junk.pem", "holds no PEM certificate"]),
])
def test_tls_and_credential_mistakes_are_cni_errors_that_name_the_setting(
        tmp_path: Path, junk: Path, plugin: str, case: str, code: int, words: list[str]) -> None:
    dead = f"https://127.0.0.1:{free_port()}"  # never reached: each mistake is found before connecting
    extra, conf = {
        "cert-without-key": ({"ETCD_CERT_FILE": str(junk)}, {}),
        "key-without-cert": ({"ETCD_KEY_FILE": str(junk)}, {}),
        "user-without-password": ({"ETCD_USERNAME": "admin"}, {}),
        "password-without-user": ({"ETCD_PASSWORD": "secret"}, {}),
        "netconf-cert-without-key": ({}, {"etcd_cert_file": str(junk)}),
        "missing-ca": ({"ETCD_CA_CERT_FILE": str(tmp_path / "nope.crt")}, {}),
        "directory-as-ca": ({"ETCD_CA_CERT_FILE": str(tmp_path)}, {}),
        "junk-ca": ({"ETCD_CA_CERT_FILE": str(junk)}, {}),
        "junk-cert-and-key": ({"ETCD_CERT_FILE": str(junk), "ETCD_KEY_FILE": str(junk)}, {}),
    }[case]
    rc, out, err = run(plugin, cni_env(dead, **extra), json.dumps(netconf(tmp_path, type=plugin, **conf)))
    out = assert_cni_error(rc, out, err, code, *words)
    assert "secret" not in json.dumps(out)


# --- item 13: stdin, container IDs and interface names as the spec has them -----------------------------------

@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("stdin, code, words", [
    (None, 5, ["error reading from stdin"]),
    ("", 6, ["the network config on stdin is empty"]),
    ("   \n", 6, ["the network config on stdin is empty"]),
    ("[" * 100_000, 6, ["not JSON"]),
    ("[" * 100_000 + "]" * 100_000, 6, ["nested too deeply"]),
    ('{"cniVersion": "1.0.0", "type": "calico"}', 7, ["missing network name"]),
    ('{"cniVersion": "1.0.0", "name": "a/b", "type": "calico"}', 7, ["invalid characters found in network name",
                                                                     "a/b"]),
], ids=["closed", "empty", "blank", "unterminated-100000-deep", "100000-deep", "no-name", "bad-name"])
def test_an_unreadable_or_unusable_stdin_is_a_cni_error_object(
        plugin: str, stdin: str | None, code: int, words: list[str]) -> None:
    rc, out, err = run(plugin, cni_env(f"http://127.0.0.1:{free_port()}"), stdin)
    assert_cni_error(rc, out, err, code, *words)


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("variable, value, words", [
    ("CNI_CONTAINERID", "abc/def", ["CNI_CONTAINERID: invalid characters in containerID", "abc/def"]),
    ("CNI_CONTAINERID", "../../etc", ["invalid characters in containerID"]),
    ("CNI_CONTAINERID", "-leading-dash", ["invalid characters in containerID"]),
    ("CNI_CONTAINERID", "with space", ["invalid characters in containerID"]),
    ("CNI_IFNAME", "eth0/1", ["CNI_IFNAME: interface name contains / or : or whitespace characters"]),
    ("CNI_IFNAME", "a-very-long-interface", ["interface name is too long"]),
    ("CNI_COMMAND", "FROB", ["unknown CNI_COMMAND: FROB"]),
    ("CNI_NETNS", "", ["required env variables [CNI_NETNS] missing"]),
])
def test_cni_variables_outside_the_spec_are_code_4_naming_the_problem(
        tmp_path: Path, plugin: str, variable: str, value: str, words: list[str]) -> None:
    env = cni_env(f"http://127.0.0.1:{free_port()}", **{variable: value})
    rc, out, err = run(plugin, env, json.dumps(netconf(tmp_path, type=plugin)))
    assert_cni_error(rc, out, err, 4, *words)


# --- item 9: every endpoint in ETCD_ENDPOINTS is used ------------------------------------------------------

@pytest.mark.parametrize("order", ["dead-first", "dead-last"])
async def test_a_dead_etcd_endpoint_is_passed_over_by_cni_and_calicoctl(
        etcd: EtcdServer, etcd_env: dict[str, str], tmp_path: Path, order: str) -> None:
    be = await seed_pool(etcd.endpoint)
    try:
        dead = f"http://127.0.0.1:{free_port()}"
        endpoints = f"{dead},{etcd.endpoint}" if order == "dead-first" else f"{etcd.endpoint},{dead}"
        r = calicoctl({**etcd_env, "ETCD_ENDPOINTS": endpoints}, "get", "ippool")
        assert r.returncode == 0 and "default-ipv4-ippool" in r.stdout, r.stderr
        rc, out, err = run("calico-ipam", cni_env(endpoints, container="fo1"), json.dumps(netconf(tmp_path)))
        assert rc == 0 and out is not None, (out, err)
        ip = out["ips"][0]["address"].removesuffix("/32")
        assert await IPAM(be).ips_by_handle("k8s-pod-network.fo1") == [ip]
        rc, out, err = run("calico-ipam", cni_env(endpoints, "DEL", container="fo1"), json.dumps(netconf(tmp_path)))
        assert rc == 0, (out, err)
        assert await IPAM(be).ips_by_handle("k8s-pod-network.fo1") == []
    finally:
        await be.close()


def test_when_every_endpoint_is_dead_the_error_says_why(tmp_path: Path) -> None:
    endpoints = ",".join(f"http://127.0.0.1:{free_port()}" for _ in range(3))
    rc, out, err = run("calico-ipam", cni_env(endpoints), json.dumps(netconf(tmp_path)))
    assert_cni_error(rc, out, err, 100, "etcd get failed", "Connection refused")
