"""Network namespaces for the lab and the tests: unique names, always removed, processes in them killed.

Every namespace a test makes is its own; nothing is ever connected to the host's
interfaces (the network safety rule). ``Namespaces`` removes them on exit,
failure included, after killing whatever still runs inside.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
from collections.abc import Mapping
from types import TracebackType

# Deadlines stretch by this factor where everything runs slower, as in the emulated VM of
# lab.vm (which sets it); they are limits on waiting for a condition, never expectations.
TIMEOUT_SCALE = float(os.environ.get("PYCALICO_TIMEOUT_SCALE", "1"))


def remove(name: str) -> None:
    """Kill whatever still runs in namespace ``name``, then delete it (its links go with it)."""
    inside = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in inside:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Namespaces:
    def __init__(self, tag: str) -> None:
        self.prefix = f"pc{os.getpid() % 100000}{tag}"
        self.names: list[str] = []

    def add(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.names.append(name)
        self.run(name, "ip", "link", "set", "lo", "up")
        return name

    def run(self, ns: str, *cmd: str, env: Mapping[str, str] | None = None, stdin: str | bytes | None = None,
            check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        data = stdin.decode() if isinstance(stdin, bytes) else stdin
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], env=dict(env) if env is not None else None,
                              input=data, capture_output=True, text=True, check=check,
                              timeout=timeout * TIMEOUT_SCALE)

    def link(self, a: str, a_if: str, a_ip: str, b: str, b_if: str, b_ip: str) -> None:
        """A veth between two of our namespaces, addressed and up."""
        subprocess.run(["ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b],
                       check=True)
        for ns, ifname, ip in ((a, a_if, a_ip), (b, b_if, b_ip)):
            self.run(ns, "ip", "addr", "add", ip, "dev", ifname)
            self.run(ns, "ip", "link", "set", ifname, "up")

    def cleanup(self) -> None:
        for name in reversed(self.names):
            remove(name)
        self.names.clear()

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()


@functools.cache
def kernel_supports(kind: str) -> bool:
    """Whether this kernel can make a link of ``kind`` (ipip, veth...), tried in a throwaway namespace.

    Asked once per process and kind: the answer does not change while we run, and the
    lab, the demo and the test tier each ask before they start.
    """
    name = f"pcprobe{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # A bare ipip link would clash with tunl0, which loading the module makes in every
        # namespace ("File exists"): give it a remote (a documentation address; nothing is sent).
        extra = ["remote", "192.0.2.1"] if kind == "ipip" else []
        r = subprocess.run(["ip", "netns", "exec", name, "ip", "link", "add", "probe0", "type", kind, *extra],
                           capture_output=True)
        return r.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
