"""Felix's bulk route socket and route table against a real kernel (in a throwaway namespace)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.netns import Namespaces

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

SCRIPT = r'''
import json
from felix.calc import Route
from felix.dataplane import rtnl
from felix.dataplane.routes import RouteTable, RouteError
out = {}
with rtnl.RouteSocket() as s:
    ops = [rtnl.RouteOp("replace", f"10.1.0.{i}/32", oif=IDX, scope=253) for i in range(1, 200)]
    out["refused"] = s.write(ops + [rtnl.RouteOp("replace", "10.2.0.0/24", oif=99999)])
    out["delete_missing"] = s.write([rtnl.RouteOp("delete", "10.3.0.0/24", proto=80)])
    out["dumped"] = sorted(r.dst for r in s.dump() if r.dst.startswith("10.1.0."))[:3]
t = RouteTable(("cali",))
desired = {"10.1.0.1/32": Route("10.1.0.1/32", "local", "calitest0"),
           "10.9.0.0/26": Route("10.9.0.0/26", "blackhole")}
out["first"] = vars(t.apply(desired))
out["again"] = vars(t.apply(desired))
out["missing_iface"] = vars(t.apply({**desired, "10.1.0.7/32": Route("10.1.0.7/32", "local", "calinope")}))
print(json.dumps(out))
'''


def test_bulk_writes_report_refusals_and_the_table_keeps_only_what_is_wanted() -> None:
    with Namespaces("rt") as ns:
        n = ns.add("n")
        ns.run(n, "ip", "link", "add", "calitest0", "type", "veth", "peer", "name", "peer0")
        ns.run(n, "ip", "link", "set", "calitest0", "up")
        ns.run(n, "ip", "link", "set", "peer0", "up")
        ns.run(n, "ip", "route", "add", "10.50.0.0/24", "dev", "peer0")  # foreign: must survive
        idx = ns.run(n, "cat", "/sys/class/net/calitest0/ifindex").stdout.strip()
        r = ns.run(n, sys.executable, "-c", SCRIPT.replace("IDX", idx), check=False,
                   env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert r.returncode == 0, r.stderr
        import json
        out = json.loads(r.stdout)
        assert out["refused"] == {"10.2.0.0/24": 19}  # ENODEV, named by its destination
        assert out["delete_missing"] == {}
        assert out["dumped"] == ["10.1.0.1/32", "10.1.0.10/32", "10.1.0.100/32"]
        # The 198 other cali routes (proto boot on a cali interface) were Felix's: removed.
        assert out["first"] == {"added": 1, "removed": 198, "pending": 0}  # 10.1.0.1 was already right
        assert out["again"] == {"added": 0, "removed": 0, "pending": 0}
        assert out["missing_iface"]["pending"] == 1
        routes = subprocess.run(["ip", "netns", "exec", n, "ip", "route"], capture_output=True, text=True).stdout
        assert "10.50.0.0/24 dev peer0" in routes and "blackhole 10.9.0.0/26 proto 80" in routes
