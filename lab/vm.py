"""A kernel that has what this one lacks: run a command in a virtme-ng VM on Debian's kernel.

Why: the seed's main demo is IPIP through ``tunl0``, and a host kernel without
the ``ipip`` module can only skip it. Rather than fake the tunnel, the lab and
the tests run the same code inside a small VM: virtme-ng (``vng``) boots
Debian's kernel (package ``linux-image-amd64``, ipip as a module) with this
machine's own filesystem as its read-only root, so the checkout, Python, etcd,
BIRD and nft inside are the host's very files; ``/tmp``, ``/etc``, ``/var`` are
writable but thrown away, and the directories given as ``rwdirs`` write through
to the host, which is how results come back.

The VM has no network device at all (virtme-ng adds none unless asked), so
whatever runs inside reaches only its own namespaces: the network safety rule
holds there by construction. Without hardware virtualisation it runs under
emulation, several times slower than the host; ``PYCALICO_VM_KVM=1`` lets
qemu use KVM where it works.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MODULE_PATHS = {"ipip": "kernel/net/ipv4/ipip.ko"}
IN_VM = "PYCALICO_IN_VM"   # set for what runs inside: it is the kernel that has the module


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path


def _version_key(version: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", version)]


def find_kernel(module: str, boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> Kernel | None:
    """The newest installed kernel image whose modules include ``module``."""
    found: list[Kernel] = []
    for image in boot.glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        rel = MODULE_PATHS.get(module, "")
        if rel and any((modules / version).glob(rel + "*")):
            found.append(Kernel(version, image))
    return max(found, key=lambda k: _version_key(k.version), default=None)


def unavailable(module: str) -> str | None:
    """Why a VM with ``module`` cannot run here, or None when it can."""
    if shutil.which("vng") is None:
        return "virtme-ng is not installed (pip install virtme-ng): no VM to run the tests that need " + module
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu is not installed (apt-get install qemu-system-x86): no VM to run the tests that need " + module
    if find_kernel(module) is None:
        return (f"no kernel in /boot has the {module} module (apt-get install linux-image-amd64): "
                f"no VM to run the tests that need it")
    return None


@dataclass
class VMResult:
    returncode: int
    output: str
    seconds: float
    kernel: str
    emulated: bool


def run(script: str, *, module: str, cwd: Path, rwdirs: Sequence[Path] = (), env: Mapping[str, str] | None = None,
        progress: Callable[[str], None] | None = None, memory: str = "1G", cpus: int = 2,
        timeout: float = 3600) -> VMResult:
    """Run bash ``script`` as root in a VM whose kernel has ``module`` (loaded before the script).

    The script's output (stdout and stderr, merged) is returned, and handed line
    by line to ``progress`` while it runs. ``rwdirs`` are host directories the
    VM writes through to; ``env`` is exported inside, and PATH is the caller's,
    so the same commands are found.
    """
    reason = unavailable(module)
    if reason:
        raise RuntimeError(reason)
    kernel = find_kernel(module)
    assert kernel is not None
    emulated = os.environ.get("PYCALICO_VM_KVM") != "1"
    exports = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": "/root",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
               "PYCALICO_TIMEOUT_SCALE": "20" if emulated else "3", **(env or {})}
    cached = _cached_dirs(cwd)
    with tempfile.TemporaryDirectory(prefix="pycalico-vm-") as d:
        own = Path(d)
        log = own / "output.log"
        lines = ["#!/bin/bash", f"exec >{shlex.quote(str(log))} 2>&1",
                 *(f"export {k}={shlex.quote(v)}" for k, v in exports.items()),
                 *(f"mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,msize=512000,ro,access=any "
                   f"pc{i} {shlex.quote(c)}" for i, c in enumerate(cached)),
                 f"modprobe {shlex.quote(module)} || {{ echo 'modprobe {module} failed in the VM'; exit 97; }}",
                 "modprobe veth", "modprobe vxlan 2>/dev/null || true",
                 f"cd {shlex.quote(str(cwd))}", script, ""]
        entry = own / "script.sh"
        entry.write_text("\n".join(lines))
        entry.chmod(0o755)
        cmd = ["vng", "--run", str(kernel.image), "--force-9p", "--memory", memory, "--cpus", str(cpus),
               *(["--disable-kvm"] if emulated else []),
               *(a for w in (own, *rwdirs) for a in ("--rwdir", str(w))), "--cwd", str(cwd), "--exec", str(entry),
               *(f"--qemu-opts=-fsdev local,id=pc{i},path={c},security_model=none,readonly=on "
                 f"-device virtio-9p-pci,fsdev=pc{i},mount_tag=pc{i}" for i, c in enumerate(cached))]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        shown = 0
        try:
            while True:
                try:
                    console, _ = proc.communicate(timeout=1)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() - started > timeout:
                        raise RuntimeError(f"the VM did not finish within {timeout:.0f} s; its output ends: "
                                           + (log.read_text(errors="replace")[-3000:] if log.exists() else "(none)"))
                    if progress is not None and log.exists():
                        text = log.read_text(errors="replace")
                        done = text.rfind("\n") + 1
                        for line in text[shown:done].splitlines():
                            progress(line)
                        shown = max(shown, done)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        output = log.read_text(errors="replace") if log.exists() else ""
    if progress is not None:
        for line in output[shown:].splitlines():
            progress(line)
    if not output and proc.returncode != 0:
        output = console   # vng itself failed before the script ran
    return VMResult(proc.returncode, output, time.monotonic() - started, kernel.version, emulated)


def _cached_dirs(cwd: Path) -> list[str]:
    """Read-only trees to mount again with the guest's page cache on.

    virtme-ng's root is 9p without caching: every page of a shared library or
    Python extension is fetched again at each fault, which makes starting a
    process take seconds under emulation. The same trees, mounted a second time
    with ``cache=loose`` over themselves, are read once and then served from the
    guest's memory: ``/usr`` (the system's programs and libraries), this
    Python's prefix and the checkout. They never change while the VM runs.
    """
    dirs = ["/usr", sys.base_prefix, sys.prefix, str(cwd)]
    out: list[str] = []
    for d in dirs:
        if d not in out and not any(d.startswith(o.rstrip("/") + "/") for o in out) and Path(d).is_dir():
            out.append(d)
    return out


def describe(result: VMResult) -> str:
    how = "emulated, no KVM" if result.emulated else "KVM"
    return f"a virtme-ng VM on Debian's kernel {result.kernel} ({how})"


def python() -> str:
    """The interpreter to run inside: this one, found at the same path through the shared root."""
    return sys.executable
