"""calicoctl node status: the process check and the parsing of BIRD's protocol table."""

from __future__ import annotations

import subprocess

import pytest

from calicoctl.node import NodeStatusError, parse_protocols

SAMPLE = """0001 BIRD 1.6.8 ready.
2002-name     proto    table    state  since       info
1002-kernel1  Kernel   master   up     04:01:17
 device1  Device   master   up     04:01:17
 direct1  Direct   master   up     04:01:17
 Mesh_192_168_3_144 BGP      master   up     04:01:17    Established
 Node_192_168_3_145 BGP      master   start  12:12:55    Active        Socket: Connection refused
 Global_10_0_0_1 BGP      master   up     04:01:17    Established
 static1  Static   master   up     04:01:17
0000
"""


def test_bird_rows_become_calicos_peer_rows() -> None:
    assert parse_protocols(SAMPLE) == [
        ["192.168.3.144", "node-to-node mesh", "up", "04:01:17", "Established"],
        ["192.168.3.145", "node specific", "start", "12:12:55", "Active Socket: Connection refused"],
        ["10.0.0.1", "global", "up", "04:01:17", "Established"]]


def test_an_unknown_table_format_is_an_error() -> None:
    with pytest.raises(NodeStatusError, match="unknown BIRD table output format"):
        parse_protocols("0001 BIRD ready.\n2002-name proto\n0000\n")


def test_without_felix_in_this_namespace_calico_is_not_running() -> None:
    r = subprocess.run(["calicoctl", "node", "status"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stderr == "Calico process is not running.\n"
