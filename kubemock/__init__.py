"""kubemock: a mock Kubernetes API server for pycalico's tests and ``calico-lab --datastore kubernetes``.

No kube-apiserver can run on the machines pycalico is tested on, so the
Kubernetes backend, kubectl, the kopf controllers and the lab's Kubernetes mode
talk to this server instead: a stateful, in-memory API server that speaks the
real HTTP/JSON protocol and keeps the promises of the API conventions that a
datastore depends on (resourceVersion, conflicts, watches from a version,
410 Expired, selectors, CRDs with schema validation and pruning). What it
emulates, and what it does not, is listed in :mod:`kubemock.server`.

It is test infrastructure, not product: a distribution of its own
(``pycalico-kubemock``, kubemock/pyproject.toml), outside the pycalico wheel.
No pycalico package imports it (an import-linter contract), and it imports
none of them; the lab only runs ``python -m kubemock``.
"""

from kubemock.server import (CORE, VERSION, APIError, Change, KubeAPI, PatchError, Request, ResourcePath, RunningAPI,
                             Served, check_schema, crd_files, json_patch, kubeconfig, listening, merge_patch,
                             parse_path, parse_selector, running_api, serve, status)

__all__ = ["CORE", "VERSION", "APIError", "Change", "KubeAPI", "PatchError", "Request", "ResourcePath", "RunningAPI",
           "Served", "check_schema", "crd_files", "json_patch", "kubeconfig", "listening", "merge_patch",
           "parse_path", "parse_selector", "running_api", "serve", "status"]
