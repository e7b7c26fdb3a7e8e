"""FelixConfiguration: the knobs of calico-felix, global (``default``) or per node (``node.<name>``).

Calico has close to two hundred fields here. The ones pycalico's Felix reads
are typed and checked; every other field name Calico defines is accepted as
given and kept, so a manifest written for Calico is never refused for a field
we do not use yet. A name Calico does not define is still refused.
Field list: api/pkg/apis/projectcalico/v3/felixconfig.go.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from libcalico.api import fields
from libcalico.api.bgp import ProgramClusterRoutes
from libcalico.api.fields import CalicoModel, EnabledDisabled, WireEnum
from libcalico.api.meta import Resource


class LogLevel(WireEnum):
    NONE = "None"
    DEBUG = "Debug"
    INFO = "Info"
    WARNING = "Warning"
    ERROR = "Error"
    FATAL = "Fatal"


class EndpointToHostAction(WireEnum):
    DROP = "Drop"
    ACCEPT = "Accept"
    RETURN = "Return"


class EnabledDisabledAuto(WireEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    AUTO = "Auto"


class RouteSource(WireEnum):
    CALICO_IPAM = "CalicoIPAM"
    WORKLOAD_IPS = "WorkloadIPs"


class FelixConfigurationSpec(CalicoModel):
    node_selector: fields.SelectorText | None = Field(default=None, alias="nodeSelector")
    use_internal_dataplane_driver: Any = Field(default=None, alias="useInternalDataplaneDriver")
    dataplane_driver: Any = Field(default=None, alias="dataplaneDriver")
    dataplane_watchdog_timeout: Any = Field(default=None, alias="dataplaneWatchdogTimeout")
    ipv6_support: bool | None = Field(default=None, alias="ipv6Support")
    route_refresh_interval: fields.Duration | None = Field(default=None, alias="routeRefreshInterval")
    interface_refresh_interval: fields.Duration | None = Field(default=None, alias="interfaceRefreshInterval")
    iptables_refresh_interval: Any = Field(default=None, alias="iptablesRefreshInterval")
    iptables_post_write_check_interval: Any = Field(default=None, alias="iptablesPostWriteCheckInterval")
    iptables_lock_probe_interval: Any = Field(default=None, alias="iptablesLockProbeInterval")
    feature_detect_override: Any = Field(default=None, alias="featureDetectOverride")
    feature_gates: Any = Field(default=None, alias="featureGates")
    ipsets_refresh_interval: Any = Field(default=None, alias="ipsetsRefreshInterval")
    max_ipset_size: Any = Field(default=None, alias="maxIpsetSize")
    iptables_backend: Any = Field(default=None, alias="iptablesBackend")
    xdp_refresh_interval: Any = Field(default=None, alias="xdpRefreshInterval")
    netlink_timeout: Any = Field(default=None, alias="netlinkTimeout")
    metadata_addr: Any = Field(default=None, alias="metadataAddr")
    metadata_port: Any = Field(default=None, alias="metadataPort")
    openstack_region: Any = Field(default=None, alias="openstackRegion")
    interface_prefix: str = Field(default="", alias="interfacePrefix")
    interface_exclude: Any = Field(default=None, alias="interfaceExclude")
    chain_insert_mode: Any = Field(default=None, alias="chainInsertMode")
    default_endpoint_to_host_action: EndpointToHostAction | None = Field(default=None, alias="defaultEndpointToHostAction")
    iptables_filter_allow_action: Any = Field(default=None, alias="iptablesFilterAllowAction")
    iptables_mangle_allow_action: Any = Field(default=None, alias="iptablesMangleAllowAction")
    iptables_filter_deny_action: Any = Field(default=None, alias="iptablesFilterDenyAction")
    log_prefix: Any = Field(default=None, alias="logPrefix")
    log_action_rate_limit: Any = Field(default=None, alias="logActionRateLimit")
    log_action_rate_limit_burst: Any = Field(default=None, alias="logActionRateLimitBurst")
    log_file_path: Any = Field(default=None, alias="logFilePath")
    log_severity_file: LogLevel | None = Field(default=None, alias="logSeverityFile")
    log_severity_screen: LogLevel | None = Field(default=None, alias="logSeverityScreen")
    log_severity_sys: LogLevel | None = Field(default=None, alias="logSeveritySys")
    log_debug_filename_regex: Any = Field(default=None, alias="logDebugFilenameRegex")
    ipip_enabled: bool | None = Field(default=None, alias="ipipEnabled")
    ipip_mtu: int | None = Field(default=None, ge=0, le=65535, alias="ipipMTU")
    vxlan_enabled: bool | None = Field(default=None, alias="vxlanEnabled")
    vxlan_mtu: int | None = Field(default=None, ge=0, le=65535, alias="vxlanMTU")
    vxlan_mtuv6: int | None = Field(default=None, ge=0, le=65535, alias="vxlanMTUV6")
    vxlan_port: int | None = Field(default=None, ge=1, le=65535, alias="vxlanPort")
    vxlan_vni: int | None = Field(default=None, ge=1, le=16777215, alias="vxlanVNI")
    allow_vxlan_packets_from_workloads: Any = Field(default=None, alias="allowVXLANPacketsFromWorkloads")
    allow_ipip_packets_from_workloads: Any = Field(default=None, alias="allowIPIPPacketsFromWorkloads")
    reporting_interval: fields.Duration | None = Field(default=None, alias="reportingInterval")
    reporting_ttl: Any = Field(default=None, alias="reportingTTL")
    endpoint_reporting_enabled: Any = Field(default=None, alias="endpointReportingEnabled")
    endpoint_reporting_delay: Any = Field(default=None, alias="endpointReportingDelay")
    endpoint_status_path_prefix: Any = Field(default=None, alias="endpointStatusPathPrefix")
    iptables_mark_mask: Any = Field(default=None, alias="iptablesMarkMask")
    disable_conntrack_invalid_check: Any = Field(default=None, alias="disableConntrackInvalidCheck")
    health_enabled: bool | None = Field(default=None, alias="healthEnabled")
    health_host: str | None = Field(default=None, alias="healthHost")
    health_port: int | None = Field(default=None, ge=0, le=65535, alias="healthPort")
    health_timeout_overrides: Any = Field(default=None, alias="healthTimeoutOverrides")
    prometheus_metrics_enabled: bool | None = Field(default=None, alias="prometheusMetricsEnabled")
    prometheus_metrics_host: str = Field(default="", alias="prometheusMetricsHost")
    prometheus_metrics_port: int | None = Field(default=None, ge=0, le=65535, alias="prometheusMetricsPort")
    prometheus_go_metrics_enabled: Any = Field(default=None, alias="prometheusGoMetricsEnabled")
    prometheus_process_metrics_enabled: Any = Field(default=None, alias="prometheusProcessMetricsEnabled")
    prometheus_wire_guard_metrics_enabled: Any = Field(default=None, alias="prometheusWireGuardMetricsEnabled")
    prometheus_metrics_ca_file: Any = Field(default=None, alias="prometheusMetricsCAFile")
    prometheus_metrics_cert_file: Any = Field(default=None, alias="prometheusMetricsCertFile")
    prometheus_metrics_key_file: Any = Field(default=None, alias="prometheusMetricsKeyFile")
    prometheus_metrics_client_auth: Any = Field(default=None, alias="prometheusMetricsClientAuth")
    failsafe_inbound_host_ports: Any = Field(default=None, alias="failsafeInboundHostPorts")
    failsafe_outbound_host_ports: Any = Field(default=None, alias="failsafeOutboundHostPorts")
    kube_node_port_ranges: Any = Field(default=None, alias="kubeNodePortRanges")
    policy_sync_path_prefix: Any = Field(default=None, alias="policySyncPathPrefix")
    usage_reporting_enabled: Any = Field(default=None, alias="usageReportingEnabled")
    usage_reporting_initial_delay: Any = Field(default=None, alias="usageReportingInitialDelay")
    usage_reporting_interval: Any = Field(default=None, alias="usageReportingInterval")
    nat_port_range: Any = Field(default=None, alias="natPortRange")
    nat_outgoing_address: fields.IPv4Addr = Field(default="", alias="natOutgoingAddress")
    nat_outgoing_exclusions: Any = Field(default=None, alias="natOutgoingExclusions")
    device_route_source_address: Any = Field(default=None, alias="deviceRouteSourceAddress")
    device_route_source_address_i_pv6: Any = Field(default=None, alias="deviceRouteSourceAddressIPv6")
    device_route_protocol: int | None = Field(default=None, ge=0, le=255, alias="deviceRouteProtocol")
    remove_external_routes: bool | None = Field(default=None, alias="removeExternalRoutes")
    program_cluster_routes: ProgramClusterRoutes | None = Field(default=None, alias="programClusterRoutes")
    ip_forwarding: EnabledDisabled | None = Field(default=None, alias="ipForwarding")
    external_nodes_list: Any = Field(default=None, alias="externalNodesList")
    debug_memory_profile_path: Any = Field(default=None, alias="debugMemoryProfilePath")
    debug_disable_log_dropping: Any = Field(default=None, alias="debugDisableLogDropping")
    debug_simulate_calc_graph_hang_after: Any = Field(default=None, alias="debugSimulateCalcGraphHangAfter")
    debug_simulate_dataplane_hang_after: Any = Field(default=None, alias="debugSimulateDataplaneHangAfter")
    debug_simulate_dataplane_apply_delay: Any = Field(default=None, alias="debugSimulateDataplaneApplyDelay")
    debug_host: Any = Field(default=None, alias="debugHost")
    debug_port: Any = Field(default=None, alias="debugPort")
    iptables_nat_outgoing_interface_filter: Any = Field(default=None, alias="iptablesNATOutgoingInterfaceFilter")
    sidecar_acceleration_enabled: Any = Field(default=None, alias="sidecarAccelerationEnabled")
    xdp_enabled: Any = Field(default=None, alias="xdpEnabled")
    generic_xdp_enabled: Any = Field(default=None, alias="genericXDPEnabled")
    nftables_mode: EnabledDisabledAuto | None = Field(default=None, alias="nftablesMode")
    nftables_flow_table_offload: Any = Field(default=None, alias="nftablesFlowTableOffload")
    nftables_flow_table_data_iface_pattern: Any = Field(default=None, alias="nftablesFlowTableDataIfacePattern")
    nftables_refresh_interval: fields.Duration | None = Field(default=None, alias="nftablesRefreshInterval")
    nftables_filter_allow_action: Any = Field(default=None, alias="nftablesFilterAllowAction")
    nftables_mangle_allow_action: Any = Field(default=None, alias="nftablesMangleAllowAction")
    nftables_filter_deny_action: Any = Field(default=None, alias="nftablesFilterDenyAction")
    nftables_mark_mask: Any = Field(default=None, alias="nftablesMarkMask")
    bpf_enabled: bool | None = Field(default=None, alias="bpfEnabled")
    bpf_overlay_host_source_ip: Any = Field(default=None, alias="bpfOverlayHostSourceIP")
    bpf_disable_unprivileged: Any = Field(default=None, alias="bpfDisableUnprivileged")
    bpf_jit_hardening: Any = Field(default=None, alias="bpfJITHardening")
    bpf_log_level: Any = Field(default=None, alias="bpfLogLevel")
    bpf_conntrack_log_level: Any = Field(default=None, alias="bpfConntrackLogLevel")
    bpf_conntrack_mode: Any = Field(default=None, alias="bpfConntrackMode")
    bpf_conntrack_timeouts: Any = Field(default=None, alias="bpfConntrackTimeouts")
    bpf_ip_frag_timeout: Any = Field(default=None, alias="bpfIPFragTimeout")
    bpf_log_filters: Any = Field(default=None, alias="bpfLogFilters")
    bpf_ctlb_log_filter: Any = Field(default=None, alias="bpfCTLBLogFilter")
    bpf_data_iface_pattern: Any = Field(default=None, alias="bpfDataIfacePattern")
    bpf_l3_iface_pattern: Any = Field(default=None, alias="bpfL3IfacePattern")
    bpf_connect_time_load_balancing_enabled: Any = Field(default=None, alias="bpfConnectTimeLoadBalancingEnabled")
    bpf_connect_time_load_balancing: Any = Field(default=None, alias="bpfConnectTimeLoadBalancing")
    bpf_host_networked_nat_without_ctlb: Any = Field(default=None, alias="bpfHostNetworkedNATWithoutCTLB")
    bpf_external_service_mode: Any = Field(default=None, alias="bpfExternalServiceMode")
    bpf_dsr_optout_cid_rs: Any = Field(default=None, alias="bpfDSROptoutCIDRs")
    bpf_ext_to_service_connmark: Any = Field(default=None, alias="bpfExtToServiceConnmark")
    bpf_kube_proxy_iptables_cleanup_enabled: Any = Field(default=None, alias="bpfKubeProxyIptablesCleanupEnabled")
    bpf_kube_proxy_min_sync_period: Any = Field(default=None, alias="bpfKubeProxyMinSyncPeriod")
    bpf_kube_proxy_healthz_port: Any = Field(default=None, alias="bpfKubeProxyHealthzPort")
    bpf_psnat_ports: Any = Field(default=None, alias="bpfPSNATPorts")
    bpf_map_size_nat_frontend: Any = Field(default=None, alias="bpfMapSizeNATFrontend")
    bpf_map_size_nat_backend: Any = Field(default=None, alias="bpfMapSizeNATBackend")
    bpf_map_size_nat_affinity: Any = Field(default=None, alias="bpfMapSizeNATAffinity")
    bpf_map_size_route: Any = Field(default=None, alias="bpfMapSizeRoute")
    bpf_map_size_conntrack: Any = Field(default=None, alias="bpfMapSizeConntrack")
    bpf_map_size_per_cpu_conntrack: Any = Field(default=None, alias="bpfMapSizePerCpuConntrack")
    bpf_map_size_conntrack_scaling: Any = Field(default=None, alias="bpfMapSizeConntrackScaling")
    bpf_map_size_conntrack_cleanup_queue: Any = Field(default=None, alias="bpfMapSizeConntrackCleanupQueue")
    bpf_map_size_ip_sets: Any = Field(default=None, alias="bpfMapSizeIPSets")
    bpf_map_size_if_state: Any = Field(default=None, alias="bpfMapSizeIfState")
    bpf_host_conntrack_bypass: Any = Field(default=None, alias="bpfHostConntrackBypass")
    bpf_ip_fragment_reassembly_enabled: Any = Field(default=None, alias="bpfIPFragmentReassemblyEnabled")
    bpf_enforce_rpf: Any = Field(default=None, alias="bpfEnforceRPF")
    bpf_policy_debug_enabled: Any = Field(default=None, alias="bpfPolicyDebugEnabled")
    bpf_force_track_packets_from_ifaces: Any = Field(default=None, alias="bpfForceTrackPacketsFromIfaces")
    bpf_disable_gro_for_ifaces: Any = Field(default=None, alias="bpfDisableGROForIfaces")
    bpf_exclude_cid_rs_from_nat: Any = Field(default=None, alias="bpfExcludeCIDRsFromNAT")
    bpf_export_buffer_size_mb: Any = Field(default=None, alias="bpfExportBufferSizeMB")
    istio_ambient_mode: Any = Field(default=None, alias="istioAmbientMode")
    istio_dscp_mark: Any = Field(default=None, alias="istioDSCPMark")
    cgroup_v2_path: Any = Field(default=None, alias="cgroupV2Path")
    flow_logs_policy_evaluation_mode: Any = Field(default=None, alias="flowLogsPolicyEvaluationMode")
    bpf_redirect_to_peer: Any = Field(default=None, alias="bpfRedirectToPeer")
    bpf_attach_type: Any = Field(default=None, alias="bpfAttachType")
    flow_logs_flush_interval: Any = Field(default=None, alias="flowLogsFlushInterval")
    flow_logs_collector_debug_trace: Any = Field(default=None, alias="flowLogsCollectorDebugTrace")
    flow_logs_goldmane_server: Any = Field(default=None, alias="flowLogsGoldmaneServer")
    flow_logs_local_reporter: Any = Field(default=None, alias="flowLogsLocalReporter")
    bpf_profiling: Any = Field(default=None, alias="bpfProfiling")
    route_source: RouteSource | None = Field(default=None, alias="routeSource")
    route_table_ranges: Any = Field(default=None, alias="routeTableRanges")
    route_table_range: Any = Field(default=None, alias="routeTableRange")
    route_sync_disabled: Any = Field(default=None, alias="routeSyncDisabled")
    ipv4_normal_route_priority: Any = Field(default=None, alias="ipv4NormalRoutePriority")
    ipv4_elevated_route_priority: Any = Field(default=None, alias="ipv4ElevatedRoutePriority")
    ipv6_normal_route_priority: Any = Field(default=None, alias="ipv6NormalRoutePriority")
    ipv6_elevated_route_priority: Any = Field(default=None, alias="ipv6ElevatedRoutePriority")
    live_migration_route_convergence_time: Any = Field(default=None, alias="liveMigrationRouteConvergenceTime")
    wireguard_enabled: bool | None = Field(default=None, alias="wireguardEnabled")
    wireguard_enabled_v6: Any = Field(default=None, alias="wireguardEnabledV6")
    wireguard_threading_enabled: Any = Field(default=None, alias="wireguardThreadingEnabled")
    wireguard_listening_port: Any = Field(default=None, alias="wireguardListeningPort")
    wireguard_listening_port_v6: Any = Field(default=None, alias="wireguardListeningPortV6")
    wireguard_routing_rule_priority: Any = Field(default=None, alias="wireguardRoutingRulePriority")
    wireguard_interface_name: Any = Field(default=None, alias="wireguardInterfaceName")
    wireguard_interface_name_v6: Any = Field(default=None, alias="wireguardInterfaceNameV6")
    wireguard_mtu: Any = Field(default=None, alias="wireguardMTU")
    wireguard_mtuv6: Any = Field(default=None, alias="wireguardMTUV6")
    wireguard_host_encryption_enabled: Any = Field(default=None, alias="wireguardHostEncryptionEnabled")
    wireguard_keep_alive: Any = Field(default=None, alias="wireguardKeepAlive")
    aws_src_dst_check: Any = Field(default=None, alias="awsSrcDstCheck")
    service_loop_prevention: Any = Field(default=None, alias="serviceLoopPrevention")
    workload_source_spoofing: Any = Field(default=None, alias="workloadSourceSpoofing")
    mtu_iface_pattern: Any = Field(default=None, alias="mtuIfacePattern")
    floating_i_ps: Any = Field(default=None, alias="floatingIPs")
    local_subnet_l2_reachability: Any = Field(default=None, alias="localSubnetL2Reachability")
    local_subnet_l2_reachability_refresh_interval: Any = Field(default=None, alias="localSubnetL2ReachabilityRefreshInterval")
    windows_manage_firewall_rules: Any = Field(default=None, alias="windowsManageFirewallRules")
    go_gc_threshold: Any = Field(default=None, alias="goGCThreshold")
    go_memory_limit_mb: Any = Field(default=None, alias="goMemoryLimitMB")
    go_max_procs: Any = Field(default=None, alias="goMaxProcs")
    require_mtu_file: Any = Field(default=None, alias="requireMTUFile")
    bpf_maglev_max_endpoints_per_service: Any = Field(default=None, alias="bpfMaglevMaxEndpointsPerService")
    bpf_maglev_max_services: Any = Field(default=None, alias="bpfMaglevMaxServices")


class FelixConfiguration(Resource):
    KIND = "FelixConfiguration"
    PLURAL = "felixconfigurations"
    spec: FelixConfigurationSpec = Field(default_factory=FelixConfigurationSpec)
