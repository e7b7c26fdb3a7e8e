"""The ``kernel_vm`` tier: tests that need a kernel module this host lacks run in a VM, for real.

A test marked ``@pytest.mark.kernel_vm("ipip")`` runs directly where the
kernel can make an ``ipip`` link. Where it cannot, the test is not skipped:
after collection, every selected test of the tier is swapped for a
:class:`VMItem` with the same node id, and the first of them to run boots one
VM (:mod:`lab.vm`: Debian's kernel, this filesystem) that runs all of them with
pytest, this plugin recording each report to a JSON file that writes through
to the host. Each ``VMItem`` then passes, fails with the VM's own traceback, or
skips with the VM's reason. One boot for the whole tier, since under emulation
a boot costs tens of seconds.

The VM boots as soon as collection ends and runs alongside the host's tests
(their reports come last); ``PYCALICO_VM_SERIAL=1`` runs it in its turn instead.

``pytest -m kernel_vm`` runs just the tier; ``-m "not kernel_vm"`` leaves it out.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from lab import vm
from lab.netns import kernel_supports

IN_VM = vm.IN_VM                  # set inside the VM: run the tests directly
REPORT = "PYCALICO_VM_REPORT"     # where the VM's pytest writes its reports
SERIAL = "PYCALICO_VM_SERIAL"     # set: the VM runs when its first test comes up, not alongside the rest
REPO = Path(__file__).resolve().parent.parent


def _host_has(module: str) -> bool:
    return os.geteuid() == 0 and kernel_supports(module)  # kernel_supports asks the kernel once


def _module(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("kernel_vm")
    return str(mark.args[0]) if mark is not None and mark.args else None


class VMTestFailed(Exception):
    """The test failed inside the VM; the message is the VM's own report."""


class VMItem(pytest.Item):
    """Stands for a test that ran in the VM: reports the outcome it had there."""

    def __init__(self, *, original: pytest.Item, module: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.original = original
        self.module_name = module
        self.own_markers = list(original.own_markers)
        self.keywords.update(original.keywords)

    def runtest(self) -> None:
        if os.geteuid() != 0:
            pytest.skip("needs root for network namespaces")
        tier: VMTier = self.config.stash[TIER]
        result = tier.result(self.nodeid)
        outcome = result.get("outcome")
        if outcome == "passed":
            return
        if outcome == "skipped":
            pytest.skip(f"(in the VM) {result.get('reason', '')}")
        raise VMTestFailed(result.get("longrepr") or "no report")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, VMTestFailed):
            return f"[ran in {self.config.stash[TIER].where}]\n{excinfo.value}"
        return str(excinfo.getrepr(style="short"))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.original.reportinfo()


