"""Entry point of ``calico-typha``: the datastore fan-out proxy for Felix. A placeholder until issue later lands."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from libcalico import placeholder


def main(argv: Sequence[str] | None = None) -> int:
    return placeholder.not_yet("calico-typha", "the datastore fan-out proxy for Felix", "later", argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
