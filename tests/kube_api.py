"""The tests' Kubernetes API server: the lab's extended kmock (:mod:`lab.kube_api`)."""

from lab.kube_api import (CORE, APIError, KubeAPI, RunningAPI, Served, check_schema, kubeconfig, parse_selector,
                          running_api, status)

__all__ = ["CORE", "APIError", "KubeAPI", "RunningAPI", "Served", "check_schema", "kubeconfig", "parse_selector",
           "running_api", "status"]
