"""The VM tier's own pieces: finding a kernel that has the module, and the lab refusing what it cannot do."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lab import vm
from lab.netns import kernel_supports


def test_find_kernel_takes_the_newest_image_whose_modules_have_the_module(tmp_path: Path) -> None:
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    for version, has in (("6.1.0-9-amd64", True), ("6.1.0-56-amd64", True), ("6.12.0-1-amd64", False)):
        (boot / f"vmlinuz-{version}").write_text("")
        ipv4 = modules / version / "kernel" / "net" / "ipv4"
        ipv4.mkdir(parents=True)
        if has:
            (ipv4 / "ipip.ko.xz").write_text("")
    found = vm.find_kernel("ipip", boot, modules)
    assert found is not None and found.version == "6.1.0-56-amd64"  # 56 > 9 as numbers; 6.12 lacks ipip
    assert vm.find_kernel("ipip", boot, tmp_path / "none") is None
    assert vm.find_kernel("nosuchmodule", boot, modules) is None


def test_unavailable_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    reason = vm.unavailable("ipip")
    assert reason is not None and "pip install virtme-ng" in reason


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
@pytest.mark.skipif(os.geteuid() == 0 and kernel_supports("ipip"), reason="this kernel has ipip: an IPIP lab can stay up")
def test_an_ipip_lab_that_cannot_stay_up_is_refused_with_the_way_out(tmp_path: Path) -> None:
    env = {**os.environ, "CALICO_LAB_DIR": str(tmp_path)}
    r = subprocess.run(["calico-lab", "--lab-name", "noipip", "up", "--encap", "ipip"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "needs the kernel's ipip module" in r.stderr and "calico-lab demo --encap ipip" in r.stderr
    assert not (tmp_path / "noipip").exists()  # nothing was made
    assert "noipip" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