class VMTier:
    """Runs the selected tier's tests in one VM, once, and holds their reports."""

    def __init__(self, module: str, nodeids: list[str]) -> None:
        self.module = module
        self.nodeids = nodeids
        self.where = "a VM"
        self.seconds = 0.0
        self._results: dict[str, dict[str, str]] | None = None
        self._error = ""
        self.output = ""
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Boot the VM now, in the background: the tier's tests then run in the VM while the host
        runs the rest of the suite (the host's suite keeps about one core busy; the VM fills the
        other), and each ``VMItem`` waits for the VM's reports."""
        self._thread = threading.Thread(target=self._run, name="kernel_vm tier", daemon=True)
        self._thread.start()

    def result(self, nodeid: str) -> dict[str, str]:
        if self._thread is not None:
            self._thread.join()
        elif self._results is None:
            self._run()
        if self._error:
            raise VMTestFailed(self._error)
        assert self._results is not None
        if nodeid not in self._results:
            raise VMTestFailed(f"the VM's pytest did not report {nodeid}")
        return self._results[nodeid]

    def _run(self) -> None:
        self._results = {}
        reason = vm.unavailable(self.module)
        if reason:
            self._results = {n: {"outcome": "skipped", "reason": reason} for n in self.nodeids}
            return
        with tempfile.TemporaryDirectory(prefix="pycalico-vm-") as d:
            out = Path(d)
            report = out / "reports.json"
            args = " ".join(f"'{n}'" for n in self.nodeids)
            # The tests' temporary directories stay in the VM's /tmp (BIRD's control socket cannot
            # live on the 9p share); with $PYCALICO_VM_BASETEMP set, their logs are copied out to it
            # every few seconds, to follow a slow run from the host.
            basetemp = "/tmp/pycalico-vm-basetemp"
            follow = os.environ.get("PYCALICO_VM_BASETEMP", "")
            script = (f"{vm.python()} -m pytest -p no:cacheprovider -v -ra --durations=5 "
                      f"--basetemp {basetemp} {args}")
            rwdirs = [out]
            if follow:
                Path(follow).mkdir(parents=True, exist_ok=True)
                rwdirs.append(Path(follow))
                script = (f"(while sleep 5; do cd {basetemp} 2>/dev/null || continue; "
                          f"for s in $(find . -name '*.ctl' -type s); do birdc -s $s show route all > $s.routes 2>&1; "
                          f"birdc -s $s show protocols all > $s.protocols 2>&1; done; "
                          f"find . -type f -size -2M -exec cp --parents {{}} {follow}/ \\; ; cd /; done) &\n{script}")
            try:
                r = vm.run(script, module=self.module, rwdirs=rwdirs, cwd=REPO,
                           env={IN_VM: "1", REPORT: str(report)}, timeout=2700)
            except RuntimeError as e:
                self._error = str(e)
                return
            self.where = vm.describe(r)
            self.seconds = r.seconds
            self.output = r.output
            if report.exists():
                for line in report.read_text().splitlines():
                    rec = json.loads(line)
                    prev = self._results.get(rec["nodeid"])
                    # The call phase decides, unless setup or teardown failed or skipped.
                    if prev is None or prev["outcome"] == "passed":
                        self._results[rec["nodeid"]] = rec
            missing = [n for n in self.nodeids if n not in self._results]
            if missing:
                self._error = (f"the VM (exit {r.returncode}) reported nothing for {', '.join(missing)}; "
                               f"its output ends:\n{r.output[-4000:]}")


TIER = pytest.StashKey[VMTier]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(IN_VM):
        return
    for i, item in enumerate(items):
        module = _module(item)
        if module and os.geteuid() == 0 and not _host_has(module):
            assert item.parent is not None
            items[i] = VMItem.from_parent(item.parent, name=item.name, original=item, module=module)
    if not os.environ.get(SERIAL):  # the VM's tests report last, so that the host's never wait for the VM
        items[:] = [i for i in items if not isinstance(i, VMItem)] + [i for i in items if isinstance(i, VMItem)]


def pytest_collection_finish(session: pytest.Session) -> None:
    chosen = [i for i in session.items if isinstance(i, VMItem)]
    if chosen:
        modules = {i.module_name for i in chosen}
        assert len(modules) == 1, f"one VM per run: the tier needs one module, not {sorted(modules)}"
        tier = session.config.stash[TIER] = VMTier(modules.pop(), [i.nodeid for i in chosen])
        if (len(chosen) < len(session.items) and not os.environ.get(SERIAL) and os.geteuid() == 0
                and not session.config.option.collectonly):
            tier.start()  # alongside the host's tests; alone, the first VMItem runs it


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = os.environ.get(REPORT)
    if not path:
        return
    if report.when != "call" and report.outcome == "passed":
        return
    rec = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome}
    if report.skipped and isinstance(report.longrepr, tuple):
        rec["reason"] = str(report.longrepr[2])
    elif report.failed:
        rec["longrepr"] = report.longreprtext
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    tier = config.stash.get(TIER, None)
    if tier is not None and tier.seconds:
        terminalreporter.section("kernel_vm tier")
        tail = tier.output[tier.output.rfind("slowest"):] if "slowest" in tier.output else tier.output[-1500:]
        for line in tail.strip().splitlines():
            terminalreporter.write_line(f"(VM) {line}")
        terminalreporter.write_line(
            f"{len(tier.nodeids)} tests needing {tier.module} ran in {tier.where}: {tier.seconds:.0f} s, boot included")
