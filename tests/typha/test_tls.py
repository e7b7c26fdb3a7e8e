"""Typha's mTLS as Calico's: a client certificate from the CA with the required CN or URI SAN, checked both ways.

Certificates are made with the ``openssl`` command line for each test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from pathlib import Path

import pytest

from libcalico.backend.memory import MemoryBackend
from tests.libcalico.test_backend_contract import pool
from tests.typha.helpers import Recorder, clients, running_typha, wait_for

URI = "spiffe://cluster.local/ns/calico-system/sa/calico-node"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_cert(d: Path, name: str, cn: str, *, ca: str = "ca", uri: str = "") -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName=URI:{uri}\n" if uri else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "1", "-extfile", ext.name, cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("typha-certs")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                f"{ca}.key", "-out", f"{ca}.crt", "-days", "1", "-subj", f"/CN={ca}", cwd=d)
    make_cert(d, "server", "typha-server")
    make_cert(d, "felix", "typha-client")
    make_cert(d, "wrong-cn", "someone-else")
    make_cert(d, "by-uri", "no-matching-cn", uri=URI)
    make_cert(d, "foreign", "typha-client", ca="other-ca")
    return d


def server_env(d: Path, **extra: str) -> dict[str, str]:
    return {"serverkeyfile": str(d / "server.key"), "servercertfile": str(d / "server.crt"),
            "cafile": str(d / "ca.crt"), "clientcn": "typha-client", **extra}


def client_tls(d: Path, name: str, *, cn: str = "typha-server") -> dict[str, str]:
    return {"key_file": str(d / f"{name}.key"), "cert_file": str(d / f"{name}.crt"), "ca_file": str(d / "ca.crt"),
            "cn": cn}


async def test_clients_with_the_required_cn_or_uri_san_sync_and_every_other_one_is_refused(certs: Path) -> None:
    be = MemoryBackend()
    await be.create(pool("p1"))
    async with running_typha(be, serverhandshaketimeoutsecs="1",
                             **server_env(certs, clienturisan=URI)) as typha:
        port = typha.server.port
        good, by_uri = [Recorder()], [Recorder()]
        wrong_cn, foreign, no_cert, wrong_server = [Recorder()], [Recorder()], [Recorder()], [Recorder()]
        async with clients(port, good, **client_tls(certs, "felix")) as (good_client,), \
                clients(port, by_uri, **client_tls(certs, "by-uri")), \
                clients(port, wrong_cn, **client_tls(certs, "wrong-cn")), \
                clients(port, foreign, **client_tls(certs, "foreign")), \
                clients(port, wrong_server, **client_tls(certs, "felix", cn="not-typha")):
            await wait_for(lambda: good[0].in_sync and by_uri[0].in_sync, what="the good clients in sync")
            # No certificate at all: a TLS client without one, and a plain TCP client.
            ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
            ctx.check_hostname = False
            for tls in (ctx, None):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
                writer.write(b"\x01\x00\x00\x00\x00\x02\x80\x00")
                with contextlib.suppress(OSError):
                    assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()
            await be.create(pool("p2", "10.1.0.0/16"))
            await wait_for(lambda: len(good[0].state) == 2 and len(by_uri[0].state) == 2, what="p2 at the good ones")
            conn_id = good_client.server_conn_id
            await asyncio.sleep(0.5)  # the refused ones keep trying; none gets in
            for refused in (wrong_cn, foreign, wrong_server):
                assert not refused[0].state and not refused[0].in_sync
            assert good_client.server_conn_id == conn_id


def test_incomplete_tls_settings_are_refused_by_name(certs: Path) -> None:
    from libcalico.typha_client import TyphaConfig
    from typha.config import settings

    with pytest.raises(ValueError, match="TYPHA_SERVERKEYFILE, TYPHA_CAFILE not set"):
        settings({"TYPHA_SERVERCERTFILE": str(certs / "server.crt"), "TYPHA_CLIENTCN": "x"}).ssl_context()
    with pytest.raises(ValueError, match="missing TYPHACN/TYPHAURISAN"):
        TyphaConfig(addr="x:1", key_file="k", cert_file="c", ca_file="a").ssl_context()
    assert TyphaConfig.from_environment(("FELIX_",), {"FELIX_TYPHACAFILE": "/ca", "FELIX_TYPHACN": "typha",
                                                      "FELIX_TYPHAREADTIMEOUT": "7.5"}) == TyphaConfig(
        ca_file="/ca", cn="typha", read_timeout=7.5)
    with pytest.raises(ValueError, match="FELIX_TYPHAREADTIMEOUT: 'soon' is not a number of seconds"):
        TyphaConfig.from_environment(("FELIX_",), {"FELIX_TYPHAREADTIMEOUT": "soon"})
