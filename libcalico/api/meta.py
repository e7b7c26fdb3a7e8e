"""ObjectMeta and the Resource base class every v3 kind derives from.

A resource on the wire is ``{apiVersion, kind, metadata, spec}``, exactly as
``calicoctl get -o yaml`` prints it and as etcd stores it (etcd stores it
without ``resourceVersion``: that is the key's mod_revision). Subclasses set
``KIND``, ``PLURAL``, ``NAMESPACED`` and the ``spec`` type; the registry in
:mod:`libcalico.api.registry` collects them.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from libcalico.api import fields
from libcalico.api.fields import CalicoModel

API_VERSION = "projectcalico.org/v3"
GROUP = "projectcalico.org"


class OwnerReference(CalicoModel):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(CalicoModel):
    """The subset of Kubernetes ObjectMeta that Calico resources use."""

    name: str = ""
    generate_name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    labels: fields.Labels = Field(default_factory=dict)
    annotations: fields.Annotations = Field(default_factory=dict)
    owner_references: list[OwnerReference] = Field(default_factory=list)
    finalizers: list[str] = Field(default_factory=list)
    managed_fields: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("creation_timestamp", "deletion_timestamp", mode="before")
    @classmethod
    def _timestamp_text(cls, v: Any) -> Any:
        # YAML loaders turn an unquoted RFC 3339 time into a datetime; keep the text.
        if v is not None and not isinstance(v, str) and hasattr(v, "isoformat"):
            return v.isoformat().replace("+00:00", "Z")
        return v


class ListMeta(CalicoModel):
    resource_version: str = ""
    continue_: str = Field(default="", alias="continue")


class Resource(CalicoModel):
    """A projectcalico.org/v3 resource: apiVersion, kind, metadata, spec."""

    KIND: ClassVar[str] = ""
    PLURAL: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = False
    # Names other than DNS-1123 subdomains (policies) override this.
    NAME_CHECK: ClassVar[Any] = staticmethod(fields.check_name)

    api_version: Literal["projectcalico.org/v3"] = "projectcalico.org/v3"
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @model_validator(mode="before")
    @classmethod
    def _default_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("kind"):
            data = {**data, "kind": cls.KIND}
        return data

    @model_validator(mode="after")
    def _check_meta(self) -> Resource:
        if self.kind != self.KIND:
            raise fields.field_error("kind", f"kind must be {self.KIND}", self.kind)
        name = self.metadata.name
        if not name:
            raise fields.field_error("metadata.name", "name is required")
        try:
            type(self).NAME_CHECK(name)
        except ValueError as exc:
            raise fields.field_error("metadata.name", str(exc), name) from None
        if self.NAMESPACED and self.metadata.namespace:
            try:
                fields.check_name(self.metadata.namespace)
            except ValueError as exc:
                raise fields.field_error("metadata.namespace", str(exc), self.metadata.namespace) from None
        return self

    # --- identity -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    def identifier(self) -> str:
        """``Kind(name)`` or ``Kind(namespace/name)``, as Calico's errors print it."""
        if self.NAMESPACED:
            return f"{self.KIND}({self.metadata.namespace}/{self.metadata.name})"
        return f"{self.KIND}({self.metadata.name})"

    # --- wire format ----------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """The resource as Calico writes it: camelCase, Go's omitempty for zero values."""
        out: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        out["apiVersion"] = self.api_version
        out["kind"] = self.kind
        out.setdefault("metadata", {})
        ordered = {"kind": out.pop("kind"), "apiVersion": out.pop("apiVersion"), "metadata": out.pop("metadata")}
        ordered.update(out)
        return ordered

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), separators=(",", ":"))
