"""The tests' Kubernetes API server: kubemock (:mod:`kubemock.server`, its own distribution)."""

from kubemock import (CORE, APIError, KubeAPI, RunningAPI, Served, check_schema, kubeconfig, parse_selector,
                      running_api, status)

__all__ = ["CORE", "APIError", "KubeAPI", "RunningAPI", "Served", "check_schema", "kubeconfig", "parse_selector",
           "running_api", "status"]
