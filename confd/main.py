"""Entry point of ``calico-confd``: BIRD's configuration from the datastore (see :mod:`confd.daemon`).

Flags as Calico's confd: ``-confdir`` (the config goes to ``<confdir>/config``),
``-onetime``; plus ``--nodename`` (else ``NODENAME``, else the host name) and
``--bird-socket`` (BIRD's control socket, for ``birdc configure``). The
datastore is configured as calicoctl's is (DATASTORE_TYPE, ETCD_ENDPOINTS...).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from confd import daemon, writer
from libcalico.backend.config import from_environment
from libcalico.errors import CalicoError


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="calico-confd", description="BIRD configuration from the Calico datastore.")
    p.add_argument("-confdir", "--confdir", default="/etc/calico/confd", help="config goes to CONFDIR/config")
    p.add_argument("-onetime", "--onetime", action="store_true", help="render once and exit")
    p.add_argument("--nodename", default="", help="this node's name (else $NODENAME, else the host name)")
    p.add_argument("--bird-socket", default=os.environ.get("CALICO_BIRD_SOCKET", "/var/run/calico/bird.ctl"))
    p.add_argument("--log-level", default=os.environ.get("BGP_LOGSEVERITYSCREEN", "INFO"))
    args = p.parse_args(argv)
    level = args.log_level.upper()
    logging.basicConfig(stream=sys.stderr, level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO",
                        format="%(asctime)s [%(levelname)s] %(name)s %(message)s")
    node = args.nodename or os.environ.get("NODENAME") or socket.gethostname()
    try:
        return asyncio.run(daemon.run(node, Path(args.confdir) / "config", from_environment(),
                                      writer.Commands(socket=args.bird_socket), args.onetime))
    except (CalicoError, writer.CheckFailed, daemon.RenderFailed) as exc:
        sys.stderr.write(f"calico-confd: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
