"""The etcd backend over TLS with client certificates, configured by Calico's ETCD_* variables.

A throwaway CA, server and client certificate are made with openssl for
127.0.0.1; etcd requires client-certificate auth.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from libcalico.backend import config as dsconfig
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.errors import DatastoreUnavailable, ValidationError
from tests.etcd_server import EtcdServer
from tests.libcalico.test_backend_contract import pool

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=pycalico-test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "1", "-extfile", "san.cnf", "-out", f"{name}.crt", cwd=d)
    return d


@pytest.fixture(scope="module")
def tls_etcd(certs: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(extra_args=[
        "--cert-file", str(certs / "server.crt"), "--key-file", str(certs / "server.key"),
        "--client-cert-auth", "--trusted-ca-file", str(certs / "ca.crt")])
    server.scheme = "https"
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


async def test_tls_with_client_certificates_from_the_environment(tls_etcd: EtcdServer, certs: Path) -> None:
    cfg = dsconfig.from_environment({
        "ETCD_ENDPOINTS": tls_etcd.endpoint,
        "ETCD_CA_CERT_FILE": str(certs / "ca.crt"),
        "ETCD_CERT_FILE": str(certs / "client.crt"),
        "ETCD_KEY_FILE": str(certs / "client.key"),
    })
    be = EtcdBackend(cfg.etcd)
    try:
        kv = await be.create(pool("tls-pool"))
        assert (await be.get(kv.key)).revision == kv.revision
    finally:
        await be.close()


async def test_tls_without_a_client_certificate_is_refused_clearly(tls_etcd: EtcdServer, certs: Path) -> None:
    cfg = dsconfig.from_environment({"ETCD_ENDPOINTS": tls_etcd.endpoint,
                                     "ETCD_CA_CERT_FILE": str(certs / "ca.crt")})
    be = EtcdBackend(cfg.etcd)
    try:
        with pytest.raises(DatastoreUnavailable, match="etcd"):
            await be.get(pool("x").key)
    finally:
        await be.close()


async def test_a_missing_certificate_file_is_named(tls_etcd: EtcdServer, certs: Path) -> None:
    cfg = dsconfig.from_environment({"ETCD_ENDPOINTS": tls_etcd.endpoint,
                                     "ETCD_CA_CERT_FILE": os.fspath(certs / "nope.crt")})
    be = EtcdBackend(cfg.etcd)
    try:
        with pytest.raises(DatastoreUnavailable, match="nope.crt"):
            await be.get(pool("x").key)
    finally:
        await be.close()


async def test_a_ca_file_with_no_certificate_in_it_is_named(tls_etcd: EtcdServer, tmp_path: Path) -> None:
    junk = tmp_path / "junk-ca.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    be = EtcdBackend(dsconfig.from_environment({"ETCD_ENDPOINTS": tls_etcd.endpoint,
                                                "ETCD_CA_CERT_FILE": str(junk)}).etcd)
    try:
        with pytest.raises(DatastoreUnavailable, match=r"etcd CA certificate file '.*junk-ca.pem' is not usable"):
            await be.get(pool("x").key)
    finally:
        await be.close()


async def test_a_certificate_and_a_key_that_are_no_pair_are_both_named(tls_etcd: EtcdServer, certs: Path) -> None:
    be = EtcdBackend(dsconfig.from_environment({
        "ETCD_ENDPOINTS": tls_etcd.endpoint, "ETCD_CA_CERT_FILE": str(certs / "ca.crt"),
        "ETCD_CERT_FILE": str(certs / "client.crt"), "ETCD_KEY_FILE": str(certs / "server.key")}).etcd)
    try:
        with pytest.raises(DatastoreUnavailable, match=r"client.crt' and key file '.*server.key' are not a usable "
                                                       r"pair: KEY_VALUES_MISMATCH"):
            await be.get(pool("x").key)
    finally:
        await be.close()


def test_a_certificate_without_its_key_is_refused_before_any_connection(tls_etcd: EtcdServer,
                                                                         certs: Path) -> None:
    with pytest.raises(ValidationError, match=r"ETCD_KEY_FILE \(must be set when ETCD_CERT_FILE is set\)"):
        dsconfig.from_environment({"ETCD_ENDPOINTS": tls_etcd.endpoint, "ETCD_CERT_FILE": str(certs / "client.crt")})
    with pytest.raises(ValidationError, match=r"ETCD_KEY_FILE \(must be set when ETCD_CERT_FILE is set\)"):
        EtcdBackend(EtcdConfig(endpoints=(tls_etcd.endpoint,), cert_file=str(certs / "client.crt")))
