"""Objects every datastore holds without storing them: the ``projectcalico-default-allow`` profile.

As libcalico-go's ``lib/resources/static.go``: a profile with one ``Allow``
ingress rule and one ``Allow`` egress rule, at revision ``1``, that each
backend returns from a get of its name and adds to every list of profiles
(``etcdv3.go`` Get/List, ``k8s/resources/profile.go``). It is never written,
so there is nothing to migrate or clean up; ``calicoctl get profile`` shows
it and Felix sees it through the syncer's list. Host endpoints that must
allow traffic in the absence of policy name it (the automatic host endpoints
of calico-kube-controllers do). The typed client refuses to create, update
or delete it, with Calico's messages.
"""

from __future__ import annotations

from libcalico.api import policy
from libcalico.model import KVList, KVPair, ResourceKey, ResourceListOptions

DEFAULT_ALLOW_PROFILE_NAME = "projectcalico-default-allow"
DEFAULT_ALLOW_REVISION = "1"


def default_allow_profile() -> KVPair:
    """``resources.DefaultAllowProfile()``: a fresh copy each time (callers may change theirs)."""
    prof = policy.Profile.model_validate({
        "apiVersion": "projectcalico.org/v3", "kind": policy.Profile.KIND,
        "metadata": {"name": DEFAULT_ALLOW_PROFILE_NAME, "resourceVersion": DEFAULT_ALLOW_REVISION},
        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}})
    return KVPair(ResourceKey(policy.Profile, DEFAULT_ALLOW_PROFILE_NAME), prof, DEFAULT_ALLOW_REVISION)


def is_default_allow(key: ResourceKey) -> bool:
    return key.kind == policy.Profile.KIND and key.name == DEFAULT_ALLOW_PROFILE_NAME


def with_default_allow(opts: ResourceListOptions, listed: KVList) -> KVList:
    """``listed`` plus the default-allow profile when ``opts`` selects it (and it is not there)."""
    key = ResourceKey(policy.Profile, DEFAULT_ALLOW_PROFILE_NAME)
    if opts.matches(key) and not any(kv.key == key for kv in listed.items):
        listed.items.append(default_allow_profile())
    return listed


__all__ = ["DEFAULT_ALLOW_PROFILE_NAME", "default_allow_profile", "is_default_allow", "with_default_allow"]
