"""The Dockerfile builds here, and every entry point runs inside the image it builds.

No Docker engine or registry is reachable here, so the image is built as a user without one
would: a Debian bookworm minbase made by ``mmdebstrap`` and imported into podman is the
base (the Dockerfile's ``BASE`` build argument), ``podman build --isolation=chroot`` runs the
RUN steps, and the Python packages come from a wheelhouse built on this machine (``PIP_ARGS``;
the build's RUN steps cannot reach PyPI through this sandbox's TLS proxy). ``podman run``
cannot start containers here, so the checks chroot into the image's filesystem instead
(``podman create`` + ``podman mount``): every console script answers ``--help``, BIRD, nft
and ip run, and ``install-cni`` puts CNI plugins on a "host" (a bare minbase tree with no
Python) that run there.

Slow (minutes on a first run; the base tarball, the wheelhouse and podman's layers are cached
under ``$PYCALICO_CACHE``, default ``~/.cache/pycalico``), so it is marked ``image``: CI runs
it; ``-m 'not image'`` leaves it out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PYCALICO_CACHE", Path.home() / ".cache" / "pycalico"))
BASE_TAR = CACHE / "debian-bookworm-minbase.tar"
BASE_IMAGE = "localhost/debian-base:bookworm"
IMAGE = "localhost/pycalico:test"
WHEELS = CACHE / "wheels"
BASE_MAX_AGE = 7 * 24 * 3600  # a week: Debian's point releases and security updates move on
SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
PATH = "/opt/pycalico/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = pytest.mark.image


def run(*argv: str, timeout: float = 900, **kw: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    assert r.returncode == 0, f"{' '.join(argv)}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r  # type: ignore[no-any-return]


def base_tarball() -> Path:
    """The minbase tarball, made again when missing or older than a week (written beside, then renamed)."""
    if BASE_TAR.exists() and time.time() - BASE_TAR.stat().st_mtime < BASE_MAX_AGE:
        return BASE_TAR
    CACHE.mkdir(parents=True, exist_ok=True)
    part = BASE_TAR.with_suffix(".part")
    run("mmdebstrap", "--variant=minbase", "--format=tar", "bookworm", str(part))
    part.rename(BASE_TAR)
    subprocess.run(["podman", "rmi", "-f", BASE_IMAGE], capture_output=True)
    return BASE_TAR


def wheelhouse() -> Path:
    """Wheels of every dependency (and the build backend), built with this machine's pip and index."""
    run(sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(WHEELS), str(ROOT), "setuptools", "wheel")
    for stale in WHEELS.glob("pycalico-*.whl"):  # the image builds pycalico from the source it is given
        stale.unlink()
    return WHEELS


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/install-deps.sh installs it")
    if os.geteuid() != 0:
        pytest.skip("chroot into the image needs root")
    started = time.monotonic()
    tar = base_tarball()
    if subprocess.run(["podman", "image", "exists", BASE_IMAGE]).returncode != 0:
        run("podman", "import", str(tar), BASE_IMAGE)
    wheels = wheelhouse()
    run("podman", "build", "--isolation=chroot", "--build-arg", f"BASE={BASE_IMAGE}", "-v", f"{wheels}:/wheels:ro",
        "--build-arg", "PIP_ARGS=--no-index --find-links /wheels", "-t", IMAGE, str(ROOT), timeout=1800)
    print(f"\nimage built in {time.monotonic() - started:.0f} s")
    ctr = run("podman", "create", IMAGE).stdout.strip()
    try:
        yield Path(run("podman", "mount", ctr).stdout.strip())
    finally:
        subprocess.run(["podman", "umount", ctr], capture_output=True)
        subprocess.run(["podman", "rm", "-f", ctr], capture_output=True)


