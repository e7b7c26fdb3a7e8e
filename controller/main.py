"""Entry point of ``calico-kube-controllers`` (see :mod:`controller.app` and docs/kube-controllers.md).

Configured as Calico's is: the datastore by DATASTORE_TYPE (``etcdv3`` by
default, as Calico's kube-controllers; or ``kubernetes``), ETCD_ENDPOINTS...,
KUBECONFIG (else the pod's service account); the controllers by
KubeControllersConfiguration ``default`` and ENABLED_CONTROLLERS, LOG_LEVEL,
... (:mod:`controller.config`). It runs under :class:`libcalico.daemon.Daemon`
as Felix and confd do: one supervised root, health, Prometheus metrics on
``prometheusMetricsPort`` (9094 unless the resource says otherwise; 0 turns
them off), a clean shutdown on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

import prometheus_client as prom

from libcalico import backend as backends
from libcalico import client as calico_client
from libcalico import daemon as runner
from libcalico.api import kubecontrollers as kcc
from libcalico.backend.config import DatastoreConfig, from_environment
from libcalico.errors import CalicoError, NotFound

from controller import app, config, kube


async def _metrics_port(ds: DatastoreConfig, env: Mapping[str, str]) -> int:
    """The port the running configuration gives (read once before the daemon starts; status is the leader's)."""
    be = backends.connect(ds)
    try:
        try:
            res = await calico_client.Client(be).get(kcc.KubeControllersConfiguration, kcc.DEFAULT_NAME)
            assert isinstance(res, kcc.KubeControllersConfiguration)
            spec = res.spec
        except NotFound:
            spec = kcc.default_configuration().spec
        run, _ = config.merge(env, ds.datastore_type, spec)
        return run.prometheus_port
    finally:
        await be.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="calico-kube-controllers",
                                description="Calico's Kubernetes controllers: node cleanup, IPAM GC, ...")
    p.add_argument("--health-port", type=int, default=int(os.environ.get("HEALTH_PORT", "0") or 0),
                   help="serve /liveness and /readiness on 127.0.0.1:PORT (0: none)")
    p.add_argument("--metrics-host", default="0.0.0.0")
    p.add_argument("--no-leader-election", action="store_true", help="act at once, without taking the Lease")
    args = p.parse_args(argv)
    env = dict(os.environ)
    try:
        runner.setup_logging(env.get("LOG_LEVEL", "Info"))
        ds = from_environment()
        config.merge(env, ds.datastore_type, kcc.default_configuration().spec)  # bad variables fail here
        port = asyncio.run(_metrics_port(ds, env))
        kube_cfg = asyncio.run(kube.load_configuration(ds.kubeconfig or env.get("KUBECONFIG", "")))
        d = runner.Daemon("calico-kube-controllers")
        registry = prom.CollectorRegistry()
        lease = None if args.no_leader_election else app.LeaseSettings(
            namespace=env.get("POD_NAMESPACE", "kube-system"))
        be = backends.connect(ds)
        controllers = app.KubeControllers(backend=be, kube_configuration=kube_cfg, datastore_type=ds.datastore_type,
                                          env=env, lease=lease, registry=registry, health=d.health,
                                          on_signal=lambda sig: d.stop(sig.name), set_log_level=True)
        d.root("controllers", controllers.run)
        d.cleanup("datastore", be.close)
        if args.health_port:
            d.serve_health("127.0.0.1", args.health_port)
        if port:
            d.serve_metrics(args.metrics_host, port, registry)
        return runner.main(d)
    except (CalicoError, config.ConfigError, ValueError, OSError) as exc:
        sys.stderr.write(f"calico-kube-controllers: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
