"""Entry points of the ``calico`` and ``calico-ipam`` CNI plugins (CNI spec 1.0.0).

The runtime passes the network config on stdin and the request in CNI_*
variables. A result goes to stdout as JSON with exit code 0; an error goes to
stdout as the spec's error object (code, msg, details) with exit code 1. Logs
go to stderr only (``log_level`` from the network config), so stdout stays
the runtime's. VERSION answers without reading stdin; GC and STATUS succeed
(there is no state here they could collect or report beyond the datastore's).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from cni import config, ipam_plugin, plugin
from cni.config import CNIError, Invocation


def _main(name: str, run: Callable[[Invocation], Coroutine[Any, Any, dict[str, Any] | None]]) -> int:
    command = os.environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        json.dump({"cniVersion": "1.0.0", "supportedVersions": config.SUPPORTED_VERSIONS}, sys.stdout)
        return 0
    if not command and sys.stdin.isatty():
        sys.stderr.write(f"{name}: a CNI plugin; run by a container runtime with CNI_COMMAND set\n")
        return 1
    version = "1.0.0"
    try:
        inv = config.read(sys.stdin.buffer.read())
        version = inv.conf.cni_version
        logging.basicConfig(stream=sys.stderr, level=inv.conf.log_level.upper()
                            if inv.conf.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO",
                            format=f"%(asctime)s [%(levelname)s] {name} %(message)s")
        if inv.command in ("GC", "STATUS"):
            return 0
        result: dict[str, Any] | None = asyncio.run(run(inv))
    except CNIError as exc:
        json.dump(exc.result(version), sys.stdout)
        return 1
    except Exception as exc:  # the runtime must always get the spec's error object
        json.dump(CNIError(config.PLUGIN_FAILURE, f"{type(exc).__name__}: {exc}").result(version), sys.stdout)
        return 1
    if result is not None:
        json.dump(result, sys.stdout)
    return 0


def calico_main() -> int:
    return _main("calico", plugin.run)


def ipam_main() -> int:
    return _main("calico-ipam", ipam_plugin.run)
