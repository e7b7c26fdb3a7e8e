"""calico-kube-controllers: kopf informs, a work queue reconciles, a Lease decides who acts.

The shape (docs/kube-controllers.md has the whole picture):

* **kopf is the informer.** Its ``on.event`` handlers (the low-level kind: no
  finalizers, no progress annotations written on anyone's objects) only put a
  key on the :class:`~controller.workqueue.WorkQueue`: ``node/<name>`` when a
  Kubernetes Node changes or goes, ``ipam`` when a pod goes, ``config`` when
  KubeControllersConfiguration changes. kopf runs standalone (no peering
  objects): who acts is the Lease's business.
* **Reconcilers read the current state** and make the world match; they never
  trust the event that woke them. ``node/<name>`` deletes the Calico Node of a
  Kubernetes Node that is gone (etcd mode; on the Kubernetes datastore the two
  are one object) and asks for an ``ipam`` sync; ``ipam`` is
  :class:`~controller.ipam_gc.IPAMGarbageCollector`'s scan, requeued when a
  leak candidate's grace period ends and every ``reconcilerPeriod`` (Calico's
  periodic full sync); ``config`` re-reads ``default`` and writes its status.
  On etcd, ``namespace/``, ``serviceaccount/``, ``networkpolicy/``, ``pod/`` and
  ``nodelabels/`` keys (and their full syncs) copy Kubernetes state into Calico's
  datastore (:mod:`controller.profiles`, :mod:`controller.etcd_sync`). With the node
  controller, a syncer on Calico Nodes and HostEndpoints queues ``hostendpoints`` and
  ``hostendpoints/<node>``: the automatic host endpoints (:mod:`controller.hostendpoints`).
* **Leader election** with a ``coordination.k8s.io`` Lease through
  kubernetes-asyncio's ``leaderelection`` (client-go's algorithm): a replica
  starts informing and reconciling only once it holds the Lease, and stops
  (raising :class:`LeadershipLost`, so the daemon exits and is restarted)
  when it cannot renew it. Two replicas never both act; when the leader dies,
  the other takes the Lease once it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
import prometheus_client as prom
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock import leaselock

from libcalico import client as calico_client
from libcalico import api, ipam
from libcalico.api import kubecontrollers as kcc
from libcalico.backend.api import Backend
from libcalico.daemon import Health, log_level
from libcalico.errors import CorruptEntry, NotFound
from libcalico.model import ResourceKey
from libcalico.watching import Syncer

from controller import config as run_config
from controller.ipam_gc import IPAMGarbageCollector
from controller.kube import KubeClient
from controller import installation
from controller.etcd_sync import NodeLabelSync, PolicySync, WorkloadEndpointSync
from controller import hostendpoints
from controller.profiles import ProfileSync
from controller.workqueue import WorkQueue

log = logging.getLogger(__name__)

KEY_IPAM = "ipam"
KEY_CONFIG = "config"
KEY_PROFILES = "profiles"
NODE_PREFIX = "node/"
NAMESPACE_PREFIX = "namespace/"
SERVICEACCOUNT_PREFIX = "serviceaccount/"
INSTALLATION_PREFIX = "installation/"
KEY_POLICIES = "policies"
POLICY_PREFIX = "networkpolicy/"
KEY_WORKLOAD_ENDPOINTS = "workloadendpoints"
POD_PREFIX = "pod/"
KEY_NODE_LABELS = "nodelabels"
NODE_LABELS_PREFIX = "nodelabels/"
KOPF_EXIT_TIMEOUT = 5.0


class LeadershipLost(RuntimeError):
    """The Lease could not be renewed: this replica must stop acting (and is restarted)."""


class ConfigChanged(RuntimeError):
    """The running configuration changed: Calico restarts to apply it; so do we."""


@dataclass(frozen=True)
class LeaseSettings:
    """client-go's defaults are 15 s / 10 s / 2 s; tests shorten them."""

    name: str = "calico-kube-controllers"
    namespace: str = "kube-system"
    identity: str = ""
    lease_duration: int = 15           # whole seconds: the Lease stores leaseDurationSeconds
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def default_identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4()}"


