"""Entry points of the ``calico`` and ``calico-ipam`` CNI plugins.

They answer ``VERSION`` as the CNI spec asks; every other command reports a CNI
error (code 4, "unsupported") until the IPAM/CNI issue lands (issue 5).
"""

from __future__ import annotations

import json
import os
import sys

SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]


def _plugin(name: str) -> int:
    command = os.environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        json.dump({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS}, sys.stdout)
        return 0
    if not command:
        sys.stderr.write(f"{name}: a CNI plugin; run by a container runtime with CNI_COMMAND set\n")
        return 1
    json.dump({"cniVersion": "1.0.0", "code": 4, "msg": f"{name} does not implement {command} yet",
               "details": "pycalico issue 5"}, sys.stdout)
    return 1


def calico_main() -> int:
    return _plugin("calico")


def ipam_main() -> int:
    return _plugin("calico-ipam")
