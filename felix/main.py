"""Entry point of ``calico-felix``: the node agent (routes, VXLAN, natOutgoing; see :mod:`felix.daemon`).

Exit codes: 0 after a signal, 1 when a root task ended (the runner logs which
and why) or the configuration is bad (one line naming the setting).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from felix import daemon
from libcalico import daemon as runner
from libcalico.errors import CalicoError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calico-felix", description="Calico's node agent (pycalico).")
    parser.add_argument("--log-level", default="", help="Debug, Info, Warning or Error (FELIX_LOGSEVERITYSCREEN)")
    args = parser.parse_args(argv)
    try:
        runner.setup_logging(args.log_level or os.environ.get("FELIX_LOGSEVERITYSCREEN") or "Info")
        cfg, ds = daemon.main_settings()
    except (ValueError, CalicoError) as exc:
        sys.stderr.write(f"calico-felix: bad configuration: {exc}\n")
        return 1
    return runner.main(daemon.build(cfg, ds))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
