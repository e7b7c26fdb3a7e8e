"""Entry point of ``calico-lab``: a cluster in a box of network namespaces. A placeholder until issue 8 lands."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from libcalico import placeholder


def main(argv: Sequence[str] | None = None) -> int:
    return placeholder.not_yet("calico-lab", "a cluster in a box of network namespaces", "8", argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
