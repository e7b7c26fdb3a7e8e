"""Calico's own confd test suite, case by case: our ``calico-confd -onetime`` must write what Calico's does.

Each case in tests/confd_suite/<case>/ (copied from Calico's
``confd/tests``, see the README there) is run as Calico's harness runs it
in etcd mode (``confd/tests/helpers_test.go``, ``runConfdTest``): node
``kube-master`` (or the case's ``node`` file); the six block affinities of
``standardBlockAffinities`` written as raw v2 IPAM keys (unless the case has
a ``no-affinities`` file, as Calico's daemon tests run some); the case's ``input.yaml`` created (here by our
``calicoctl create -f``, which must read Calico's own manifests); confd run
once; the six files compared with Calico's, statement by statement
(:mod:`tests.confd.confd_statements`: comments and whitespace ignored, order and
values not). Each rendered ``bird.cfg`` / ``bird6.cfg`` must also pass
``bird -p -c`` / ``bird6 -p -c``.

The one documented difference (docs/decisions.md): stock BIRD 1.6 has no
``krt_tunnel``, so where Calico's config has BIRD program an IPIP pool's
routes through tunl0, ours leaves them to Felix. :func:`expected` rewrites
Calico's statements for that, in the two places it shows: the pool's kernel
filter line (:data:`KRT_TUNNEL`: ``reject``, Felix's, instead of ``accept``
with ``krt_tunnel``), and the iBGP export filter, which keeps rejecting
tunl0's routes (they are Felix's, so they are not re-exported; Calico stops
rejecting them when BIRD programs them).

Calico's cases run in one etcd, wiped between cases; each runs confd and
calicoctl in this process, so the suite costs seconds, not a process start
per step. A case that does not pass yet is an ``xfail(strict=True)`` with its
reason in :data:`NOT_YET`, so the count of identical cases is visible in the
test report and a fix shows up as an XPASS to remove from the list.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import re
import subprocess
from pathlib import Path

import aetcd
import pytest

from calicoctl import main as calicoctl
from confd import main as confd_main
from tests.confd.confd_statements import statements
from tests.etcd_server import EtcdServer

SUITE = Path(__file__).parent / "confd_suite"
CASES = sorted(str(p.parent.relative_to(SUITE)) for p in SUITE.rglob("input.yaml"))
FILES = ("bird.cfg", "bird6.cfg", "bird_ipam.cfg", "bird6_ipam.cfg", "bird_aggr.cfg", "bird6_aggr.cfg")

# Calico's harness (standardBlockAffinities): (CIDR, host, state); "" is "implicitly confirmed".
AFFINITIES = [("10.0.0.0/30", "kube-master", ""), ("10.1.0.0/24", "kube-master", ""),
              ("10.2.0.1/32", "kube-master", ""), ("192.168.221.192/26", "kube-master", ""),
              ("192.168.221.64/26", "kube-master", "confirmed"), ("192.168.221.0/26", "kube-master", "pending")]

# Calico's BIRD fork programs IPIP routes with krt_tunnel; stock BIRD 1.6 cannot, so Felix does (see above).
KRT_TUNNEL = re.compile(r"^if \(net ~ (\S+)\) then \{ (?:krt_tunnel=\"tunl0\";|if \(defined\(bgp_next_hop\)&&"
                        r"\(bgp_next_hop ~ \S+\)\) then krt_tunnel=\"\"; else krt_tunnel=\"tunl0\";) accept; \}$")

# Cases that do not render identically yet, with what is missing (strict: a fix must remove its line).
# CONFD_SUITE_ALL=1 runs every case as a plain test, to see where each one stands.
NOT_YET: dict[str, str] = {}


TUNNEL_EXPORT = 'if ((ifname ~ "*.cali") || (ifname ~ "*.calico")) then {'
FELIX_TUNNEL_EXPORT = 'if ((ifname ~ "*.cali") || (ifname ~ "*.calico") || (ifname ~ "tunl0")) then {'


def expected(case: str, name: str) -> list[str]:
    """Calico's statements for ``name``, with the krt_tunnel substitution (see above)."""
    krt_tunnel = "krt_tunnel" in (SUITE / case / "bird_ipam.cfg").read_text()
    out = []
    for line in (SUITE / case / name).read_text().splitlines():
        m = KRT_TUNNEL.match(line)
        if m:
            line = f"if (net ~ {m.group(1)}) then {{ reject; }}"
        elif krt_tunnel and line == TUNNEL_EXPORT:
            line = FELIX_TUNNEL_EXPORT
        out.append(line)
    return out


async def seed_affinities(endpoint: str) -> None:
    """The raw v2 IPAM affinity keys Calico's harness writes (model.BlockAffinity's JSON)."""
    host, port = endpoint.rsplit("//", 1)[-1].rsplit(":", 1)
    async with aetcd.Client(host=host, port=int(port)) as client:
        for cidr, node, state in AFFINITIES:
            v = 6 if ":" in cidr else 4
            key = f"/calico/ipam/v2/host/{node}/ipv{v}/block/{cidr.replace('/', '-')}"
            await client.put(key.encode(), f'{{"state":"{state}","deleted":false}}'.encode())


def node_of(case: str) -> str:
    path = SUITE / case / "node"
    return path.read_text().strip() if path.exists() else "kube-master"


def env_of(case: str) -> dict[str, str]:
    path = SUITE / case / "env"
    return dict(line.split("=", 1) for line in path.read_text().splitlines()) if path.exists() else {}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xfail(reason=NOT_YET[c], strict=True))
                                  if c in NOT_YET and not os.environ.get("CONFD_SUITE_ALL") else c
                                  for c in CASES])
def test_confd_renders_calicos_suite_case_as_calicos_confd_does(
        case: str, etcd: EtcdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    node = node_of(case)
    for k, v in {"ETCD_ENDPOINTS": etcd.endpoint, "DATASTORE_TYPE": "etcdv3", "NODENAME": node,
                 **env_of(case)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CALICO_ROUTER_ID", raising=False) if "CALICO_ROUTER_ID" not in env_of(case) else None
    monkeypatch.setattr(confd_main.runner, "setup_logging", lambda level: None)   # keep pytest's log capture
    if not (SUITE / case / "no-affinities").exists():
        asyncio.run(seed_affinities(etcd.endpoint))
    assert calicoctl.main(["create", "-f", str(SUITE / case / "input.yaml")]) == 0, capsys.readouterr()
    assert confd_main.main(["-onetime", "-confdir", str(tmp_path), "--nodename", node,
                            "--bird-socket", str(tmp_path / "no-bird.ctl")]) == 0, capsys.readouterr().err
    config = tmp_path / "config"
    diffs = []
    for name in FILES:
        assert (config / name).exists(), f"{name} was not written"
        want, got = expected(case, name), statements((config / name).read_text())
        if want != got:
            diffs.append("\n".join(difflib.unified_diff(want, got, f"calico/{case}/{name}", f"ours/{name}",
                                                        lineterm="")))
    assert not diffs, "\n".join(diffs)
    for cmd, name in (("bird", "bird.cfg"), ("bird6", "bird6.cfg")):
        r = subprocess.run([cmd, "-p", "-c", str(config / name)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{cmd} -p refused {name}: {r.stderr}"
