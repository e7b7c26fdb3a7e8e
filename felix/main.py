"""Entry point of ``calico-felix``: the node agent (routes, VXLAN/IPIP, natOutgoing, policy).

Only ``--help`` works until its issue lands (issue 6); the command says so
instead of pretending to run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calico-felix", description="pycalico calico-felix: the node agent (routes, VXLAN/IPIP, natOutgoing, policy).")
    parser.parse_args(argv)
    sys.stderr.write("calico-felix is not implemented yet in pycalico (tracked as issue 6)\n")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
