"""Calico's names for workload endpoints and their host-side interfaces.

A WorkloadEndpoint's name is built from its identifiers the way libcalico-go's
``names.WorkloadEndpointIdentifiers`` builds it: ``<node>-<orchestrator>-<pod>-<endpoint>``
with every ``-`` inside a part doubled, so the name splits back unambiguously
(``node-1`` + ``k8s`` + ``web-0`` + ``eth0`` -> ``node--1-k8s-web--0-eth0``).
The host side of a pod's veth is ``cali`` + the first 11 hex digits of
SHA-1(``<namespace>.<pod>``), so the CNI plugin, Felix and the Kubernetes
backend name the same interface without talking to each other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DEFAULT_INTERFACE_PREFIX = "cali"


@dataclass(frozen=True, slots=True)
class WorkloadEndpointIdentifiers:
    node: str
    orchestrator: str
    pod: str
    endpoint: str = "eth0"

    def name(self) -> str:
        return "-".join(p.replace("-", "--") for p in (self.node, self.orchestrator, self.pod, self.endpoint))




def parse_workload_endpoint_name(name: str) -> WorkloadEndpointIdentifiers | None:
    """The identifiers in a WorkloadEndpoint name, or None if it is not one of Calico's."""
    # A single dash separates parts; doubled dashes belong to a part. Runs of three or more
    # dashes are "--" followed by a separator, so split on the last dash of each odd run.
    parts: list[str] = []
    cur = ""
    i = 0
    while i < len(name):
        if name[i] == "-":
            j = i
            while j < len(name) and name[j] == "-":
                j += 1
            run = j - i
            cur += "-" * (run // 2)
            if run % 2:
                parts.append(cur)
                cur = ""
            i = j
        else:
            cur += name[i]
            i += 1
    parts.append(cur)
    if len(parts) != 4 or not all(parts):
        return None
    return WorkloadEndpointIdentifiers(*parts)


def veth_name_for_workload(namespace: str, pod: str, prefix: str = DEFAULT_INTERFACE_PREFIX) -> str:
    """Calico's host-side interface name for a pod: prefix + 11 hex digits of SHA-1(ns.pod)."""
    digest = hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()
    return f"{prefix}{digest[:11]}"
