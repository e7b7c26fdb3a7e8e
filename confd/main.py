"""Entry point of ``calico-confd``: BIRD configuration from the datastore. A placeholder until issue 7 lands."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from libcalico import placeholder


def main(argv: Sequence[str] | None = None) -> int:
    return placeholder.not_yet("calico-confd", "BIRD configuration from the datastore", "7", argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
