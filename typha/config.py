"""Typha's settings: Calico's ``TYPHA_<NAME>`` environment variables, validated by one pydantic model.

The names, defaults and meanings are Calico's (``typha/pkg/config/config_params.go``;
the variable is ``TYPHA_`` plus the name, any case: ``TYPHA_SERVERMAXFALLBEHINDSECS``).
Durations are seconds. The datastore is Typha's own ``TYPHA_DATASTORETYPE``,
``TYPHA_ETCDENDPOINTS``... (as Calico's Typha reads them), falling back to
calicoctl's variables (``DATASTORE_TYPE``, ``ETCD_ENDPOINTS``, ``KUBECONFIG``).
A bad value is a ValueError that names the variable.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from libcalico.backend.config import DatastoreConfig, from_environment
from typha.server import ServerConfig


class TyphaSettings(BaseModel):
    """Typha's settings; each alias is Calico's name of the setting."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    log_severity_screen: str = Field("INFO", alias="LogSeverityScreen")
    health_enabled: bool = Field(False, alias="HealthEnabled")
    health_host: str = Field("localhost", alias="HealthHost")
    health_port: int = Field(9098, alias="HealthPort", ge=0, le=65535)
    prometheus_metrics_enabled: bool = Field(False, alias="PrometheusMetricsEnabled")
    prometheus_metrics_host: str = Field("", alias="PrometheusMetricsHost")
    prometheus_metrics_port: int = Field(9093, alias="PrometheusMetricsPort", ge=0, le=65535)
    snapshot_cache_max_batch_size: int = Field(100, alias="SnapshotCacheMaxBatchSize", ge=1)
    server_max_message_size: int = Field(100, alias="ServerMaxMessageSize", ge=1)
    server_max_fall_behind_secs: float = Field(300.0, alias="ServerMaxFallBehindSecs", gt=0)
    server_new_client_fall_behind_grace_period: float = Field(300.0, alias="ServerNewClientFallBehindGracePeriod",
                                                              ge=0)
    server_ping_interval_secs: float = Field(10.0, alias="ServerPingIntervalSecs", gt=0)
    server_pong_timeout_secs: float = Field(60.0, alias="ServerPongTimeoutSecs", gt=0)
    server_handshake_timeout_secs: float = Field(10.0, alias="ServerHandshakeTimeoutSecs", gt=0)
    server_write_timeout_secs: float = Field(120.0, alias="ServerWriteTimeoutSecs", gt=0)
    server_port: int = Field(0, alias="ServerPort", ge=0, le=65535)
    server_host: str = Field("", alias="ServerHost")
    server_key_file: str = Field("", alias="ServerKeyFile")
    server_cert_file: str = Field("", alias="ServerCertFile")
    ca_file: str = Field("", alias="CAFile")
    client_cn: str = Field("", alias="ClientCN")
    client_uri_san: str = Field("", alias="ClientURISAN")
    connection_rebalancing_mode: str = Field("none", alias="ConnectionRebalancingMode",
                                             pattern="^(none|kubernetes)$")
    connection_drop_interval_secs: float = Field(1.0, alias="ConnectionDropIntervalSecs", gt=0)
    shutdown_timeout_secs: float = Field(300.0, alias="ShutdownTimeoutSecs", gt=0)
    shutdown_connection_drop_interval_max_secs: float = Field(1.0, alias="ShutdownConnectionDropIntervalMaxSecs",
                                                              gt=0)
    max_connections_upper_limit: int = Field(10000, alias="MaxConnectionsUpperLimit", ge=1)
    max_connections_lower_limit: int = Field(400, alias="MaxConnectionsLowerLimit", ge=1)
    k8s_service_poll_interval_secs: float = Field(30.0, alias="K8sServicePollIntervalSecs", gt=0)
    k8s_namespace: str = Field("kube-system", alias="K8sNamespace")
    k8s_service_name: str = Field("calico-typha", alias="K8sServiceName")
    k8s_port_name: str = Field("calico-typha", alias="K8sPortName")

    @field_validator("health_enabled", "prometheus_metrics_enabled", mode="before")
    @classmethod
    def _calico_bool(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"must be true or false, not {value!r}")
            return text in ("true", "1", "yes")
        return value

    @property
    def requires_tls(self) -> bool:
        return bool(self.server_key_file or self.server_cert_file or self.ca_file or self.client_cn
                    or self.client_uri_san)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context: our certificate, and client certificates required (Calico's)."""
        if not self.requires_tls:
            return None
        missing = [n for n, v in (("TYPHA_SERVERKEYFILE", self.server_key_file),
                                  ("TYPHA_SERVERCERTFILE", self.server_cert_file), ("TYPHA_CAFILE", self.ca_file))
                   if not v]
        if missing:
            raise ValueError(f"Typha's TLS settings are incomplete: {', '.join(missing)} not set")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(self.server_cert_file, self.server_key_file)
        return ctx

    def server_config(self) -> ServerConfig:
        return ServerConfig(
            host=self.server_host, port=self.server_port or 5473, max_message_size=self.server_max_message_size,
            max_fall_behind=self.server_max_fall_behind_secs,
            new_client_fall_behind_grace=self.server_new_client_fall_behind_grace_period,
            ping_interval=self.server_ping_interval_secs, pong_timeout=self.server_pong_timeout_secs,
            handshake_timeout=self.server_handshake_timeout_secs, write_timeout=self.server_write_timeout_secs,
            drop_interval=self.connection_drop_interval_secs, shutdown_timeout=self.shutdown_timeout_secs,
            shutdown_max_drop_interval=self.shutdown_connection_drop_interval_max_secs,
            max_conns=self.max_connections_upper_limit, ssl=self.ssl_context(), client_cn=self.client_cn,
            client_uri_san=self.client_uri_san)


def settings(env: Mapping[str, str] | None = None) -> TyphaSettings:
    """Typha's settings from ``TYPHA_*``; ValueError naming each bad variable."""
    env = os.environ if env is None else env
    lowered = {k.lower(): (k, v) for k, v in env.items() if k.upper().startswith("TYPHA_")}
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, info in TyphaSettings.model_fields.items():
        assert info.alias is not None
        hit = lowered.get(f"typha_{info.alias}".lower())
        if hit is not None and hit[1] not in ("", "none"):
            values[name], origin[name] = hit[1], hit[0]
    try:
        return TyphaSettings(**values)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            name = str(err["loc"][0]) if err["loc"] else ""
            problems.append(f"{origin.get(name, name)}: {err['msg'].removeprefix('Value error, ')}")
        raise ValueError("; ".join(problems)) from exc


def datastore(env: Mapping[str, str] | None = None) -> DatastoreConfig:
    """Typha's datastore: ``TYPHA_DATASTORETYPE``, ``TYPHA_ETCDENDPOINTS``... over calicoctl's variables."""
    env = dict(os.environ if env is None else env)
    for typha_name, name in (("TYPHA_DATASTORETYPE", "DATASTORE_TYPE"), ("TYPHA_ETCDENDPOINTS", "ETCD_ENDPOINTS"),
                             ("TYPHA_ETCDCAFILE", "ETCD_CA_CERT_FILE"), ("TYPHA_ETCDCERTFILE", "ETCD_CERT_FILE"),
                             ("TYPHA_ETCDKEYFILE", "ETCD_KEY_FILE")):
        if env.get(typha_name):
            env[name] = env[typha_name]
    return from_environment(env)
