"""The files the lab serves or copies (Calico's CRDs, deploy/observability's Prometheus config and dashboards).

They are package data of ``lab`` (``lab/crds`` and ``lab/observability`` link to
the repository's ``crds/`` and ``deploy/observability/``; the wheel carries copies), so
an installed ``calico-lab`` finds them through importlib.resources wherever it
runs, not by walking up from the source tree.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


# Where the package data is: the lab's package directory (pip installs wheels as files).
LAB = Path(str(resources.files("lab")))
OBSERVABILITY = LAB / "observability"


def path(*parts: str) -> Path:
    """A directory or file of the lab's package data, as a path other processes can read."""
    found = LAB.joinpath(*parts)
    if not found.exists():
        raise FileNotFoundError(f"the lab's package data has no {'/'.join(parts)} ({found}): "
                                f"reinstall pycalico (its wheel ships lab/crds and lab/observability)")
    return found


def crds(group_dir: str) -> Path:
    """The CRD manifests of one API group: ``v3`` (projectcalico.org/v3) or ``v1`` (crd.projectcalico.org/v1)."""
    return path("crds", group_dir)


def observability() -> Path:
    """deploy/observability: prometheus.yml and the Grafana dashboards."""
    return path(OBSERVABILITY.name)
