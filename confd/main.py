"""Entry point of ``calico-confd``: BIRD configuration from the datastore.

Only ``--help`` works until its issue lands (issue 7); the command says so
instead of pretending to run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calico-confd", description="pycalico calico-confd: BIRD configuration from the datastore.")
    parser.parse_args(argv)
    sys.stderr.write("calico-confd is not implemented yet in pycalico (tracked as issue 7)\n")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