def in_image(root: Path, *argv: str, env: dict[str, str] | None = None,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROOT, str(root), *argv], capture_output=True, text=True, timeout=120, input=stdin,
                          env={"PATH": PATH, "HOME": "/root", **(env or {})})


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_answers_help_in_the_image(image_root: Path, script: str) -> None:
    if script in ("calico", "calico-ipam"):  # CNI plugins: no --help; the spec's VERSION instead
        r = in_image(image_root, script, env={"CNI_COMMAND": "VERSION"})
        assert r.returncode == 0 and json.loads(r.stdout)["cniVersion"] == "1.0.0", r.stderr
        return
    r = in_image(image_root, script, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout


@pytest.mark.parametrize("argv", [("bird", "--version"), ("nft", "--version"), ("ip", "-V")])
def test_bird_nftables_and_iproute2_run_in_the_image(image_root: Path, argv: tuple[str, ...]) -> None:
    r = in_image(image_root, *argv)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (r.stdout + r.stderr).strip()


def test_birdc_is_in_the_image_for_confd_and_the_probes(image_root: Path) -> None:
    r = in_image(image_root, "sh", "-c", "command -v birdc")
    assert r.returncode == 0 and r.stdout.strip() == "/usr/sbin/birdc", r.stdout + r.stderr


def test_the_image_has_no_compiler_and_no_pip(image_root: Path) -> None:
    assert not (image_root / "opt/pycalico/bin/pip").exists()
    assert not (image_root / "usr/bin/gcc").exists()


def test_install_cni_puts_plugins_on_a_host_without_python_that_run_there(image_root: Path,
                                                                        tmp_path: Path) -> None:
    tokens = image_root / "tmp/cni-token"
    tokens.mkdir(parents=True, exist_ok=True)
    (tokens / "token").write_text("a-token")
    (tokens / "ca.crt").write_text("a CA\n")
    host = image_root / "tmp/host"
    host.mkdir(parents=True, exist_ok=True)
    template = json.dumps({"name": "k8s-pod-network", "cniVersion": "1.0.0", "plugins": [{
        "type": "calico", "datastore_type": "kubernetes", "nodename": "__KUBERNETES_NODE_NAME__",
        "mtu": "__CNI_MTU__", "ipam": {"type": "calico-ipam"},
        "kubernetes": {"kubeconfig": "__KUBECONFIG_FILEPATH__"}}]}).replace('"__CNI_MTU__"', "__CNI_MTU__")
    r = in_image(image_root, "/usr/local/bin/install-cni", env={
        "CNI_HOST_ROOT": "/tmp/host", "CNI_TOKEN_DIR": "/tmp/cni-token", "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_NODE_NAME": "kind-worker", "CNI_NETWORK_CONFIG": template})
    assert r.returncode == 0, r.stderr
    conflist = json.loads((host / "etc/cni/net.d/10-calico.conflist").read_text())
    assert conflist["plugins"][0]["mtu"] == 1480 and conflist["plugins"][0]["nodename"] == "kind-worker"
    assert conflist["plugins"][0]["kubernetes"]["kubeconfig"] == "/etc/cni/net.d/calico-kubeconfig"
    kubeconfig = (host / "etc/cni/net.d/calico-kubeconfig").read_text()
    assert "server: https://10.96.0.1:443" in kubeconfig and "token: a-token" in kubeconfig
    assert (host / "etc/cni/net.d/calico-kubeconfig").stat().st_mode & 0o077 == 0

    # The "host": Debian minbase, no Python at all, with what install-cni put in /opt/cni.
    bare = tmp_path / "host"
    bare.mkdir()
    with tarfile.open(BASE_TAR) as tar:
        tar.extractall(bare, filter="fully_trusted")
    assert not list((bare / "usr/bin").glob("python3*"))
    shutil.copytree(host / "opt", bare / "opt", symlinks=True, dirs_exist_ok=True)
    for plugin in ("calico", "calico-ipam"):
        r = subprocess.run([CHROOT, str(bare), f"/opt/cni/bin/{plugin}"], capture_output=True, text=True,
                           timeout=60, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "VERSION"})
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["supportedVersions"][-1] == "1.0.0"
    # An ADD with a bad config reaches the plugin's own validation (pydantic and all imported there).
    r = subprocess.run([CHROOT, str(bare), "/opt/cni/bin/calico"], capture_output=True, text=True, timeout=60,
                       input=json.dumps({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico"}),
                       env={"PATH": "/usr/bin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc",
                            "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0"})
    assert r.returncode == 1
    assert json.loads(r.stdout)["msg"] == "invalid network config: ipam: the calico plugin needs an ipam section"
