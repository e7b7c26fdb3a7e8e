"""NetworkSet and GlobalNetworkSet: labelled lists of CIDRs that policy selectors can match.

A rule's selector matches a network set's labels as it matches an endpoint's,
and the set's nets then stand for addresses outside the cluster
(api/pkg/apis/projectcalico/v3 networkset.go, globalnetworkset.go). Nets are
``cidr``-validated as Calico does; a bare address is its full-length prefix.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from libcalico.api import fields
from libcalico.api.fields import CalicoModel
from libcalico.api.meta import Resource


class NetworkSetSpec(CalicoModel):
    nets: list[str] = Field(default_factory=list)

    @field_validator("nets")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        for text in v:
            try:
                fields.parse_cidr_or_ip(text)
            except ValueError:
                raise ValueError(f"invalid CIDR {text!r}") from None
        return v


class NetworkSet(Resource):
    KIND = "NetworkSet"
    PLURAL = "networksets"
    NAMESPACED = True
    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)


class GlobalNetworkSet(Resource):
    KIND = "GlobalNetworkSet"
    PLURAL = "globalnetworksets"
    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)
