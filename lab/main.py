"""Entry point of ``calico-lab``: a cluster in a box of network namespaces.

Only ``--help`` works until its issue lands (issue 8); the command says so
instead of pretending to run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calico-lab", description="pycalico calico-lab: a cluster in a box of network namespaces.")
    parser.parse_args(argv)
    sys.stderr.write("calico-lab is not implemented yet in pycalico (tracked as issue 8)\n")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
