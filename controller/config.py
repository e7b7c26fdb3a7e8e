"""The effective configuration: KubeControllersConfiguration ``default`` merged with the environment.

As Calico's kube-controllers (kube-controllers/pkg/config/runconfig.go,
``mergeConfig``): each setting comes from its environment variable when that
is set, else from the resource, else from Calico's default; the result is
written back to the resource's ``status.runningConfig`` and the variables that
shaped it to ``status.environmentVars``, so ``calicoctl get kcc default -o
yaml`` shows what is really running. :func:`merge` is a pure function of the
variables, the datastore type and the spec; the controller writes its
status.

An invalid variable is an error that names it (Calico exits with "invalid
environment variable value"); nothing is started with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from libcalico.api import kubecontrollers as kcc
from libcalico.daemon import log_level

ENV_LOG_LEVEL = "LOG_LEVEL"
ENV_RECONCILER_PERIOD = "RECONCILER_PERIOD"
ENV_ENABLED_CONTROLLERS = "ENABLED_CONTROLLERS"
ENV_COMPACTION_PERIOD = "COMPACTION_PERIOD"
ENV_HEALTH_ENABLED = "HEALTH_ENABLED"
ENV_SYNC_NODE_LABELS = "SYNC_NODE_LABELS"
ENV_AUTO_HOST_ENDPOINTS = "AUTO_HOST_ENDPOINTS"
ALL_ENVS = (ENV_LOG_LEVEL, ENV_RECONCILER_PERIOD, ENV_ENABLED_CONTROLLERS, ENV_COMPACTION_PERIOD,
            ENV_HEALTH_ENABLED, ENV_SYNC_NODE_LABELS, ENV_AUTO_HOST_ENDPOINTS)

DEFAULT_PERIOD = 300.0        # reconcilerPeriod 5m
DEFAULT_COMPACTION = 600.0    # etcdV3CompactionPeriod 10m
DEFAULT_METRICS_PORT = 9094   # Calico's manifests and operator set 9094


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable or field."""


# --- Go durations ----------------------------------------------------------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds of a Go duration (``90s``, ``1m30s``, ``500ms``, ``0``), as time.ParseDuration reads it."""
    text = text.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * total


def format_duration(seconds: float) -> str:
    """A duration as Go prints it (``5m0s``, ``1h0m0s``, ``1.5s``, ``0s``)."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    s_text = f"{s:g}s"
    if h:
        return f"{int(h)}h{int(m)}m{s_text}"
    if m:
        return f"{int(m)}m{s_text}"
    return s_text


def _go_bool(name: str, value: str) -> bool:
    """strconv.ParseBool, with the variable named on failure."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ConfigError(f"invalid environment variable value {name}={value!r} (want true or false)")


def _env_duration(name: str, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"invalid environment variable value {name}={value!r}: {exc}") from exc


# --- the running configuration ---------------------------------------------------------------