class KubeControllers:
    """One replica of calico-kube-controllers (see the module docstring)."""

    def __init__(self, *, backend: Backend, kube_configuration: k8s.Configuration, datastore_type: str,
                 env: Mapping[str, str], lease: LeaseSettings | None = LeaseSettings(),
                 registry: prom.CollectorRegistry | None = None, health: Health | None = None,
                 on_signal: Callable[[signal.Signals], None] | None = None,
                 kopf_settings: Callable[[kopf.OperatorSettings], None] | None = None,
                 set_log_level: bool = False) -> None:
        self.backend = backend
        self.calico = calico_client.Client(backend)
        self.kube = KubeClient(kube_configuration)
        self.datastore_type = datastore_type
        self.env = dict(env)
        self.lease = lease
        self.registry = registry
        self.health = health
        self.on_signal = on_signal
        self.kopf_settings = kopf_settings
        self.identity = (lease.identity if lease and lease.identity else default_identity())
        self.queue: WorkQueue[str] = WorkQueue("kube-controllers")
        self.run_config: run_config.RunConfig | None = None
        self.gc: IPAMGarbageCollector | None = None
        self.profiles: ProfileSync | None = None
        self.installations: installation.InstallationSync | None = None
        self.policies: PolicySync | None = None
        self.endpoints: WorkloadEndpointSync | None = None
        self.node_labels: NodeLabelSync | None = None
        self.auto_heps: hostendpoints.AutoHostEndpoints | None = None
        self.seen: list[str] = []   # the keys reconciled lately, oldest first (for tests and debugging)
        self.leading = asyncio.Event()
        self.informing = asyncio.Event()  # kopf's watches are up
        self._kopf_stop = asyncio.Event()
        self._config_changed = asyncio.Event()
        self.set_log_level = set_log_level

    # --- configuration ---------------------------------------------------------------------

    async def load_config(self) -> run_config.RunConfig:
        """Read (or create) ``default``, merge with the environment, write the status; the result.

        A ``default`` that does not parse changes nothing: the error (naming the field) is
        logged and, on the Kubernetes datastore, posted as a Warning Event on the object;
        the running configuration stays (Calico's defaults when there is none yet)."""
        try:
            res: api.Resource = await self.calico.get(kcc.KubeControllersConfiguration, kcc.DEFAULT_NAME)
        except CorruptEntry as exc:
            log.error("KubeControllersConfiguration(default) is invalid, keeping the running configuration: %s",
                      "; ".join(exc.reasons))
            await self._warn_invalid(str(exc))
            if self.run_config is not None:
                return self.run_config
            run, _ = run_config.merge(self.env, self.datastore_type, kcc.default_configuration().spec)
            return run
        except NotFound:
            log.info("KubeControllersConfiguration(default) not found; creating it with Calico's defaults")
            try:
                res = await self.calico.create(kcc.default_configuration())
            except Exception:
                res = await self.calico.get(kcc.KubeControllersConfiguration, kcc.DEFAULT_NAME)
        assert isinstance(res, kcc.KubeControllersConfiguration)
        run, status = run_config.merge(self.env, self.datastore_type, res.spec)
        if res.status != status:
            await self.calico.update(res.model_copy(update={"status": status}))
        return run

    async def _warn_invalid(self, message: str) -> None:
        if self.datastore_type != "kubernetes":
            return
        group = self.backend_group() or "crd.projectcalico.org/v1"
        event = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(generate_name="kubecontrollersconfiguration-default-"),
            involved_object=k8s.V1ObjectReference(api_version=group, kind=kcc.KubeControllersConfiguration.KIND,
                                                  name=kcc.DEFAULT_NAME),
            reason="InvalidConfiguration", message=message[:1024], type="Warning",
            source=k8s.V1EventSource(component="calico-kube-controllers"))
        try:
            await k8s.CoreV1Api(self.kube.api).create_namespaced_event("default", event)
        except Exception as exc:  # the warning is best effort; the log line above is the record
            log.warning("could not post the Event about KubeControllersConfiguration(default): %s", exc)

    # --- reconcilers -----------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        self.seen.append(key)
        if len(self.seen) > 1000:
            del self.seen[:500]
        if key == KEY_IPAM:
            return await self._reconcile_ipam()
        if key == KEY_CONFIG:
            run = await self.load_config()
            if self.run_config is not None and run != self.run_config:
                # Not raised here: the queue would retry it. act() ends on this event instead.
                log.warning("Config changed (%s); restarting to apply it", ", ".join(run.enabled()) or "none")
                self._config_changed.set()
            return None
        if self.profiles is not None and self.run_config is not None:
            run = self.run_config
            if key == KEY_PROFILES:
                await self.profiles.full_sync(namespaces=run.namespace is not None,
                                              serviceaccounts=run.service_account is not None)
                return min(p for p in (run.namespace, run.service_account) if p is not None)
            if key.startswith(NAMESPACE_PREFIX):
                await self.profiles.namespace(key.removeprefix(NAMESPACE_PREFIX))
                return None
            if key.startswith(SERVICEACCOUNT_PREFIX):
                ns, _, name = key.removeprefix(SERVICEACCOUNT_PREFIX).partition("/")
                await self.profiles.serviceaccount(ns, name)
                return None
        if self.run_config is not None:
            done, requeue = await self._reconcile_etcd_sync(key, self.run_config)
            if done:
                return requeue
        if self.auto_heps is not None:
            if key == hostendpoints.KEY_HOST_ENDPOINTS:
                await self.auto_heps.full_sync()
                return hostendpoints.SYNC_PERIOD
            if key.startswith(hostendpoints.HOST_ENDPOINTS_PREFIX):
                await self.auto_heps.node(key.removeprefix(hostendpoints.HOST_ENDPOINTS_PREFIX))
                return None
        if key.startswith(INSTALLATION_PREFIX) and self.installations is not None:
            await self.installations.reconcile(key.removeprefix(INSTALLATION_PREFIX))
            return None
        if key.startswith(NODE_PREFIX):
            await self._reconcile_node(key.removeprefix(NODE_PREFIX))
            return None
        log.warning("unknown work queue key %r; dropped", key)
        return None

    async def _reconcile_etcd_sync(self, key: str, run: run_config.RunConfig) -> tuple[bool, float | None]:
        """The etcd-mode copies (policy, workloadendpoint, node labels): (handled, requeue after)."""
        if self.policies is not None and run.policy is not None:
            if key == KEY_POLICIES:
                await self.policies.full_sync()
                return True, run.policy
            if key.startswith(POLICY_PREFIX):
                ns, _, name = key.removeprefix(POLICY_PREFIX).partition("/")
                await self.policies.policy(ns, name)
                return True, None
        if self.endpoints is not None and run.workload_endpoint is not None:
            if key == KEY_WORKLOAD_ENDPOINTS:
                await self.endpoints.full_sync()
                return True, run.workload_endpoint
            if key.startswith(POD_PREFIX):
                ns, _, name = key.removeprefix(POD_PREFIX).partition("/")
                await self.endpoints.pod(ns, name)
                return True, None
        if self.node_labels is not None and run.node is not None:
            if key == KEY_NODE_LABELS:
                await self.node_labels.full_sync()
                return True, run.node.reconciler_period or None
            if key.startswith(NODE_LABELS_PREFIX):
                await self.node_labels.node(key.removeprefix(NODE_LABELS_PREFIX))
                return True, None
        return False, None

    async def _reconcile_node(self, name: str) -> None:
        if await self.kube.get_node(name) is not None:
            return
        node_cfg = self.run_config.node if self.run_config else None
        if node_cfg is not None and node_cfg.delete_nodes:
            for cnode in (await self.calico.list(api.Node)).items:
                assert isinstance(cnode, api.Node)
                refs = [r.node_name for r in cnode.spec.orch_refs if r.orchestrator.lower() == "k8s"]
                if name in refs:
                    log.info("Deleting Calico node %s: its Kubernetes node %s is gone", cnode.name, name)
                    with contextlib.suppress(NotFound):
                        await self.calico.delete(api.Node, cnode.name)
        self.queue.add(KEY_IPAM)

    async def _reconcile_ipam(self) -> float | None:
        assert self.gc is not None and self.run_config is not None and self.run_config.node is not None
        result = await self.gc.sync()
        period = self.run_config.node.reconciler_period
        waits = [w for w in (result.requeue_after, period) if w]
        return min(waits) if waits else None

    # --- informers (kopf) ------------------------------------------------------------------

    def _registry(self) -> kopf.OperatorRegistry:
        registry = kopf.OperatorRegistry()
        conf = self.kube.configuration

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            token = (conf.api_key or {}).get("authorization", "") or (conf.api_key or {}).get("BearerToken", "")
            scheme, _, value = token.partition(" ")
            return kopf.ConnectionInfo(
                server=conf.host or "", ca_path=conf.ssl_ca_cert, insecure=not conf.verify_ssl,
                certificate_path=conf.cert_file, private_key_path=conf.key_file,
                scheme=scheme if value else None, token=value if value else (token or None))

        @kopf.on.startup(registry=registry)
        def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.posting.level = logging.WARNING
            settings.peering.standalone = True
            settings.watching.server_timeout = 300
            settings.scanning.disabled = True
            settings.process.ultimate_exiting_timeout = KOPF_EXIT_TIMEOUT
            if self.kopf_settings is not None:
                self.kopf_settings(settings)

        run = self.run_config
        if run is not None and run.node is not None:
            @kopf.on.event("", "v1", "nodes", registry=registry)
            def node_event(type: str | None, name: str, **_: Any) -> None:
                if type in ("DELETED", None):
                    self.queue.add(NODE_PREFIX + name)
                if type != "DELETED" and self.node_labels is not None:
                    self.queue.add(NODE_LABELS_PREFIX + name)

        if (run is not None and run.node is not None) or self.endpoints is not None:
            @kopf.on.event("", "v1", "pods", registry=registry)
            def pod_event(type: str | None, name: str, namespace: str | None, **_: Any) -> None:
                if type == "DELETED" and run is not None and run.node is not None:
                    self.queue.add(KEY_IPAM)
                if type != "DELETED" and self.endpoints is not None:
                    self.queue.add(f"{POD_PREFIX}{namespace or ''}/{name}")

        if self.policies is not None:
            @kopf.on.event("networking.k8s.io", "v1", "networkpolicies", registry=registry)
            def networkpolicy_event(name: str, namespace: str | None, **_: Any) -> None:
                self.queue.add(f"{POLICY_PREFIX}{namespace or ''}/{name}")

        if self.profiles is not None and run is not None:
            if run.namespace is not None:
                @kopf.on.event("", "v1", "namespaces", registry=registry)
                def namespace_event(name: str, **_: Any) -> None:
                    self.queue.add(NAMESPACE_PREFIX + name)

            if run.service_account is not None:
                @kopf.on.event("", "v1", "serviceaccounts", registry=registry)
                def serviceaccount_event(name: str, namespace: str | None, **_: Any) -> None:
                    self.queue.add(f"{SERVICEACCOUNT_PREFIX}{namespace or ''}/{name}")

        if self.installations is not None:
            @kopf.on.event(installation.GROUP, installation.VERSION, installation.PLURAL, registry=registry)
            def installation_event(name: str, **_: Any) -> None:
                self.queue.add(INSTALLATION_PREFIX + name)

        if self.datastore_type == "kubernetes":
            group, version = (self.backend_group() or "crd.projectcalico.org/v1").split("/")

            @kopf.on.event(group, version, kcc.KubeControllersConfiguration.PLURAL, registry=registry)
            def config_event(name: str, **_: Any) -> None:
                if name == kcc.DEFAULT_NAME:
                    self.queue.add(KEY_CONFIG)
        return registry

    def backend_group(self) -> str:
        return str(getattr(self.backend, "api_group", "") or "")

    async def _kopf(self) -> None:
        """kopf's root tasks, run and stopped here rather than by ``kopf.run_tasks``.

        ``run_tasks`` ends by cancelling every task of the event loop that it did not
        see start ("the loop is not fully ours", says kopf): the other replica in a
        test, the daemon's own roots. So the roots are awaited here and stopped
        through kopf's stop flag, which lets each of them close its watches.
        """
        ready = asyncio.Event()
        registry = self._registry()
        tasks = await kopf.spawn_tasks(registry=registry, clusterwide=True, standalone=True,
                                       stop_flag=self._kopf_stop, ready_flag=ready)
        self._restore_signals()
        waiter = asyncio.create_task(self._set_when(ready, self.informing))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise RuntimeError(f"the informers (kopf) stopped: {t.exception()}") from t.exception()
            raise RuntimeError("the informers (kopf) stopped")
        finally:
            waiter.cancel()
            self.informing.clear()
            # As run_tasks does: the stop flag ends kopf's stop-flag checker (and would stop
            # daemons gracefully; there are none); the other roots run until cancelled.
            self._kopf_stop.set()
            await asyncio.wait(tasks, timeout=KOPF_EXIT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=KOPF_EXIT_TIMEOUT)

    @staticmethod
    async def _set_when(src: asyncio.Event, dst: asyncio.Event) -> None:
        await src.wait()
        dst.set()

    def _restore_signals(self) -> None:
        """kopf takes SIGINT and SIGTERM for itself; the daemon's shutdown owns them."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
                if self.on_signal is not None:
                    loop.add_signal_handler(sig, self.on_signal, sig)

    # --- running ---------------------------------------------------------------------------

    async def act(self) -> None:
        """Everything a leader does, until cancelled (or a part of it fails)."""
        self.run_config = await self.load_config()
        run = self.run_config
        if self.set_log_level:  # the process's level, as Calico applies logSeverityScreen
            logging.getLogger().setLevel(log_level(run.log_level) if run.log_level != "None" else logging.CRITICAL)
        log.info("Running controllers: %s (datastore %s)", ", ".join(run.enabled()) or "none", self.datastore_type)
        if run.node is not None:
            self.gc = IPAMGarbageCollector(ipam_=ipam.IPAM(self.backend), backend=self.backend, kube=self.kube,
                                           datastore_type=self.datastore_type,
                                           leak_grace_period=run.node.leak_grace_period)
            if self.registry is not None:
                self.gc.metrics.register(self.registry)
            log.info("Will run periodic IPAM sync every %s", run_config.format_duration(run.node.reconciler_period))
            self.queue.add(KEY_IPAM)   # the start-of-day sweep
            # Always, as Calico's node controller: with autoCreate off it deletes the ones it made.
            node = run.node
            self.auto_heps = hostendpoints.AutoHostEndpoints(
                calico=self.calico, enqueue=self.queue.add, auto_create=node.auto_host_endpoints,
                create_default=node.create_default_host_endpoint, templates=node.host_endpoint_templates)
        if run.installation:
            self.installations = installation.InstallationSync(calico=self.calico, kube=self.kube)
        if self.datastore_type != "kubernetes" and (run.namespace is not None or run.service_account is not None):
            # On the Kubernetes datastore the backend derives these profiles from the objects themselves.
            self.profiles = ProfileSync(calico=self.calico, kube=self.kube)
            self.queue.add(KEY_PROFILES)
        if self.datastore_type != "kubernetes":
            # On the Kubernetes datastore these are the Kubernetes objects themselves.
            if run.policy is not None:
                self.policies = PolicySync(calico=self.calico, kube=self.kube)
                self.queue.add(KEY_POLICIES)
            if run.workload_endpoint is not None:
                self.endpoints = WorkloadEndpointSync(calico=self.calico, kube=self.kube)
                self.queue.add(KEY_WORKLOAD_ENDPOINTS)
            if run.node is not None and run.node.sync_labels:
                self.node_labels = NodeLabelSync(calico=self.calico, kube=self.kube)
                self.queue.add(KEY_NODE_LABELS)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._kopf(), name="kopf")
                tg.create_task(self.queue.run(self.reconcile), name="workqueue")
                if self.auto_heps is not None:
                    tg.create_task(Syncer(self.backend, hostendpoints.SYNCER_TYPES, self.auto_heps).run(),
                                   name="auto-hep-syncer")
                if self.health is not None:
                    tg.create_task(self._report_health(), name="health")
                tg.create_task(self._until_config_changes(), name="config-changes")
        except BaseExceptionGroup as group:
            # The first part that failed says why the replica stops (the daemon logs it).
            raise group.exceptions[0] from group
        finally:
            self._kopf_stop.set()
            self.queue.shutdown()
            if self.gc is not None and self.registry is not None:
                with contextlib.suppress(KeyError):
                    self.registry.unregister(self.gc.metrics)

    async def _until_config_changes(self) -> None:
        await self._config_changed.wait()
        raise ConfigChanged("the running configuration changed; restarting to apply it")

    async def _report_health(self) -> None:
        assert self.health is not None
        self.health.register("kube-controllers", timeout=60)
        while True:
            self.health.report("kube-controllers", ready=self.informing.is_set() and self.leading.is_set(),
                               detail="" if self.informing.is_set() else "informers not yet listening")
            if self.informing.is_set():
                await asyncio.sleep(5)
            else:  # report readiness as soon as the informers are up
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.informing.wait(), 5)

    async def run(self) -> None:
        """Campaign for the Lease, act while holding it; raise :class:`LeadershipLost` when it goes."""
        try:
            if self.lease is None:
                self.leading.set()
                await self.act()
                return
            await self._elect(self.lease)
        finally:
            await self.kube.close()

    async def _elect(self, lease: LeaseSettings) -> None:
        failure: list[BaseException] = []

        acting: list[asyncio.Task[Any]] = []

        async def lead() -> None:
            log.info("%s: became the leader (Lease %s/%s)", self.identity, lease.namespace, lease.name)
            me = asyncio.current_task()
            if me is not None:
                acting.append(me)
            self.leading.set()
            try:
                await self.act()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                # The election would go on renewing for a replica that no longer acts: end it.
                failure.append(exc)
                campaign.cancel()
                raise

        async def stopped() -> None:
            self.leading.clear()

        lock = leaselock.LeaseLock(lease.name, lease.namespace, self.identity, self.kube.api)
        election = leaderelection.LeaderElection(electionconfig.Config(
            lock, lease_duration=lease.lease_duration, renew_deadline=lease.renew_deadline,
            retry_period=lease.retry_period, onstarted_leading=lead, onstopped_leading=stopped))
        log.info("%s: waiting to lead (Lease %s/%s)", self.identity, lease.namespace, lease.name)
        campaign = asyncio.create_task(election.run(), name=f"election:{self.identity}")
        try:
            await campaign
        except asyncio.CancelledError:
            if failure:
                raise failure[0] from None
            raise
        finally:
            # LeaderElection cancels its leading task only when a renewal fails, not when it is
            # itself cancelled (a replica being stopped): stop acting here, in every case.
            campaign.cancel()
            for t in acting:
                t.cancel()
            if acting:
                await asyncio.wait(acting, timeout=2 * KOPF_EXIT_TIMEOUT)
            self.leading.clear()
        raise LeadershipLost(f"{self.identity}: lost the Lease {lease.namespace}/{lease.name}")


__all__ = ["ConfigChanged", "KEY_CONFIG", "KEY_IPAM", "KEY_NODE_LABELS", "KEY_POLICIES", "KEY_PROFILES",
           "KEY_WORKLOAD_ENDPOINTS", "KubeControllers", "LeadershipLost", "LeaseSettings",
           "NODE_PREFIX", "default_identity"]
