"""Entry point of ``calico-kube-controllers``: kopf-based Kubernetes controllers.

Only ``--help`` works until its issue lands (issue later); the command says so
instead of pretending to run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calico-kube-controllers", description="pycalico calico-kube-controllers: kopf-based Kubernetes controllers.")
    parser.parse_args(argv)
    sys.stderr.write("calico-kube-controllers is not implemented yet in pycalico (tracked as issue later)\n")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
