"""Entry point of ``calico-confd``: BIRD's configuration from the datastore (see :mod:`confd.daemon`).

Flags as Calico's confd: ``-confdir`` (the config goes to ``<confdir>/config``),
``-onetime``; plus ``--nodename`` (else ``NODENAME``, else the host name) and
``--bird-socket`` (BIRD's control socket, for ``birdc configure``). The
datastore is configured as calicoctl's is (DATASTORE_TYPE, ETCD_ENDPOINTS...).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from confd import daemon, writer
from libcalico import daemon as runner
from libcalico.backend.config import from_environment
from libcalico.errors import CalicoError


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="calico-confd", description="BIRD configuration from the Calico datastore.")
    p.add_argument("-confdir", "--confdir", default="/etc/calico/confd", help="config goes to CONFDIR/config")
    p.add_argument("-onetime", "--onetime", action="store_true", help="render once and exit")
    p.add_argument("--nodename", default="", help="this node's name (else $NODENAME, else the host name)")
    p.add_argument("--bird-socket", default=os.environ.get("CALICO_BIRD_SOCKET", "/var/run/calico/bird.ctl"))
    p.add_argument("--log-level", default=os.environ.get("BGP_LOGSEVERITYSCREEN", "Info"))
    p.add_argument("--health-port", type=int, default=0, help="serve /liveness and /readiness on this port "
                   "(127.0.0.1; 0: none)")
    args = p.parse_args(argv)
    node = args.nodename or os.environ.get("NODENAME") or socket.gethostname()
    try:
        runner.setup_logging(args.log_level)
        ds = from_environment()
        outdir, cmds = Path(args.confdir) / "config", writer.Commands(socket=args.bird_socket)
        if args.onetime:
            return asyncio.run(daemon.run_once(node, outdir, ds, cmds))
        health = ("127.0.0.1", args.health_port) if args.health_port else None
        return runner.main(daemon.build(node, outdir, ds, cmds, health=health))
    except (CalicoError, writer.CheckFailed, daemon.RenderFailed, ValueError) as exc:
        sys.stderr.write(f"calico-confd: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
