"""pycalico as a user gets it: the wheel, installed in a fresh venv, run outside the source tree.

The wheel must carry no test infrastructure (no module of it imports kmock or
kubemock, the mock Kubernetes API server, which is a distribution of its own)
and everything the lab reads at run time (Calico's CRDs, deploy/observability)
as package data. The lab then runs from the two installed wheels alone:
``calico-lab up --datastore kubernetes`` (one ``up``, two nodes), ``status``,
``pod create``, ``down``, from a directory outside the tree and with no
PYTHONPATH, so nothing can come from the source tree or the editable install.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from lab.netns import TIMEOUT_SCALE

ROOT = Path(__file__).resolve().parents[2]

# What a wheel build reads; the rest of the tree (tests, caches, .git) is left out of the copy.
_NOT_BUILT = shutil.ignore_patterns(".git", ".mypy_cache", ".import_linter_cache", ".hypothesis", ".pytest_cache",
                                    "build", "dist", "__pycache__", "*.egg-info", ".venv", "tests", "bench", "docs")


def _imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The pycalico and pycalico-kubemock wheels, built (``pip wheel --no-deps``) from a copy of this tree,
    so that the build's own files (build/, *.egg-info) never land in the source tree."""
    tmp = tmp_path_factory.mktemp("wheels")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_NOT_BUILT)
    out = tmp / "dist"
    for project in (src, src / "kubemock"):
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
                            "-w", str(out), str(project)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
    built = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(built) == {"pycalico", "pycalico_kubemock"}, built
    return built


def test_the_wheel_ships_the_lab_data_and_no_module_that_imports_the_mock_api_server(
        wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["pycalico"]) as whl:
        names = set(whl.namelist())
        modules = {n: whl.read(n).decode() for n in names if n.endswith(".py")}
    assert not {n for n in names if n.startswith(("kubemock/", "tests/"))}
    offenders = {n: sorted(roots) for n, src in modules.items()
                 if (roots := _imported_roots(src) & {"kmock", "kubemock"})}
    assert offenders == {}
    crds = {f"lab/crds/{p.relative_to(ROOT / 'crds')}" for p in (ROOT / "crds").glob("*/*.yaml")}
    assert crds and crds <= names, sorted(crds - names)
    observability = {f"lab/observability/{p.relative_to(ROOT / 'deploy/observability')}"
                     for p in [ROOT / "deploy/observability/prometheus.yml",
                               *(ROOT / "deploy/observability/dashboards").glob("*.json")]}
    assert observability <= names, sorted(observability - names)
    with zipfile.ZipFile(wheels["pycalico_kubemock"]) as whl:
        assert {"kubemock/__init__.py", "kubemock/__main__.py", "kubemock/server.py"} <= set(whl.namelist())


def _venv_env(venv: Path, lab_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}", CALICO_LAB_DIR=str(lab_dir),
               VIRTUAL_ENV=str(venv))
    return env


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_calico_lab_runs_on_the_kubernetes_datastore_from_the_wheels_in_a_fresh_venv(
        wheels: dict[str, Path], tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # The dependencies come from the system; pycalico and kubemock only from the wheels.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                        "--disable-pip-version-check", *map(str, wheels.values())],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    elsewhere = tmp_path / "elsewhere"  # the commands run outside the source tree
    elsewhere.mkdir()
    env = _venv_env(venv, tmp_path / "labs")
    where = subprocess.run([str(py), "-c", "import kubemock, lab, libcalico; "
                            "print(libcalico.__file__, lab.__file__, kubemock.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert Path(path).is_relative_to(venv), where.stdout  # not /work/main's editable install

    name = f"lw{os.getpid() % 1000}"

    def lab(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(venv / "bin" / "calico-lab"), "--lab-name", name, *args], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=300 * TIMEOUT_SCALE)
        if check:
            assert r.returncode == 0, r.stdout + r.stderr
        return r

    try:
        up = lab("up", "--nodes", "2", "--datastore", "kubernetes")
        assert "NOT a kube-apiserver" in up.stdout and "(projectcalico.org/v3)" in up.stdout, up.stdout
        assert "[6/6]" in up.stdout, up.stdout
        pod_ip = lab("pod", "create", "a", "--node", "worker1").stdout.split()[-1]
        deadline = time.monotonic() + 60 * TIMEOUT_SCALE
        while not ("Mesh_192_168_3_111 Established" in (status := lab("status").stdout)
                   and status.count("Felix ready") == 2):
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        assert f"pod a on worker1: {pod_ip}" in status, status
    finally:
        down = lab("down", check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [line for line in left.splitlines() if line.startswith(f"{name}-")], left
