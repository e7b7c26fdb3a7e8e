"""The datastore configuration (libcalico.backend.config): environment, CalicoAPIConfig file, and their errors.

Each bad setting is a ValidationError that names the variable (or the file's
field) the user wrote, before anything connects; calicoctl shows it as one
line with exit code 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from libcalico.backend import config as dsconfig
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.errors import ValidationError
from tests.calicoctl.test_calicoctl import calicoctl


def test_the_environment_gives_every_setting_and_empty_variables_count_as_unset() -> None:
    cfg = dsconfig.from_environment({
        "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": " http://10.0.0.1:2379, http://10.0.0.2:2379 ,",
        "ETCD_CA_CERT_FILE": "/ca", "ETCD_CERT_FILE": "/c", "ETCD_KEY_FILE": "/k", "ETCD_USERNAME": "u",
        "ETCD_PASSWORD": "p", "KUBECONFIG": "/kc", "K8S_API_ENDPOINT": "https://api", "CALICO_API_GROUP":
        "projectcalico.org/v3", "K8S_API_TOKEN": "", "UNRELATED": "x"})
    assert cfg.etcd == EtcdConfig(endpoints=("http://10.0.0.1:2379", "http://10.0.0.2:2379"), ca_cert_file="/ca",
                                  cert_file="/c", key_file="/k", username="u", password="p")
    assert (cfg.datastore_type, cfg.kubeconfig, cfg.k8s_api_endpoint, cfg.api_group, cfg.source) == \
        ("etcdv3", "/kc", "https://api", "projectcalico.org/v3", "environment")
    empty = dsconfig.from_environment({"DATASTORE_TYPE": "", "ETCD_ENDPOINTS": ""})
    assert empty == dsconfig.DatastoreConfig()


def test_calico_prefixed_variables_count_and_the_plain_name_wins() -> None:
    cfg = dsconfig.from_environment({"CALICO_DATASTORE_TYPE": "kubernetes", "CALICO_ETCD_ENDPOINTS": "http://a:1",
                                     "ETCD_ENDPOINTS": "", "CALICO_KUBECONFIG": "/kc"})
    assert (cfg.datastore_type, cfg.etcd.endpoints, cfg.kubeconfig) == ("kubernetes", ("http://a:1",), "/kc")
    both = dsconfig.from_environment({"ETCD_ENDPOINTS": "http://plain:1", "CALICO_ETCD_ENDPOINTS": "http://pre:1"})
    assert both.etcd.endpoints == ("http://plain:1",)


def test_the_process_environment_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCD_ENDPOINTS", "http://127.0.0.1:1234")
    monkeypatch.setenv("DATASTORE_TYPE", "etcdv3")
    assert dsconfig.from_environment().etcd.endpoints == ("http://127.0.0.1:1234",)


@pytest.mark.parametrize("env, message", [
    ({"ETCD_USERNAME": "admin"}, "error with field ETCD_PASSWORD (must be set when ETCD_USERNAME is set)"),
    ({"ETCD_PASSWORD": "secret"}, "error with field ETCD_USERNAME (must be set when ETCD_PASSWORD is set)"),
    ({"CALICO_ETCD_USERNAME": "admin"},
     "error with field ETCD_PASSWORD (must be set when CALICO_ETCD_USERNAME is set)"),
    ({"ETCD_CERT_FILE": "/c.crt"}, "error with field ETCD_KEY_FILE (must be set when ETCD_CERT_FILE is set)"),
    ({"ETCD_KEY_FILE": "/c.key"}, "error with field ETCD_CERT_FILE (must be set when ETCD_KEY_FILE is set)"),
    ({"DATASTORE_TYPE": "consul"}, "error with field DATASTORE_TYPE = 'consul' (must be etcdv3 or kubernetes)"),
    ({"CALICO_DATASTORE_TYPE": "consul"},
     "error with field CALICO_DATASTORE_TYPE = 'consul' (must be etcdv3 or kubernetes)"),
    ({"CALICO_API_GROUP": "x/v9"},
     "error with field CALICO_API_GROUP = 'x/v9' (must be crd.projectcalico.org/v1 or projectcalico.org/v3)"),
])
def test_a_bad_or_half_set_environment_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        dsconfig.from_environment(env)
    assert str(err.value) == f"datastore configuration from environment: {message}"
    assert "secret" not in str(err.value)


def write_cfg(tmp_path: Path, spec: object, **top: object) -> str:
    path = tmp_path / "calicoctl.cfg"
    path.write_text(yaml.safe_dump({"apiVersion": "projectcalico.org/v3", "kind": "CalicoAPIConfig",
                                    "metadata": {}, "spec": spec, **top}))
    return str(path)


def test_the_config_file_is_the_whole_configuration(tmp_path: Path) -> None:
    path = write_cfg(tmp_path, {"datastoreType": "etcdv3", "etcdEndpoints": "http://a:1,http://b:2",
                                "etcdUsername": "u", "etcdPassword": "p"})
    cfg = dsconfig.load(path, {"ETCD_ENDPOINTS": "http://ignored:1", "DATASTORE_TYPE": "kubernetes"})
    assert cfg.etcd.endpoints == ("http://a:1", "http://b:2") and cfg.datastore_type == "etcdv3"
    assert (cfg.etcd.username, cfg.etcd.password, cfg.source) == ("u", "p", path)


def test_the_default_path_falls_back_to_the_environment_when_it_does_not_exist(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dsconfig, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.cfg"))
    assert dsconfig.load(None, {"ETCD_ENDPOINTS": "http://e:1"}).etcd.endpoints == ("http://e:1",)


@pytest.mark.parametrize("spec, message", [
    ({"datastoreTyp": "etcdv3"}, "error with field spec.datastoreTyp (unknown field)"),
    ({"datastoreType": "consul"}, "error with field datastoreType = 'consul' (must be etcdv3 or kubernetes)"),
    ({"etcdEndpoints": 12}, "error with field etcdEndpoints (Input should be a valid string)"),
    ({"etcdUsername": "u"}, "error with field etcdPassword (must be set when etcdUsername is set)"),
    ({"etcdKeyFile": "/k"}, "error with field etcdCertFile (must be set when etcdKeyFile is set)"),
    ([1, 2], "error with field spec (must be a mapping)"),
])
def test_a_bad_config_file_names_the_field(tmp_path: Path, spec: object, message: str) -> None:
    path = write_cfg(tmp_path, spec)
    with pytest.raises(ValidationError) as err:
        dsconfig.from_file(path)
    assert message in str(err.value) and path in str(err.value)


def test_an_etcd_config_built_directly_is_checked_too() -> None:
    with pytest.raises(ValidationError, match=r"ETCD_KEY_FILE \(must be set when ETCD_CERT_FILE is set\)"):
        EtcdBackend(EtcdConfig(cert_file="/c.crt"))
    with pytest.raises(ValidationError, match=r"ETCD_PASSWORD \(must be set when ETCD_USERNAME is set\)"):
        EtcdBackend(EtcdConfig(username="u"))


@pytest.mark.parametrize("extra, words", [
    ({"ETCD_USERNAME": "admin"}, "ETCD_PASSWORD (must be set when ETCD_USERNAME is set)"),
    ({"ETCD_PASSWORD": "secret"}, "ETCD_USERNAME (must be set when ETCD_PASSWORD is set)"),
    ({"ETCD_CERT_FILE": "/c.crt"}, "ETCD_KEY_FILE (must be set when ETCD_CERT_FILE is set)"),
])
@pytest.mark.parametrize("command", [["get", "ippool"], ["ipam", "show"]])
def test_calicoctl_says_which_variable_is_missing_in_one_line(etcd_env: dict[str, str], extra: dict[str, str],
                                                              words: str, command: list[str]) -> None:
    r = calicoctl({**etcd_env, **extra}, *command)
    assert r.returncode == 1 and words in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "secret" not in r.stderr


def test_the_cni_plugins_give_each_etcd_request_calicos_30_seconds_and_read_everything_else_as_calicoctl() -> None:
    from cni import config as cni_config

    conf = cni_config.NetConf.model_validate({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
                                              "etcd_endpoints": "http://10.0.0.1:2379"})
    ds = conf.datastore({"ETCD_USERNAME": "u", "ETCD_PASSWORD": "p"})
    assert ds.etcd == EtcdConfig(endpoints=("http://10.0.0.1:2379",), username="u", password="p",
                                 timeout=cni_config.DATASTORE_TIMEOUT)
    assert cni_config.DATASTORE_TIMEOUT == 30.0 > EtcdConfig().timeout  # Calico's CNI look-ups; the library's 10 s
