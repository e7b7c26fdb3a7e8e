"""``calicoctl node status``: is Calico running here, and how are this node's BGP sessions.

As Calico's command does: "Calico process is running." when a Felix runs (here:
in this network namespace, which is what "here" means in a cluster of
namespaces), then for BIRD the IPv4 (and, with ``bird6``, IPv6) peer tables
read from BIRD's control socket with ``show protocols``: peer address and type
from the protocol name (``Mesh_`` node-to-node mesh, ``Node_`` node specific,
``Global_`` global), state, since and info. The socket is Calico's
``/var/run/calico/bird.ctl`` (then ``/var/run/bird/bird.ctl``), or
``CALICO_BIRD_SOCKET`` when set (namespaces on one host share /var/run).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable
from typing import TextIO

from calicoctl import printing

PEER_TYPES = {"Mesh": "node-to-node mesh", "Node": "node specific", "Global": "global"}
_PEER = re.compile(r"^(Global|Node|Mesh)_(.+)$")
HEADINGS = ["name", "proto", "table", "state", "since", "info"]


class NodeStatusError(Exception):
    pass


def _my_netns() -> str:
    return os.readlink("/proc/self/ns/net")


def _processes() -> Iterable[tuple[list[str], str]]:
    """(argv, network namespace) of every process we can read."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            netns = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if argv:
            yield argv, netns


def _running(names: set[str], procs: list[tuple[list[str], str]], netns: str) -> bool:
    for argv, ns in procs:
        if ns != netns:
            continue
        if any(os.path.basename(a) in names for a in argv[:2]):
            return True
    return False


def parse_protocols(text: str, sep: str = ".") -> list[list[str]]:
    """Rows (address, type, state, since, info) from BIRD's ``show protocols`` reply."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("0000"):
            break
        if line.startswith("0001") or not line.strip():
            continue
        if line.startswith("2002"):
            if line[5:].split() != HEADINGS:
                raise NodeStatusError("unknown BIRD table output format")
            continue
        if line.startswith("1002"):
            body = line[5:]
        elif line.startswith(" "):
            body = line[1:]
        else:
            raise NodeStatusError("unexpected output line from BIRD")
        cols = body.split()
        if len(cols) < 6 or cols[1] != "BGP":
            continue
        m = _PEER.match(cols[0])
        if not m:
            continue
        info = cols[5] + ("" if len(cols) == 6 else " " + " ".join(cols[6:]))
        rows.append([m.group(2).replace("_", sep), PEER_TYPES[m.group(1)], cols[3], cols[4], info])
    return rows


def _query(path: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(path)
        s.sendall(b"show protocols\n")
        data = b""
        while not data.endswith(b"0000 \n") and b"\n0000" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


def _peers(ipv: str, out: TextIO) -> None:
    suffix = "6" if ipv == "6" else ""
    out.write(f"\nIPv{ipv} BGP status\n")
    candidates = [os.environ["CALICO_BIRD_SOCKET"]] if os.environ.get("CALICO_BIRD_SOCKET") and not suffix else []
    candidates += [f"/var/run/calico/bird{suffix}.ctl", f"/var/run/bird/bird{suffix}.ctl"]
    reply, last_error = None, ""
    for path in candidates:
        try:
            reply = _query(path)
            break
        except OSError as exc:
            last_error = str(exc)
    if reply is None:
        out.write(f"Error querying BIRD: unable to connect to BIRDv{ipv} socket: {last_error}")
        return
    rows = parse_protocols(reply, ":" if ipv == "6" else ".")
    if not rows:
        out.write(f"No IPv{ipv} peers found.\n")
        return
    out.write(printing.box_table(["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"], rows))


def status(out: TextIO) -> None:
    procs = list(_processes())
    netns = _my_netns()
    if not _running({"calico-felix"}, procs, netns):
        raise NodeStatusError("Calico process is not running.")
    out.write("Calico process is running.\n")
    bird4, bird6 = _running({"bird"}, procs, netns), _running({"bird6"}, procs, netns)
    if bird4 or bird6:
        if bird4:
            _peers("4", out)
        else:
            out.write("\nINFO: BIRDv4 process: 'bird' is not running.\n")
        if bird6:
            _peers("6", out)
        else:
            out.write("\nIPv6 BGP status\nNo IPv6 peers found.\n")
    else:
        out.write("\nThe BGP backend process (BIRD) is not running.\n")
    out.write("\n")
