"""Typed CRUD over a backend, with what Calico's clientv3 adds on top of storage.

The backend stores whatever it is given. This layer does what libcalico-go's
``clientv3`` does before and after a write:

* validation of the whole object (the models), plus the rules that need the
  datastore: a new IPPool must not overlap another; an IPPool's ``cidr`` and
  ``blockSize`` never change;
* defaulting: IPPool ``blockSize`` 26/122, ``nodeSelector`` ``all()``,
  ``ipipMode``/``vxlanMode`` ``Never``, ``allowedUses`` Workload+Tunnel,
  ``assignmentMode`` Automatic; policy ``tier`` ``default`` and ``types``
  from the rules present;
* metadata: ``uid`` and ``creationTimestamp`` on create (and a create that
  carries a ``resourceVersion`` is refused, as Calico refuses it); update keeps
  the stored ``uid``/``creationTimestamp``;
* ``ensure_initialized``: the ``default`` ClusterInformation, as calicoctl
  writes before its first write.

Anything rejected here raises before the backend is touched.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import ipaddress
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Generic, cast

import pydantic

from libcalico import api, patching
from libcalico.api import fields
from libcalico.api.ippool import AllowedUse, AssignmentMode, EncapMode
from libcalico.api.loading import errored_fields
from libcalico.api.meta import Resource
from libcalico.api.policy import DEFAULT_TIER, DEFAULT_TIER_ORDER, Action, PolicyType
from libcalico.api.registry import ModelT
from libcalico.backend import static
from libcalico.backend.api import Backend
from libcalico.errors import AlreadyExists, CorruptEntry, ErroredField, NotFound, OperationNotSupported, ValidationError
from libcalico.model import KVPair, ResourceKey, ResourceListOptions

CALICO_VERSION = "v3.31.0-pycalico"


@dataclass(frozen=True, slots=True)
class ResourceList(Generic[ModelT]):
    kind: str
    items: list[ModelT]
    revision: str
    # Stored entries that do not parse, left out of ``items`` (see libcalico.errors.CorruptEntry).
    corrupt: list[CorruptEntry] = field(default_factory=list)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _revalidate(res: Resource) -> Resource:
    """Re-run the model's validation (after defaulting or patching)."""
    try:
        return type(res).model_validate(res.to_wire())
    except pydantic.ValidationError as exc:
        raise ValidationError(errored_fields(exc), context=res.identifier()) from None


# --- defaulting ------------------------------------------------------------------------


def _default_ippool(pool: api.IPPool) -> api.IPPool:
    spec = pool.spec.model_copy(update={
        "block_size": pool.spec.effective_block_size(),
        "node_selector": pool.spec.node_selector or "all()",
        "ipip_mode": pool.spec.ipip_mode or EncapMode.NEVER,
        "vxlan_mode": pool.spec.vxlan_mode or EncapMode.NEVER,
        "allowed_uses": pool.spec.allowed_uses or [AllowedUse.WORKLOAD, AllowedUse.TUNNEL],
        "assignment_mode": pool.spec.assignment_mode or AssignmentMode.AUTOMATIC,
    })
    return pool.model_copy(update={"spec": spec})


def _default_policy_types(ingress: list[Any], egress: list[Any]) -> list[PolicyType]:
    if egress and not ingress:
        return [PolicyType.EGRESS]
    if egress:
        return [PolicyType.INGRESS, PolicyType.EGRESS]
    return [PolicyType.INGRESS]


def _default_policy(pol: Resource) -> Resource:
    spec = getattr(pol, "spec")
    update: dict[str, Any] = {"tier": spec.tier or "default"}
    if not spec.types:
        update["types"] = _default_policy_types(spec.ingress, spec.egress)
    return pol.model_copy(update={"spec": spec.model_copy(update=update)})


def apply_defaults(res: Resource) -> Resource:
    """The object as Calico's client would store it."""
    if isinstance(res, api.IPPool):
        return _default_ippool(res)
    if isinstance(res, (api.NetworkPolicy, api.GlobalNetworkPolicy)):
        return _default_policy(res)
    if isinstance(res, api.Tier) and res.spec.default_action is None:
        # The CRD's default (``+kubebuilder:default=Deny``).
        return res.model_copy(update={"spec": res.spec.model_copy(update={"default_action": Action.DENY})})
    return res


def default_tier() -> api.Tier:
    """The ``default`` tier, as Calico's client creates it on initialisation."""
    return api.Tier.model_validate({"metadata": {"name": DEFAULT_TIER},
                                    "spec": {"order": DEFAULT_TIER_ORDER, "defaultAction": "Deny"}})


# --- the client ----------------------------------------------------------------------------