@dataclass(frozen=True)
class NodeRunConfig:
    sync_labels: bool = True
    delete_nodes: bool = False      # etcd mode: the Calico Node of a deleted Kubernetes Node goes too
    leak_grace_period: float | None = None   # None: no leak candidates; 0: candidates never confirmed
    reconciler_period: float = DEFAULT_PERIOD
    auto_host_endpoints: bool = False
    # runconfig.go AutoHostEndpointConfig: the <node>-auto-hep one, and the templates' (from the
    # resource only: AUTO_HOST_ENDPOINTS=enabled means the default host endpoint and no templates).
    create_default_host_endpoint: bool = True
    host_endpoint_templates: tuple[kcc.Template, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    log_level: str = "Info"
    node: NodeRunConfig | None = None
    policy: float | None = None            # a period when enabled
    workload_endpoint: float | None = None
    service_account: float | None = None
    namespace: float | None = None
    load_balancer: bool = False
    installation: bool = False      # pycalico's: IPPools from an operator.tigera.io Installation
    health_enabled: bool = True
    prometheus_port: int = 0
    compaction_period: float = DEFAULT_COMPACTION
    environment: dict[str, str] = field(default_factory=dict)

    def enabled(self) -> list[str]:
        names = [("node", self.node), ("policy", self.policy), ("workloadendpoint", self.workload_endpoint),
                 ("serviceaccount", self.service_account), ("namespace", self.namespace)]
        return ([n for n, v in names if v is not None] + (["loadbalancer"] if self.load_balancer else [])
                + (["installation"] if self.installation else []))


def _period(cfg: kcc.PeriodicControllerConfig | kcc.NodeControllerConfig | None) -> float:
    if cfg is None or cfg.reconciler_period is None:
        return DEFAULT_PERIOD
    return parse_duration(cfg.reconciler_period)


def merge(env: Mapping[str, str], datastore_type: str,
          spec: kcc.KubeControllersConfigurationSpec) -> tuple[RunConfig, kcc.KubeControllersConfigurationStatus]:
    """The running configuration and the status that reports it (runconfig.go ``mergeConfig``)."""
    used = {k: env[k] for k in ALL_ENVS if k in env}
    ac = spec.controllers
    sc = kcc.ControllersConfig()
    running = kcc.KubeControllersConfigurationSpec(controllers=sc)

    # Log level.
    if ENV_LOG_LEVEL in used:
        try:
            log_level(used[ENV_LOG_LEVEL])
        except ValueError as exc:
            raise ConfigError(f"invalid environment variable value {ENV_LOG_LEVEL}={used[ENV_LOG_LEVEL]!r}: "
                              f"{exc}") from exc
        level = used[ENV_LOG_LEVEL].strip().title()
    else:
        level = spec.log_severity_screen.value if spec.log_severity_screen else "Info"
    level = {"Warn": "Warning"}.get(level, level)
    running.log_severity_screen = kcc.LogSeverity(level) if level in kcc.LogSeverity._value2member_map_ else \
        kcc.LogSeverity.INFO

    # Which controllers.
    node_on = policy_on = wep_on = sa_on = ns_on = lb_on = inst_on = False
    if ENV_ENABLED_CONTROLLERS in used:
        for name in used[ENV_ENABLED_CONTROLLERS].split(","):
            if name == "workloadendpoint":
                wep_on = True
            elif name in ("profile", "namespace"):
                ns_on = True
            elif name == "policy":
                policy_on = True
            elif name == "node":
                node_on = True
            elif name == "serviceaccount":
                sa_on = True
            elif name == "loadbalancer":
                lb_on = True
            elif name == "installation":   # pycalico's: pools from an operator Installation
                inst_on = True
            elif name == "flannelmigration":
                raise ConfigError(f"invalid environment variable value {ENV_ENABLED_CONTROLLERS}: "
                                  f"cannot run flannelmigration with other controllers")
            else:
                raise ConfigError(f"Invalid controller '{name}' provided. ({ENV_ENABLED_CONTROLLERS}: one of node, "
                                  f"policy, namespace, serviceaccount, workloadendpoint, loadbalancer, installation)")
    else:
        node_on, policy_on, wep_on = ac.node is not None, ac.policy is not None, ac.workload_endpoint is not None
        sa_on, ns_on, lb_on = ac.service_account is not None, ac.namespace is not None, ac.load_balancer is not None

    env_period = _env_duration(ENV_RECONCILER_PERIOD, used[ENV_RECONCILER_PERIOD]) \
        if ENV_RECONCILER_PERIOD in used else None

    def periodic(on: bool, cfg: kcc.PeriodicControllerConfig | None) -> tuple[float | None,
                                                                               kcc.PeriodicControllerConfig | None]:
        if not on:
            return None, None
        if env_period is not None:
            return env_period, kcc.PeriodicControllerConfig(reconciler_period=format_duration(env_period))
        return _period(cfg), kcc.PeriodicControllerConfig(reconciler_period=cfg.reconciler_period if cfg else None)

    policy, sc.policy = periodic(policy_on, ac.policy)
    wep, sc.workload_endpoint = periodic(wep_on, ac.workload_endpoint)
    sa, sc.service_account = periodic(sa_on, ac.service_account)
    ns, sc.namespace = periodic(ns_on, ac.namespace)
    if lb_on:
        sc.load_balancer = kcc.LoadBalancerControllerConfig(
            assign_ips=(ac.load_balancer.assign_ips if ac.load_balancer and ac.load_balancer.assign_ips
                        else kcc.AssignIPs.ALL_SERVICES))

    # Compaction period, health, metrics.
    if ENV_COMPACTION_PERIOD in used:
        compaction = _env_duration(ENV_COMPACTION_PERIOD, used[ENV_COMPACTION_PERIOD])
    elif spec.etcd_v3_compaction_period is not None:
        compaction = parse_duration(spec.etcd_v3_compaction_period)
    else:
        compaction = DEFAULT_COMPACTION
    running.etcd_v3_compaction_period = format_duration(compaction)
    if ENV_HEALTH_ENABLED in used:
        health = _go_bool(ENV_HEALTH_ENABLED, used[ENV_HEALTH_ENABLED])
    else:
        health = spec.health_checks != kcc.EnabledDisabled.DISABLED
    running.health_checks = kcc.EnabledDisabled.ENABLED if health else kcc.EnabledDisabled.DISABLED
    # The API documents [Default: 9094]; 0 turns the metrics server off.
    port = spec.prometheus_metrics_port if spec.prometheus_metrics_port is not None else DEFAULT_METRICS_PORT
    running.prometheus_metrics_port = port
    running.controllers.migration = kcc.MigrationControllerConfig(
        policy_name_migrator=(kcc.EnabledDisabled.DISABLED if ac.migration and ac.migration.policy_name_migrator ==
                              kcc.EnabledDisabled.DISABLED else kcc.EnabledDisabled.ENABLED))

    node: NodeRunConfig | None = None
    if node_on:
        an = ac.node
        if datastore_type == "kubernetes":
            used["DATASTORE_TYPE"] = "kubernetes"
            sync = False
        elif ENV_SYNC_NODE_LABELS in used:
            sync = _go_bool(ENV_SYNC_NODE_LABELS, used[ENV_SYNC_NODE_LABELS])
        else:
            sync = not (an is not None and an.sync_labels == kcc.EnabledDisabled.DISABLED)
        if ENV_AUTO_HOST_ENDPOINTS in used:
            v = used[ENV_AUTO_HOST_ENDPOINTS].lower()
            if v not in ("enabled", "disabled"):
                raise ConfigError(f"invalid environment variable value {ENV_AUTO_HOST_ENDPOINTS}="
                                  f"{used[ENV_AUTO_HOST_ENDPOINTS]!r} (want Enabled or Disabled)")
            auto_hep = v == "enabled"
        else:
            auto_hep = bool(an and an.host_endpoint and an.host_endpoint.auto_create == kcc.EnabledDisabled.ENABLED)
        hep = an.host_endpoint if an is not None and ENV_AUTO_HOST_ENDPOINTS not in used else None
        default_hep = not (hep is not None and hep.create_default_host_endpoint == kcc.EnabledDisabled.DISABLED)
        templates = tuple(hep.templates or ()) if hep is not None else ()
        grace = an.leak_grace_period if an is not None else None
        node = NodeRunConfig(sync_labels=sync, delete_nodes=datastore_type != "kubernetes",
                             leak_grace_period=parse_duration(grace) if grace is not None else None,
                             reconciler_period=_period(an), auto_host_endpoints=auto_hep,
                             create_default_host_endpoint=default_hep, host_endpoint_templates=templates)
        sc.node = kcc.NodeControllerConfig(
            sync_labels=kcc.EnabledDisabled.ENABLED if sync else kcc.EnabledDisabled.DISABLED,
            host_endpoint=kcc.AutoHostEndpointConfig(
                auto_create=kcc.EnabledDisabled.ENABLED if auto_hep else kcc.EnabledDisabled.DISABLED,
                create_default_host_endpoint=(an.host_endpoint.create_default_host_endpoint
                                              if an and an.host_endpoint and
                                              an.host_endpoint.create_default_host_endpoint
                                              else kcc.EnabledDisabled.ENABLED)),
            leak_grace_period=grace)

    run = RunConfig(log_level=running.log_severity_screen.value, node=node, policy=policy, workload_endpoint=wep,
                    service_account=sa, namespace=ns, load_balancer=lb_on, installation=inst_on, health_enabled=health,
                    prometheus_port=port, compaction_period=compaction, environment=dict(used))
    return run, kcc.KubeControllersConfigurationStatus(running_config=running, environment_vars=used)


__all__ = ["ALL_ENVS", "ConfigError", "NodeRunConfig", "RunConfig", "format_duration", "merge", "parse_duration"]
