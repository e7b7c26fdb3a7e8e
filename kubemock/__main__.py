"""``python -m kubemock --host H --port P --crds DIR --kubeconfig FILE``: serve until killed.

The lab's ``--datastore kubernetes`` runs it in its underlay namespace (no
kube-apiserver can run here; on a machine with Docker, deploy/ is the path to a
real cluster). The kubeconfig is written once the server listens, so its
existence says the server is up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from kubemock.server import serve


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m kubemock", description="A mock Kubernetes API server.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--crds", type=Path, required=True, help="a directory of CRD manifests (*.yaml) to install")
    p.add_argument("--kubeconfig", type=Path, required=True, help="where to write the kubeconfig for the server")
    a = p.parse_args(argv)
    if not a.crds.is_dir():
        p.error(f"--crds {a.crds}: not a directory")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host=a.host, port=a.port, crd_dir=a.crds, kubeconfig_path=a.kubeconfig))


if __name__ == "__main__":
    main()
