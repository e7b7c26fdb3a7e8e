"""Render deploy/calico.yaml, the one file Calico ships, from deploy/kustomization.yaml.

The kustomization is the source: its resources, in its order, each file's text as
written (comments kept), joined into one multi-document YAML. Plain
concatenation rather than ``kubectl kustomize``, so that the rendered file does not
depend on which kubectl (and which kustomize inside it) a machine has; the tests
check that kustomize builds the same objects.

    python3 deploy/render.py            # write deploy/calico.yaml
    python3 deploy/render.py --check    # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
OUT = DEPLOY / "calico.yaml"
HEADER = ("# pycalico for Kubernetes, rendered by `python3 deploy/render.py` from deploy/kustomization.yaml.\n"
          "# Do not edit: edit deploy/manifests/ (or regenerate crds/) and render again. See docs/kind.md.\n")


def sources() -> list[Path]:
    doc = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [(DEPLOY / r).resolve() for r in doc["resources"]]


def render() -> str:
    parts = [HEADER]
    for path in sources():
        rel = path.relative_to(DEPLOY.parent)
        parts.append(f"---\n# Source: {rel}\n{path.read_text().strip()}\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if deploy/calico.yaml is not what would be rendered")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            sys.stderr.write("deploy/calico.yaml is stale: run python3 deploy/render.py\n")
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
