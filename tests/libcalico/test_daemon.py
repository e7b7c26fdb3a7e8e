"""The one supervised daemon runner (issue 18, item 5): no daemon runs on half-alive.

Any root task that ends stops the daemon (exit 1, the root named in the log);
a signal stops it cleanly (exit 0); shutdown is bounded; cleanups always run;
health says why it is not ready. Also calico-confd as a process under it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lab.cluster import wait_until
from libcalico.daemon import Daemon, Health, log_level
from tests.etcd_server import free_port


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_root_that_fails_stops_every_other_root_and_the_daemon_exits_1(
        caplog: pytest.LogCaptureFixture) -> None:
    d = Daemon("test")
    order: list[str] = []
    other_cancelled = asyncio.Event()

    async def fails() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    async def other() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            other_cancelled.set()
            raise

    async def close(what: str) -> None:
        order.append(what)

    d.root("render", fails)
    d.root("syncer", other)
    d.cleanup("first", lambda: close("first"))
    d.cleanup("second", lambda: close("second"))
    with caplog.at_level(logging.ERROR):
        assert await d.run() == 1
    assert other_cancelled.is_set()
    assert order == ["second", "first"]  # last added, first run
    assert "render failed: RuntimeError: boom" in d.stop_reason
    assert any("render failed" in r.getMessage() for r in caplog.records)


async def test_a_root_that_returns_stops_the_daemon_too() -> None:
    d = Daemon("test")

    async def returns() -> None:
        return None

    d.root("loop", returns)
    d.root("other", forever)
    assert await d.run() == 1
    assert d.stop_reason == "loop ended"


async def test_a_signal_stops_it_cleanly_and_a_stubborn_root_is_waited_for_only_so_long() -> None:
    d = Daemon("test", graceful_timeout=0.3)
    cleaned = asyncio.Event()

    async def stubborn() -> None:
        while True:
            try:
                await forever()
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # ignores the cancellation and goes on: a bug in a root

    async def cleanup() -> None:
        cleaned.set()

    d.root("stubborn", stubborn)
    d.cleanup("datastore", cleanup)
    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    started = time.monotonic()
    assert await d.run() == 0
    assert d.stop_reason == "SIGTERM" and cleaned.is_set()
    assert time.monotonic() - started < 30  # bounded: it returned at all, with the root still running
    for t in asyncio.all_tasks():
        if t.get_name() == "test:stubborn":
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t  # stops at last: cancelled while in its own sleep, outside the loop's except


def test_health_is_ready_only_when_every_reporter_is_and_a_silent_one_goes_stale() -> None:
    now = [0.0]
    h = Health(clock=lambda: now[0])
    h.register("int_dataplane")
    h.register("watchdog", timeout=10)
    assert h.ready() == (False, ["int_dataplane: not ready", "watchdog: not ready"])
    h.report("int_dataplane", ready=True)
    h.report("watchdog", ready=True)
    assert h.ready() == (True, []) and h.live() == (True, [])
    now[0] = 11
    assert h.live() == (False, ["watchdog: no report within 10s"])
    h.report("watchdog", ready=False, detail="datastore wait-for-ready")
    assert h.ready() == (False, ["watchdog: datastore wait-for-ready"]) and h.live()[0]


async def test_health_answers_over_http_as_calicos_aggregator_does() -> None:
    d = Daemon("test")
    port = free_port()
    d.serve_health("127.0.0.1", port)
    d.health.report("int_dataplane", ready=False, detail="IPIP needs the ipip module")
    answers: dict[str, tuple[str, str]] = {}

    async def ask() -> None:
        for path in ("/liveness", "/readiness", "/nothing"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = (await reader.read()).decode()
            writer.close()
            answers[path] = (data.split("\r\n")[0], data.split("\r\n\r\n", 1)[1])
        d.stop()

    d.root("ask", ask)
    await d.run()
    assert answers["/liveness"] == ("HTTP/1.1 204 No Content", "")
    assert answers["/readiness"] == ("HTTP/1.1 503 Service Unavailable", "int_dataplane: IPIP needs the ipip module")
    assert answers["/nothing"][0] == "HTTP/1.1 404 Not Found"


def test_calicos_log_levels_are_read_and_a_wrong_one_is_named() -> None:
    assert log_level("Info") == logging.INFO and log_level("WARNING") == logging.WARNING
    assert log_level("fatal") == logging.CRITICAL
    with pytest.raises(ValueError, match="'loud'"):
        log_level("loud")


def test_calico_confd_stops_on_sigterm_with_exit_0(etcd_env: dict[str, str], tmp_path: Path) -> None:
    health = free_port()
    proc = subprocess.Popen(["calico-confd", "-confdir", str(tmp_path), "--nodename", "node1",
                             "--bird-socket", str(tmp_path / "none.ctl"), "--health-port", str(health)],
                            env=etcd_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import urllib.error
        import urllib.request

        def answers() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{health}/liveness", timeout=2)
                return True
            except (urllib.error.URLError, OSError):
                return False

        wait_until(answers, "confd's health to answer", 30)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "received SIGTERM" in out and "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_pulled_check_makes_the_daemon_unready_with_its_problems() -> None:
    h = Health()
    problems = ["render failed: BIRD refused the config"]
    h.check("confd", lambda: list(problems))
    assert h.ready() == (False, ["confd: render failed: BIRD refused the config"]) and h.live() == (True, [])
    problems.clear()
    assert h.ready() == (True, [])
