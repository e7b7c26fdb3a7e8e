"""Keep one process running, as a Deployment's kubelet keeps its container: restart it when it exits.

The lab runs Typha in its underlay the way a cluster runs the ``calico-typha``
Deployment: if Typha exits, for any reason, it comes back, and Felix and confd
reconnect and resync. ``calico-lab up`` exits once the lab is made, so the
restarting is done by this small process, which the lab starts (and records)
in Typha's place::

    python3 -m lab.supervise --state DIR/typha.json -- calico-typha

The child runs in the supervisor's process group, so the lab's ``down``
(``killpg``) stops both. After a child exits the supervisor waits, as the
kubelet's CrashLoopBackOff does but with a lab's scale: 1 s, doubling to at
most 10 s, back to 1 s after a child that ran for 30 s. The state file holds
the child's pid, how many times it was restarted and why the last one ended,
for ``calico-lab status`` and the tests. SIGTERM (or SIGINT) stops the child
and the supervisor, with no restart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INITIAL_BACKOFF, MAX_BACKOFF, RESET_AFTER = 1.0, 10.0, 30.0


def read_state(path: Path) -> dict[str, Any]:
    """The supervisor's record (``pid``, ``restarts``, ``last_exit``); empty when there is none yet."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(path: Path, **state: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def run(cmd: Sequence[str], state: Path) -> int:
    """Run ``cmd`` until asked to stop, restarting it whenever it exits; 0 when stopped by a signal."""
    stop = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def on_signal(sig: int, _frame: object) -> None:
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    restarts, backoff, last_exit = 0, INITIAL_BACKOFF, ""
    while not stop.is_set():
        started = time.monotonic()
        try:
            child = subprocess.Popen(list(cmd))
        except OSError as exc:
            print(f"supervise: cannot start {cmd[0]}: {exc}", file=sys.stderr, flush=True)
            return 1
        _write_state(state, pid=child.pid, restarts=restarts, last_exit=last_exit)
        code = child.wait()
        if stop.is_set():
            break
        last_exit = f"exit code {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"
        if time.monotonic() - started >= RESET_AFTER:
            backoff = INITIAL_BACKOFF
        print(f"supervise: {cmd[0]} (pid {child.pid}) ended ({last_exit}); restarting in {backoff:g}s",
              file=sys.stderr, flush=True)
        _write_state(state, pid=0, restarts=restarts, last_exit=last_exit)
        if stop.wait(backoff):
            break
        backoff = min(backoff * 2, MAX_BACKOFF)
        restarts += 1
    if child is not None and child.poll() is None:
        child.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lab.supervise", description=__doc__.split("\n")[0])
    p.add_argument("--state", type=Path, required=True, help="where to record the child's pid and restarts")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command to keep running")
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("give the command to keep running after --")
    return run(cmd, args.state)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
