"""A fork server for CNI plugin runs: import once, fork one real invocation per request.

    python -m tests.cni.cni_forkserver

A CNI plugin process spends most of its first second importing Python. A
fault test that kills hundreds of plugins at random points would mostly kill
imports; this server imports :mod:`cni.main` once and forks a child per
request, so each child is one invocation from its first datastore read: the
CNI_* environment and network config of the request, stdin from a file, its
stdout (the CNI result or error object) to a file, ``ipam_main()`` or
``calico_main()``, exit with its code. The parent may SIGKILL a child at any
moment; the child stays a zombie until the parent asks for its status, so its
pid cannot be reused and killed by mistake.

Protocol, one JSON object per line: ``{"run": {"plugin", "env", "stdin",
"stdout"}}`` answers ``{"pid": N}``; ``{"wait": N}`` answers ``{"status": S}``
(the exit code, or minus the signal number). The server never creates a gRPC
channel or an event loop itself, so forking is safe.
"""

from __future__ import annotations

import json
import os
import sys

from cni import main as cni_main


def child(plugin: str, env: dict[str, str], stdin: str, stdout: str) -> None:
    try:
        os.environ.clear()
        os.environ.update(env)
        fd = os.open(stdin, os.O_RDONLY)
        os.dup2(fd, 0)
        fd = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        sys.stdin = open(0, "r", closefd=False)  # noqa: SIM115 - fresh objects on the new fds
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        rc = cni_main.calico_main() if plugin == "calico" else cni_main.ipam_main()
        sys.stdout.flush()
    except BaseException:  # noqa: BLE001 - a child never returns into the server's loop
        rc = 99
    os._exit(rc)


def serve() -> None:
    for line in sys.stdin:
        req = json.loads(line)
        if "run" in req:
            r = req["run"]
            pid = os.fork()
            if pid == 0:
                child(r["plugin"], r["env"], r["stdin"], r["stdout"])
            reply: dict[str, int] = {"pid": pid}
        else:
            _, status = os.waitpid(req["wait"], 0)
            reply = {"status": os.waitstatus_to_exitcode(status)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
