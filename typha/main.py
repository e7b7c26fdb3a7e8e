"""Entry point of ``calico-typha``: the datastore fan-out proxy for Felix.

Only ``--help`` works until its issue lands (issue later); the command says so
instead of pretending to run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calico-typha", description="pycalico calico-typha: the datastore fan-out proxy for Felix.")
    parser.parse_args(argv)
    sys.stderr.write("calico-typha is not implemented yet in pycalico (tracked as issue later)\n")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
