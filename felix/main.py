"""Entry point of ``calico-felix``: the node agent (routes, VXLAN, natOutgoing; see :mod:`felix.daemon`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from felix import daemon


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calico-felix", description="Calico's node agent (pycalico).")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (FELIX_LOGSEVERITYSCREEN)")
    args = parser.parse_args(argv)
    import os

    level = os.environ.get("FELIX_LOGSEVERITYSCREEN", args.log_level).upper()
    logging.basicConfig(stream=sys.stderr, level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO",
                        format="%(asctime)s [%(levelname)s] %(name)s %(message)s")
    try:
        cfg, ds = daemon.main_settings()
    except ValueError as exc:
        sys.stderr.write(f"calico-felix: bad configuration: {exc}\n")
        return 1
    try:
        asyncio.run(daemon.run(cfg, ds))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
