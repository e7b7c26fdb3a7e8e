"""KubeControllersConfiguration: how calico-kube-controllers runs (only ``default`` is read).

Calico's kube-controllers creates ``default`` with its defaults when it is
missing (:func:`default_configuration`), merges it with its environment
variables and writes the effective result to ``status.runningConfig`` and the
variables that shaped it to ``status.environmentVars``. Field list, defaults
and enums: api/pkg/apis/projectcalico/v3/kubecontrollersconfig.go and
kube-controllers/pkg/config/runconfig.go (``NewDefaultKubeControllersConfig``).
"""

from __future__ import annotations

from pydantic import Field

from libcalico.api import fields
from libcalico.api.fields import CalicoModel, EnabledDisabled, WireEnum
from libcalico.api.meta import ObjectMeta, Resource

DEFAULT_NAME = "default"


class LogSeverity(WireEnum):
    NONE = "None"
    DEBUG = "Debug"
    INFO = "Info"
    WARNING = "Warning"
    ERROR = "Error"
    FATAL = "Fatal"
    PANIC = "Panic"


class AssignIPs(WireEnum):
    ALL_SERVICES = "AllServices"
    REQUESTED_SERVICES_ONLY = "RequestedServicesOnly"


class Template(CalicoModel):
    generate_name: str | None = Field(default=None, max_length=253)
    interface_cidrs: list[fields.CIDR] | None = Field(default=None, alias="interfaceCIDRs")
    interface_pattern: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    node_selector: fields.SelectorText | None = None


class AutoHostEndpointConfig(CalicoModel):
    auto_create: EnabledDisabled | None = None
    create_default_host_endpoint: EnabledDisabled | None = None
    templates: list[Template] | None = None


class NodeControllerConfig(CalicoModel):
    reconciler_period: fields.Duration | None = None
    sync_labels: EnabledDisabled | None = None
    host_endpoint: AutoHostEndpointConfig | None = None
    leak_grace_period: fields.Duration | None = None


class PeriodicControllerConfig(CalicoModel):
    """Policy, WorkloadEndpoint, ServiceAccount and Namespace controllers: only a period."""

    reconciler_period: fields.Duration | None = None


class LoadBalancerControllerConfig(CalicoModel):
    assign_ips: AssignIPs | None = Field(default=None, alias="assignIPs")


class MigrationControllerConfig(CalicoModel):
    policy_name_migrator: EnabledDisabled | None = None


class ControllersConfig(CalicoModel):
    """A controller is enabled when its entry is present (``node: {}``), disabled when absent."""

    node: NodeControllerConfig | None = None
    policy: PeriodicControllerConfig | None = None
    workload_endpoint: PeriodicControllerConfig | None = None
    service_account: PeriodicControllerConfig | None = None
    namespace: PeriodicControllerConfig | None = None
    load_balancer: LoadBalancerControllerConfig | None = None
    migration: MigrationControllerConfig | None = None


class KubeControllersConfigurationSpec(CalicoModel):
    log_severity_screen: LogSeverity | None = None
    health_checks: EnabledDisabled | None = None
    etcd_v3_compaction_period: fields.Duration | None = Field(default=None, alias="etcdV3CompactionPeriod")
    prometheus_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    controllers: ControllersConfig = Field(default_factory=ControllersConfig)
    debug_profile_port: int | None = Field(default=None, ge=0, le=65535)


class KubeControllersConfigurationStatus(CalicoModel):
    running_config: KubeControllersConfigurationSpec | None = None
    environment_vars: dict[str, str] | None = None


class KubeControllersConfiguration(Resource):
    KIND = "KubeControllersConfiguration"
    PLURAL = "kubecontrollersconfigurations"
    spec: KubeControllersConfigurationSpec = Field(default_factory=KubeControllersConfigurationSpec)
    status: KubeControllersConfigurationStatus = Field(default_factory=KubeControllersConfigurationStatus)


def default_configuration() -> KubeControllersConfiguration:
    """``default`` as Calico creates it when it is missing (runconfig.go NewDefaultKubeControllersConfig)."""
    five = "5m0s"
    return KubeControllersConfiguration(
        metadata=ObjectMeta(name=DEFAULT_NAME),
        spec=KubeControllersConfigurationSpec(
            log_severity_screen=LogSeverity.INFO,
            health_checks=EnabledDisabled.ENABLED,
            etcd_v3_compaction_period="10m0s",
            controllers=ControllersConfig(
                node=NodeControllerConfig(
                    reconciler_period=five, sync_labels=EnabledDisabled.ENABLED,
                    host_endpoint=AutoHostEndpointConfig(auto_create=EnabledDisabled.DISABLED,
                                                         create_default_host_endpoint=EnabledDisabled.ENABLED),
                    leak_grace_period="15m0s"),
                policy=PeriodicControllerConfig(reconciler_period=five),
                workload_endpoint=PeriodicControllerConfig(reconciler_period=five),
                service_account=PeriodicControllerConfig(reconciler_period=five),
                namespace=PeriodicControllerConfig(reconciler_period=five),
                load_balancer=LoadBalancerControllerConfig(assign_ips=AssignIPs.ALL_SERVICES),
                migration=MigrationControllerConfig(policy_name_migrator=EnabledDisabled.ENABLED),
            )))


__all__ = ["DEFAULT_NAME", "AssignIPs", "AutoHostEndpointConfig", "ControllersConfig", "EnabledDisabled",
           "KubeControllersConfiguration", "KubeControllersConfigurationSpec", "KubeControllersConfigurationStatus",
           "LoadBalancerControllerConfig", "LogSeverity", "MigrationControllerConfig", "NodeControllerConfig",
           "PeriodicControllerConfig", "Template", "default_configuration"]
