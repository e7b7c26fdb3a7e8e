"""A shared entry point for components whose issue has not landed yet.

Their console scripts exist (so packaging, docs and deploy manifests can name
them) and answer ``--help``; running one says plainly that it is not built yet
and exits 2, rather than pretending to work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def not_yet(prog: str, what: str, issue: str, argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=f"pycalico {prog}: {what}.")
    parser.parse_args(argv)
    sys.stderr.write(f"{prog} is not implemented yet in pycalico (tracked as issue {issue})\n")
    return 2
