"""CalicoNodeStatus: what a node reports of its agent, BGP sessions and routes, on request.

It exists here because Calico's ``node-status`` syncer (and so Typha's
``node-status`` pipeline) follows this kind: calico-node watches the
CalicoNodeStatus objects naming its node and writes their status. The spec is
Calico's, field for field (``projectcalico/api nodestatus.go``); the status is
written by Calico and never validated (as in Calico), so it is kept as the
free-form objects it is made of.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from libcalico.api.fields import CalicoModel
from libcalico.api.meta import Resource

NodeStatusClass = Literal["Agent", "BGP", "Routes"]


class CalicoNodeStatusSpec(CalicoModel):
    node: str = ""
    classes: list[NodeStatusClass] = Field(default_factory=list)
    update_period_seconds: int | None = Field(default=None, ge=0, le=86400)


class CalicoNodeStatusStatus(CalicoModel):
    last_updated: str | None = None
    agent: dict[str, Any] = Field(default_factory=dict)
    bgp: dict[str, Any] = Field(default_factory=dict)
    routes: dict[str, Any] = Field(default_factory=dict)


class CalicoNodeStatus(Resource):
    KIND = "CalicoNodeStatus"
    PLURAL = "caliconodestatuses"
    spec: CalicoNodeStatusSpec = Field(default_factory=CalicoNodeStatusSpec)
    status: CalicoNodeStatusStatus = Field(default_factory=CalicoNodeStatusStatus)