class Client:
    """Typed CRUD with Calico's client-side rules. Wraps one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def close(self) -> None:
        await self.backend.close()

    # --- reads --------------------------------------------------------------------------

    # Reads and deletes take the model class (``get(api.IPPool, name)``) and return that class.

    async def get(self, kind: type[ModelT], name: str, namespace: str = "") -> ModelT:
        return (await self.backend.get(_key(kind, name, namespace))).value

    async def list(self, kind: type[ModelT], namespace: str = "", name: str = "") -> ResourceList[ModelT]:
        cls = _cls(kind)
        listing = await self.backend.list(ResourceListOptions(cls, namespace if cls.NAMESPACED else "", name))
        return ResourceList(cls.KIND, [kv.value for kv in listing.items], listing.revision, listing.corrupt)

    # --- writes --------------------------------------------------------------------------

    async def create(self, res: Resource) -> Resource:
        if static.is_default_allow(ResourceKey.for_resource(res)):  # clientv3/profile.go Create
            name = static.DEFAULT_ALLOW_PROFILE_NAME
            raise AlreadyExists(name, f"{name} already exists. The profile \"{name}\" is default provided by Calico")
        if res.metadata.resource_version:
            raise ValidationError([ErroredField("metadata.resourceVersion", "field must not be set for a Create request",
                                                res.metadata.resource_version)], context=res.identifier())
        res = _revalidate(apply_defaults(res))
        await self._check_create(res)
        meta = res.metadata.model_copy(update={"uid": res.metadata.uid or str(uuid.uuid4()),
                                               "creation_timestamp": res.metadata.creation_timestamp or _now()})
        res = res.model_copy(update={"metadata": meta})
        stored: Resource = (await self.backend.create(KVPair(ResourceKey.for_resource(res), res))).value
        return stored

    async def update(self, res: Resource) -> Resource:
        """Replace a stored resource; CAS when ``metadata.resourceVersion`` is set."""
        key = ResourceKey.for_resource(res)
        _refuse_default_allow("Update", key)
        current = await self.backend.get(key)
        res = _revalidate(apply_defaults(res))
        self._check_update(current.value, res)
        meta = res.metadata.model_copy(update={
            "uid": current.value.metadata.uid,
            "creation_timestamp": current.value.metadata.creation_timestamp,
        })
        res = res.model_copy(update={"metadata": meta})
        stored: Resource = (await self.backend.update(KVPair(key, res, res.metadata.resource_version))).value
        return stored

    async def apply(self, res: Resource) -> Resource:
        """Create, or update what is there (at its current revision), as calicoctl apply does."""
        key = ResourceKey.for_resource(res)
        _refuse_default_allow("Update", key)
        try:
            current = await self.backend.get(key)
        except NotFound:
            return await self.create(res.model_copy(update={"metadata": res.metadata.model_copy(
                update={"resource_version": ""})}))
        meta = res.metadata.model_copy(update={"resource_version": res.metadata.resource_version or current.revision})
        return await self.update(res.model_copy(update={"metadata": meta}))

    async def delete(self, kind: type[ModelT], name: str, namespace: str = "", revision: str = "") -> ModelT:
        _refuse_default_allow("Delete", _key(kind, name, namespace))
        return (await self.backend.delete(_key(kind, name, namespace), revision)).value

    async def patch(self, kind: type[Resource], name: str, namespace: str, patch: str,
                    patch_type: str = "strategic") -> Resource:
        """Apply a merge (``merge``/``strategic``) or JSON (``json``) patch to a stored resource."""
        current = await self.get(kind, name, namespace)
        try:
            doc = json.loads(patch)
        except json.JSONDecodeError as exc:
            raise ValidationError([ErroredField("--patch", f"not valid JSON: {exc.msg}", patch)]) from None
        except RecursionError:
            raise ValidationError([ErroredField("--patch", "nested too deeply")]) from None
        wire = current.to_wire()
        if patch_type in ("merge", "strategic"):
            if not isinstance(doc, dict):
                raise ValidationError([ErroredField("--patch", "a merge patch must be a JSON object", patch)])
            patched = patching.merge_patch(wire, doc)
        elif patch_type == "json":
            patched = _json_patch(wire, doc)
        else:
            raise ValidationError([ErroredField("--type", "must be one of strategic, merge, json", patch_type)])
        patched.setdefault("metadata", {})["resourceVersion"] = current.metadata.resource_version
        for immutable in ("name", "namespace"):
            if patched["metadata"].get(immutable, "") != wire["metadata"].get(immutable, ""):
                raise ValidationError([ErroredField(f"metadata.{immutable}", "cannot be changed by a patch")])
        new = api.parse_resource(patched)  # its errors name the resource
        return await self.update(new)

    # --- cross-resource rules ---------------------------------------------------------------

    async def _check_create(self, res: Resource) -> None:
        if isinstance(res, api.IPPool):
            new_net = fields.parse_cidr_or_ip(res.spec.cidr)[1]
            problems = []
            for other in (await self.list(api.IPPool)).items:
                if other.name == res.name:
                    continue
                other_net = fields.parse_cidr_or_ip(other.spec.cidr)[1]
                if other_net.version == new_net.version and other_net.overlaps(new_net):
                    problems.append(ErroredField(
                        "spec.cidr",
                        f"IPPool({res.name}) CIDR overlaps with IPPool({other.name}) CIDR {other.spec.cidr}",
                        res.spec.cidr))
            if problems:
                raise ValidationError(problems, context=res.identifier())

    @staticmethod
    def _check_update(old: Resource, new: Resource) -> None:
        if isinstance(old, api.IPPool) and isinstance(new, api.IPPool):
            problems = []
            if ipaddress.ip_network(old.spec.cidr) != ipaddress.ip_network(new.spec.cidr):
                problems.append(ErroredField("spec.cidr", "IPPool CIDR cannot be modified", new.spec.cidr))
            if old.spec.block_size != new.spec.block_size:
                problems.append(ErroredField("spec.blockSize", "IPPool BlockSize cannot be modified",
                                             new.spec.block_size))
            if problems:
                raise ValidationError(problems, context=new.identifier())

    # --- initialisation ------------------------------------------------------------------------

    async def _exists(self, key: ResourceKey) -> bool:
        try:
            await self.backend.get(key)
        except NotFound:
            return False
        return True

    async def ensure_initialized(self) -> api.ClusterInformation:
        """Make sure the ``default`` ClusterInformation exists and says the datastore is ready,
        and that the ``default`` tier exists (Calico's ``EnsureInitialized``)."""
        with contextlib.suppress(AlreadyExists):
            if not await self._exists(ResourceKey(api.Tier, DEFAULT_TIER)):
                await self.create(default_tier())
        key = ResourceKey(api.ClusterInformation, "default")
        try:
            current = await self.backend.get(key)
            info = current.value
            if info.spec.datastore_ready is None:
                info = info.model_copy(update={"spec": info.spec.model_copy(update={"datastore_ready": True})})
                updated: api.ClusterInformation = (await self.backend.update(KVPair(key, info, current.revision))).value
                return updated
            return info
        except NotFound:
            info = api.ClusterInformation.model_validate({
                "metadata": {"name": "default"},
                "spec": {"clusterGUID": uuid.uuid4().hex, "clusterType": "pycalico", "calicoVersion": CALICO_VERSION,
                         "datastoreReady": True},
            })
            created = await self.create(info)
            assert isinstance(created, api.ClusterInformation)
            return created


def _refuse_default_allow(operation: str, key: ResourceKey) -> None:
    """clientv3/profile.go: the static profile cannot be updated or deleted."""
    if static.is_default_allow(key):
        name = static.DEFAULT_ALLOW_PROFILE_NAME
        raise OperationNotSupported(operation, name, f"The profile \"{name}\" is a default provided by Calico and "
                                                     f"cannot be {'updated' if operation == 'Update' else 'deleted'}")


def _cls(kind: type[ModelT]) -> type[ModelT]:
    if isinstance(kind, type):
        return kind
    # A kind name: tests and data-driven callers pass strings; typed code passes the class.
    cls = api.by_kind(kind)
    if cls is None:
        raise ValidationError([ErroredField("kind", "unknown kind", kind)])
    return cast("type[ModelT]", cls)


def _key(kind: type[ModelT], name: str, namespace: str) -> ResourceKey[ModelT]:
    cls = _cls(kind)
    return ResourceKey(cls, name, namespace if cls.NAMESPACED else "")


def _json_patch(doc: dict[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902 JSON patch, errors named after the failing operation as calicoctl's flags."""
    try:
        out = patching.json_patch(doc, ops)
    except patching.PatchError as exc:
        if exc.index is None:
            raise ValidationError([ErroredField("--patch", str(exc))]) from None
        if str(exc).startswith("path does not exist"):
            raise ValidationError([ErroredField(f"--patch[{exc.index}].path", "path does not exist",
                                                exc.path)]) from None
        if str(exc).startswith("unsupported operation"):
            raise ValidationError([ErroredField(f"--patch[{exc.index}].op", "unsupported operation",
                                                ops[exc.index].get("op"))]) from None
        raise ValidationError([ErroredField(f"--patch[{exc.index}]", str(exc))]) from None
    if not isinstance(out, dict):
        raise ValidationError([ErroredField("--patch", "the patched document is not an object")])
    return out
