#!/usr/bin/env bash
# The README's test command: type checks, layering contracts, then the test suite
# (which starts and stops its own etcd on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> mypy --strict"
mypy
echo "==> import-linter"
lint-imports
echo "==> pytest"
python3 -m pytest -p no:cacheprovider "$@"
