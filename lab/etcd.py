"""A real etcd (Debian's etcd-server): free ports, a temp dir, optionally inside a network namespace.

Started and stopped by the fixtures in conftest.py; never shared with anything
outside the test run. ``wait_healthy`` polls /health with a deadline instead of
sleeping a fixed time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from lab.netns import TIMEOUT_SCALE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdServer:
    def __init__(self, *, client_port: int | None = None, extra_args: list[str] | None = None,
                 netns: str = "", host: str = "127.0.0.1", die_with_parent: bool = False) -> None:
        self.binary = shutil.which("etcd") or "/usr/bin/etcd"
        self.client_port = client_port or free_port()
        self.peer_port = free_port()
        self.dir = tempfile.mkdtemp(prefix="pycalico-etcd-")
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.scheme = "http"
        self.netns = netns  # run inside this network namespace (its own 127.0.0.1)
        self.host = host
        # A test run's etcd dies with the thread that started it (setpriv --pdeathsig), so a killed
        # pytest leaks no etcd. Only from a thread that outlives the server: the signal fires when
        # that thread exits, not the process.
        self.die_with_parent = die_with_parent

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    def start(self, timeout: float = 20.0) -> None:
        args = [
            self.binary,
            "--name", "pycalico-test",
            "--data-dir", os.path.join(self.dir, "data"),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", f"http://{self.host}:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://{self.host}:{self.peer_port}",
            "--initial-cluster", f"pycalico-test=http://{self.host}:{self.peer_port}",
            "--log-level", "error",
            *self.extra_args,
        ]
        self.log = open(os.path.join(self.dir, "etcd.log"), "ab")  # a restart on the same dir keeps the log
        if self.netns:
            args = ["ip", "netns", "exec", self.netns, *args]
        if self.die_with_parent and shutil.which("setpriv"):
            args = ["setpriv", "--pdeathsig", "KILL", *args]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        timeout *= TIMEOUT_SCALE  # under emulation (the VM tier) etcdctl alone can take seconds to start
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited early; see {self.dir}/etcd.log")
            if self.netns:
                try:
                    r = subprocess.run(["ip", "netns", "exec", self.netns, "etcdctl", f"--endpoints={self.endpoint}",
                                        "endpoint", "health"], capture_output=True, text=True,
                                       env={**os.environ, "ETCDCTL_API": "3"},
                                       timeout=max(1.0, min(10 * TIMEOUT_SCALE, deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    continue  # a slow answer is not yet an answer; the deadline decides
                if r.returncode == 0:
                    return
                time.sleep(0.1)
                continue
            try:
                with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.2):
                    pass
                if self.scheme == "https":
                    return
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=0.5) as resp:
                    if b'"health":"true"' in resp.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"etcd did not become healthy within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if hasattr(self, "log"):
            self.log.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
