"""lab.supervise: what a Deployment does for Typha in the lab (restart on exit), without namespaces; and the
lab's refusals that come before anything is made."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab import supervise
from lab.cluster import Lab, LabError


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return got


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_the_supervisor_restarts_its_child_when_it_dies_and_stops_both_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "typha.json"
    sup = subprocess.Popen([sys.executable, "-m", "lab.supervise", "--state", str(state), "--", "sleep", "600"],
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        first = wait_for(lambda: supervise.read_state(state).get("pid"), "the first child")
        assert supervise.read_state(state)["restarts"] == 0
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (p := supervise.read_state(state).get("pid")) not in (None, 0, first) and p,
                          "the restarted child")
        now = supervise.read_state(state)
        assert now["restarts"] == 1 and now["last_exit"] == "killed by SIGKILL" and alive(second)
        os.killpg(sup.pid, signal.SIGTERM)  # as the lab's down does
        assert sup.wait(10) == 0
        assert not alive(second)
        log = sup.stderr.read() if sup.stderr else ""
        assert f"sleep (pid {first}) ended (killed by SIGKILL); restarting in 1s" in log
    finally:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGKILL)
            sup.wait(10)


def test_the_supervisor_refuses_to_start_without_a_command(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "lab.supervise", "--state", str(tmp_path / "s.json")],
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "give the command to keep running after --" in r.stderr
    assert not (tmp_path / "s.json").exists()


def test_kube_controllers_on_an_etcd_lab_is_refused_by_name_and_nothing_is_made(tmp_path: Path) -> None:
    lab = Lab(tmp_path, "kcc")
    with pytest.raises(LabError, match="--kube-controllers needs --datastore kubernetes"):
        lab.up(2, datastore="etcd", kube_controllers=True)
    assert not lab.exists and lab.state.namespaces == [] and lab.state.pids == {}
