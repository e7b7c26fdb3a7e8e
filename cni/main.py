"""Entry points of the ``calico`` and ``calico-ipam`` CNI plugins (CNI spec 1.0.0).

The runtime passes the network config on stdin and the request in CNI_*
variables. A result goes to stdout as JSON with exit code 0; an error goes to
stdout as the spec's error object (code, msg, details) with exit code 1. Logs
go to stderr only (``log_level`` from the network config), so stdout stays
the runtime's. VERSION answers without reading stdin; GC and STATUS succeed
(there is no state here they could collect or report beyond the datastore's).

:func:`_main` is the one guard around everything a plugin does: whatever goes
wrong (a closed stdin, a 100,000-deep JSON document, a bug), the runtime gets
an error object on stdout and a nonzero exit, never a traceback in its place.
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

log = logging.getLogger(__name__)

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _invoke(name: str, run: Callable[[Invocation], Coroutine[Any, Any, dict[str, Any] | None]],
            version: list[str]) -> dict[str, Any] | None:
    """Read the invocation and run it; ``version[0]`` becomes the config's cniVersion once known."""
    inv = config.read(sys.stdin.buffer if sys.stdin is not None else None)
    version[0] = inv.conf.cni_version
    level = inv.conf.log_level.upper()
    logging.basicConfig(stream=sys.stderr, level=level if level in LEVELS else "INFO",
                        format=f"%(asctime)s [%(levelname)s] {name} %(message)s")
    if inv.command in ("GC", "STATUS"):
        return None
    return asyncio.run(run(inv))


def _main(name: str, run: Callable[[Invocation], Coroutine[Any, Any, dict[str, Any] | None]]) -> int:
    version = ["1.0.0"]
    try:
        command = os.environ.get("CNI_COMMAND", "")
        if command == "VERSION":
            json.dump({"cniVersion": "1.0.0", "supportedVersions": config.SUPPORTED_VERSIONS}, sys.stdout)
            return 0
        if not command and sys.stdin is not None and sys.stdin.isatty():
            sys.stderr.write(f"{name}: a CNI plugin; run by a container runtime with CNI_COMMAND set\n")
            return 1
        result = _invoke(name, run, version)
    except CNIError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - the runtime must always get the spec's error object
        log.debug("%s failed", name, exc_info=True)
        error = CNIError(config.PLUGIN_FAILURE, f"{type(exc).__name__}: {exc}")
    else:
        if result is not None:
            json.dump(result, sys.stdout)
        return 0
    json.dump(error.result(version[0]), sys.stdout)
    return 1


def calico_main() -> int:
    return _main("calico", plugin.run)


def ipam_main() -> int:
    return _main("calico-ipam", ipam_plugin.run)
