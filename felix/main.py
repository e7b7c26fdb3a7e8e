"""Entry point of ``calico-felix``: the node agent (routes, VXLAN/IPIP, natOutgoing, policy). A placeholder until issue 6 lands."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from libcalico import placeholder


def main(argv: Sequence[str] | None = None) -> int:
    return placeholder.not_yet("calico-felix", "the node agent (routes, VXLAN/IPIP, natOutgoing, policy)", "6", argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
