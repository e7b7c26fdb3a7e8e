"""Write BIRD's config safely: stage, check with ``bird -p -c``, swap atomically, reload.

Calico's confd never leaves a bad config in place (``confd/pkg/resource/template``).
The template list is data: each rendered file goes to the output directory. All
files are staged together in a directory beside the targets (``bird.cfg``
includes the others by relative name), the staged ``bird.cfg`` is checked by
BIRD itself, and only then is each file renamed over its target and BIRD told
to ``configure``. A check that fails leaves the old files, and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

MAIN = "bird.cfg"
MAIN6 = "bird6.cfg"


class CheckFailed(RuntimeError):
    """BIRD rejected the rendered configuration; the previous one is still in place."""


@dataclass(frozen=True)
class Commands:
    check: tuple[str, ...] = ("bird", "-p", "-c", "{src}")
    check6: tuple[str, ...] = ("bird6", "-p", "-c", "{src}")
    reload: tuple[str, ...] = ("birdc", "-s", "{socket}", "configure")
    socket: str = "/var/run/calico/bird.ctl"
    reload6: tuple[str, ...] = ("birdc6", "-s", "{socket}", "configure")
    socket6: str = "/var/run/calico/bird6.ctl"


def changed(files: dict[str, str], outdir: Path) -> list[str]:
    out = []
    for name, text in files.items():
        target = outdir / name
        if not target.exists() or target.read_text() != text:
            out.append(name)
    return out


def write(files: dict[str, str], outdir: Path, cmds: Commands = Commands()) -> list[str]:
    """Install ``files`` if they differ from what is there; return the names that changed."""
    outdir.mkdir(parents=True, exist_ok=True)
    diff = changed(files, outdir)
    if not diff:
        return []
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=outdir))
    try:
        for name, text in files.items():
            (stage / name).write_text(text)
        # BIRD and BIRD 6 check their configs side by side (each is a process of its own).
        checks = [[a.format(src=stage / main) for a in cmd]
                  for main, cmd in ((MAIN, cmds.check), (MAIN6, cmds.check6)) if main in files]
        # An absolute program path and close_fds=False let subprocess use posix_spawn, a few ms less per
        # check than fork+exec of this (large) process; Python's own descriptors are not inheritable anyway.
        running = [(check, subprocess.Popen([shutil.which(check[0]) or check[0], *check[1:]], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, close_fds=False))
                   for check in checks]
        failed = ""
        for check, proc in running:
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                err = err or "timed out after 60s"
            if proc.returncode != 0 and not failed:
                failed = f"{' '.join(check)} rejected the new config: {(err or out).strip()}"
        if failed:
            raise CheckFailed(failed)
        for name in files:
            os.replace(stage / name, outdir / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return diff


def reload(cmds: Commands = Commands(), v: int = 4) -> str:
    """Tell a running BIRD (``v`` 6: BIRD 6) to re-read its config; "" if done, else why not."""
    sock, cmd = (cmds.socket, cmds.reload) if v == 4 else (cmds.socket6, cmds.reload6)
    if not os.path.exists(sock):
        return f"BIRD{'6' if v == 6 else ''} is not running (no control socket at {sock})"
    r = subprocess.run([a.format(socket=sock) for a in cmd], capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or "Reconfigured" not in r.stdout and "Reconfiguration" not in r.stdout:
        return f"birdc configure failed: {(r.stdout + r.stderr).strip()}"
    return ""
