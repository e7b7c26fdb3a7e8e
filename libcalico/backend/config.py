"""Datastore configuration, read the way Calico's tools read it.

Like libcalico-go's ``apiconfig.LoadClientConfig``: if the config file exists
(``/etc/calico/calicoctl.cfg`` or the path given with ``--config``), it is the
whole configuration, a ``CalicoAPIConfig`` document::

    apiVersion: projectcalico.org/v3
    kind: CalicoAPIConfig
    spec:
      datastoreType: etcdv3
      etcdEndpoints: http://127.0.0.1:2379

Otherwise the environment is read: ``DATASTORE_TYPE`` (``etcdv3`` default,
or ``kubernetes``), ``ETCD_ENDPOINTS``, ``ETCD_CA_CERT_FILE``,
``ETCD_CERT_FILE``, ``ETCD_KEY_FILE``, ``ETCD_USERNAME``, ``ETCD_PASSWORD``,
``KUBECONFIG``, ``K8S_API_ENDPOINT``, ``CALICO_API_GROUP``. Calico also
accepts each variable with a ``CALICO_`` prefix; so do we (the plain name
wins when both are set, so that a caller that overlays plain names, as Felix
and the CNI plugin do, is obeyed). Empty variables count as unset.

One pydantic-settings model, :class:`DatastoreSettings`, holds the fields, their
variable names and their checks; the environment reaches it through
pydantic-settings' own environment source (over any mapping, so that callers
can overlay their own settings), the file's ``spec`` through the same model
(its init source; neither reads ``os.environ`` behind the caller's back). A bad value, or half of a pair (a certificate without
its key, a user name without its password; gRPC would abort the process, and
libcalico-go would drop the credentials silently), is a
:class:`~libcalico.errors.ValidationError` that names the variable, or the
file's field, before anything connects.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic
import yaml
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, InitSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from libcalico.backend.etcdv3 import EtcdConfig
from libcalico.errors import ErroredField, ValidationError

DEFAULT_CONFIG_PATH = "/etc/calico/calicoctl.cfg"
DATASTORE_TYPES = ("etcdv3", "kubernetes")
API_GROUPS = ("crd.projectcalico.org/v1", "projectcalico.org/v3")
DEFAULT_ETCD_ENDPOINTS = "http://127.0.0.1:2379"

# CalicoAPIConfig spec field -> environment variable (libcalico-go's json and envconfig tags).
_SPEC_FIELDS = {
    "datastoreType": "DATASTORE_TYPE",
    "etcdEndpoints": "ETCD_ENDPOINTS",
    "etcdCACertFile": "ETCD_CA_CERT_FILE",
    "etcdCertFile": "ETCD_CERT_FILE",
    "etcdKeyFile": "ETCD_KEY_FILE",
    "etcdUsername": "ETCD_USERNAME",
    "etcdPassword": "ETCD_PASSWORD",
    "kubeconfig": "KUBECONFIG",
    "k8sAPIEndpoint": "K8S_API_ENDPOINT",
    "calicoAPIGroup": "CALICO_API_GROUP",
}
_SPEC_KEY = {env_name: key for key, env_name in _SPEC_FIELDS.items()}

# Settings that make sense only together: (field, the field it needs).
_PAIRS = (("etcd_cert_file", "etcd_key_file"), ("etcd_key_file", "etcd_cert_file"),
          ("etcd_username", "etcd_password"), ("etcd_password", "etcd_username"))


@dataclass(frozen=True, slots=True)
class DatastoreConfig:
    datastore_type: str = "etcdv3"
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    kubeconfig: str = ""
    k8s_api_endpoint: str = ""
    source: str = "environment"
    api_group: str = ""  # CALICO_API_GROUP; "" = discover (Kubernetes datastore only)


def _env(name: str) -> Any:
    """A field read from ``name``, or from ``CALICO_<name>`` (envconfig's prefix)."""
    names = (name,) if name.startswith("CALICO_") else (name, f"CALICO_{name}")
    return Field("", validation_alias=AliasChoices(*names))


class DatastoreSettings(BaseSettings):
    """The datastore settings, each field under its environment variable's name."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True)

    datastore_type: str = _env("DATASTORE_TYPE")
    etcd_endpoints: str = _env("ETCD_ENDPOINTS")
    etcd_ca_cert_file: str = _env("ETCD_CA_CERT_FILE")
    etcd_cert_file: str = _env("ETCD_CERT_FILE")
    etcd_key_file: str = _env("ETCD_KEY_FILE")
    etcd_username: str = _env("ETCD_USERNAME")
    etcd_password: str = _env("ETCD_PASSWORD")
    kubeconfig: str = _env("KUBECONFIG")
    k8s_api_endpoint: str = _env("K8S_API_ENDPOINT")
    calico_api_group: str = _env("CALICO_API_GROUP")

    @field_validator("datastore_type", "calico_api_group", mode="after")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("datastore_type", mode="after")
    @classmethod
    def _datastore_type(cls, value: str) -> str:
        if value and value not in DATASTORE_TYPES:
            raise ValueError("must be etcdv3 or kubernetes")
        return value

    @field_validator("calico_api_group", mode="after")
    @classmethod
    def _api_group(cls, value: str) -> str:
        if value and value not in API_GROUPS:
            raise ValueError(f"must be {' or '.join(API_GROUPS)}")
        return value

    def unpaired(self) -> list[tuple[str, str]]:
        """(missing field, the field that needs it) for each half-set pair."""
        return [(need, have) for have, need in _PAIRS if getattr(self, have) and not getattr(self, need)]


def _variables(field_name: str) -> tuple[str, ...]:
    alias = DatastoreSettings.model_fields[field_name].validation_alias
    assert isinstance(alias, AliasChoices)
    return tuple(str(c) for c in alias.choices)


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source, over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._mapping, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


S = TypeVar("S", bound=BaseSettings)


def settings_from(settings_cls: type[S], env: Mapping[str, str]) -> S:
    """``settings_cls`` read from ``env`` by pydantic-settings' environment source, and nothing else.

    Callers pass a mapping rather than let the model read ``os.environ``: the CNI
    plugin overlays its network config, Felix its own names, tests their own.
    """
    return settings_cls(_build_sources=((_MappingSource(settings_cls, env),), {}))


def _build(settings: DatastoreSettings, source: str, name: Callable[[str], str]) -> DatastoreConfig:
    """The checked configuration; ``name`` says what the source calls a field."""
    missing = [ErroredField(name(need), f"must be set when {name(have)} is set") for need, have in settings.unpaired()]
    if missing:
        raise ValidationError(missing, context=f"datastore configuration from {source}")
    endpoints = tuple(e.strip() for e in (settings.etcd_endpoints or DEFAULT_ETCD_ENDPOINTS).split(",") if e.strip())
    etcd = EtcdConfig(endpoints=endpoints, ca_cert_file=settings.etcd_ca_cert_file,
                      cert_file=settings.etcd_cert_file, key_file=settings.etcd_key_file,
                      username=settings.etcd_username, password=settings.etcd_password)
    return DatastoreConfig(settings.datastore_type or "etcdv3", etcd, settings.kubeconfig,
                           settings.k8s_api_endpoint, source, settings.calico_api_group)


def _invalid(exc: pydantic.ValidationError, source: str, name: Callable[[str], str],
             values: Mapping[str, Any]) -> ValidationError:
    """pydantic's errors as ours: each names the variable (or file field) and its value."""
    fields = []
    for err in exc.errors(include_url=False):
        env_name = str(err["loc"][0]) if err["loc"] else ""
        field_name = next((f for f in DatastoreSettings.model_fields if env_name in _variables(f)), env_name)
        reason = err["msg"].removeprefix("Value error, ")
        value = None if "PASSWORD" in env_name else values.get(env_name, err.get("input"))
        fields.append(ErroredField(name(field_name), reason, value if isinstance(value, str) else None))
    return ValidationError(fields, context=f"datastore configuration from {source}")


def from_environment(env: Mapping[str, str] | None = None, *, source: str = "environment",
                     names: Mapping[str, str] | None = None) -> DatastoreConfig:
    """The configuration in ``env`` (default: this process's environment).

    ``source`` says where the values came from in errors and in the result, and
    ``names`` renames variables in errors (the CNI plugin's network config
    overlays ``ETCD_CERT_FILE`` as Calico's does, but the user wrote ``etcd_cert_file``).
    """
    env = os.environ if env is None else env
    renames = names or {}

    def name(field_name: str) -> str:  # the variable the user set, else the plain one
        variables = _variables(field_name)
        variable = next((n for n in variables if env.get(n)), variables[0])
        return renames.get(variable, variable)

    try:
        settings = settings_from(DatastoreSettings, env)
    except pydantic.ValidationError as exc:
        values = {v: env.get(v) or env.get(f"CALICO_{v}", "") for f in DatastoreSettings.model_fields
                  for v in _variables(f)[:1]}
        raise _invalid(exc, source, name, values) from exc
    return _build(settings, source, name)


def from_file(path: str) -> DatastoreConfig:
    """The configuration in a CalicoAPIConfig file (which must exist)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise ValidationError([ErroredField("(document)", f"cannot parse {path}: {exc}")]) from exc
    if not isinstance(doc, dict) or doc.get("kind") != "CalicoAPIConfig":
        raise ValidationError([ErroredField("kind", "must be CalicoAPIConfig", doc.get("kind") if isinstance(
            doc, dict) else None)], context=f"config file {path}")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise ValidationError([ErroredField("spec", "must be a mapping")], context=f"config file {path}")
    unknown = sorted(str(k) for k in set(spec) - set(_SPEC_FIELDS))
    if unknown:
        raise ValidationError([ErroredField(f"spec.{k}", "unknown field") for k in unknown],
                              context=f"config file {path}")
    values = {env_name: spec[key] for key, env_name in _SPEC_FIELDS.items() if spec.get(key) not in (None, "")}

    def name(field_name: str) -> str:
        return _SPEC_KEY[_variables(field_name)[0]]

    try:
        settings = DatastoreSettings(_build_sources=((InitSettingsSource(DatastoreSettings, values),), {}))
    except pydantic.ValidationError as exc:
        raise _invalid(exc, path, name, values) from exc
    return _build(settings, path, name)


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> DatastoreConfig:
    """The file if it exists, else the environment (Calico's precedence)."""
    path = path or DEFAULT_CONFIG_PATH
    if os.path.exists(path):
        return from_file(path)
    return from_environment(env)
