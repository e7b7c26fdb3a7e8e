"""Entry point of ``calico-typha``: the datastore fan-out proxy for Felix and confd (see :mod:`typha.daemon`).

Configured by Calico's ``TYPHA_*`` environment variables (:mod:`typha.config`).
Exit codes: 0 after a signal, 1 when a root task ended (the runner logs which
and why) or the configuration is bad (one line naming the variable).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from libcalico import daemon as runner
from libcalico.errors import CalicoError
from typha import config, daemon


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calico-typha", description="Calico's Typha (pycalico): one datastore "
                                     "watch fanned out to many Felix and confd clients.")
    parser.add_argument("--log-level", default="", help="Debug, Info, Warning or Error (TYPHA_LOGSEVERITYSCREEN)")
    args = parser.parse_args(argv)
    try:
        cfg = config.settings()
        runner.setup_logging(args.log_level or os.environ.get("TYPHA_LOGSEVERITYSCREEN") or cfg.log_severity_screen)
        d = daemon.build(cfg, config.datastore())
    except (ValueError, OSError, CalicoError) as exc:
        sys.stderr.write(f"calico-typha: bad configuration: {exc}\n")
        return 1
    return runner.main(d)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
