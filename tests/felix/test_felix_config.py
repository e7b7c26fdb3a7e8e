"""Felix's settings: Calico's precedence (env > config file > node.<name> > default > built-in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from felix.config import settings
from libcalico import api


def fc(name: str, **spec: object) -> api.FelixConfiguration:
    return api.FelixConfiguration.model_validate({"metadata": {"name": name}, "spec": spec})


def test_each_source_overrides_the_one_below(tmp_path: Path) -> None:
    cfg_file = tmp_path / "felix.cfg"
    cfg_file.write_text("[global]\nVXLANVNI = 5000\nHealthPort = 9199\n")
    default = fc("default", vxlanVNI=4100, vxlanPort=4790, healthPort=9100, programClusterRoutes="Enabled")
    node = fc("node.n1", vxlanPort=4791, healthPort=9101)
    env = {"FELIX_CONFIGFILE": str(cfg_file), "FELIX_HEALTHPORT": "9299", "FELIX_FELIXHOSTNAME": "n1"}
    s = settings(env, default=default, node=node)
    assert s.health_port == 9299            # environment
    assert s.vxlan_vni == 5000              # config file
    assert s.vxlan_port == 4791             # node.<name>
    assert s.program_cluster_routes == "Enabled"  # default
    assert s.interface_prefix == "cali" and s.prometheus_metrics_port == 9091  # built in
    assert s.hostname == "n1"


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="FELIX_HEALTHPORT"):
        settings({"FELIX_HEALTHPORT": "nine"})
    with pytest.raises(ValueError, match="must be true or false"):
        settings({"FELIX_PROMETHEUSMETRICSENABLED": "maybe"})


def test_durations_and_defaults() -> None:
    s = settings({"FELIX_ROUTEREFRESHINTERVAL": "500ms", "NODENAME": "from-nodename"})
    assert s.route_refresh_interval == 0.5 and s.hostname == "from-nodename"
    assert settings({}, default=fc("default", routeRefreshInterval="2m")).route_refresh_interval == 120


def test_ipv6_support_is_on_by_default_and_turned_off_as_calico_turns_it_off() -> None:
    assert settings({}).ipv6_support is True
    assert settings({"FELIX_IPV6SUPPORT": "false"}).ipv6_support is False
    assert settings({}, default=fc("default", ipv6Support=False)).ipv6_support is False
