"""Kinds are types: code names a kind by its model class, and a kind string is looked up only at an edge.

The registry (:mod:`libcalico.api.registry`) is keyed by the class; a key or list option built from the
class types what the datastore returns, so a misspelt kind is a type error, and an unknown kind string
where strings come in fails with Calico's message, naming it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

from libcalico import api, model
from libcalico.api import registry
from libcalico.backend.memory import MemoryBackend
from libcalico.model import KVPair, ResourceKey, ResourceListOptions

ROOT = Path(__file__).resolve().parents[2]


class TestRegistry:
    def test_every_class_is_found_by_its_kind_name_and_by_its_plural(self) -> None:
        for kind, cls in registry.KINDS.items():
            assert registry.kind_of(cls) == kind
            assert registry.class_of(kind) is cls
            assert registry.class_of(cls.PLURAL) is cls

    def test_an_unknown_kind_string_at_an_edge_is_refused_naming_it(self) -> None:
        with pytest.raises(registry.UnknownKind, match=r"^resource type 'IPPol' is not supported$") as caught:
            registry.class_of("IPPol")
        assert caught.value.kind == "IPPol"
        with pytest.raises(ValueError, match="resource type 'WorkloadEndpiont' is not supported"):
            ResourceKey.of_kind("WorkloadEndpiont", "x", "default")

    def test_a_key_built_from_a_string_uses_it_and_fails_naming_it_when_unknown(self) -> None:
        with pytest.raises(registry.UnknownKind, match="resource type 'Bogus' is not supported"):
            ResourceKey("Bogus", "x").path()  # type: ignore[arg-type]


class TestKeysFromClasses:
    def test_a_key_from_the_class_equals_the_key_from_its_kind_name(self) -> None:
        assert ResourceKey(api.IPPool, "p") == ResourceKey.of_kind("IPPool", "p")
        assert ResourceKey(api.IPPool, "p").kind == "IPPool"
        assert ResourceKey(api.IPPool, "p").path() == "/calico/resources/v3/projectcalico.org/ippools/p"
        assert ResourceListOptions(api.BlockAffinity, node="n1").prefix() == "/calico/ipam/v2/host/n1/"
        assert str(ResourceKey(api.WorkloadEndpoint, "w", "ns")) == "WorkloadEndpoint(ns/w)"

    async def test_a_get_by_class_returns_that_class(self) -> None:
        be = MemoryBackend()
        pool = api.IPPool.model_validate({"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/24"}})
        await be.create(KVPair(ResourceKey(api.IPPool, "p"), pool))
        got = await be.get(ResourceKey(api.IPPool, "p"))
        assert isinstance(got.value, api.IPPool) and got.value.spec.cidr == "10.0.0.0/24"
        listed = await be.list(ResourceListOptions(api.IPPool))
        assert [kv.value.spec.cidr for kv in listed.items] == ["10.0.0.0/24"]

    def test_each_kind_has_calicos_key_prefix(self) -> None:
        assert model.key_prefix(api.IPPool) == "/calico/resources/v3/projectcalico.org/ippools/"
        assert model.key_prefix(api.NetworkPolicy) == "/calico/resources/v3/projectcalico.org/networkpolicies/"
        assert model.key_prefix(api.IPAMBlock) == "/calico/ipam/v2/assignment/"
        assert model.key_prefix(api.BlockAffinity) == "/calico/ipam/v2/host/"
        assert model.key_prefix(api.IPAMConfig) == "/calico/ipam/v2/config"
        for cls in registry.KINDS.values():
            assert ResourceListOptions(cls).prefix() == model.key_prefix(cls)


class TestTypoIsATypeError:
    def test_mypy_rejects_a_kind_string_and_a_misspelt_kind_class(self, tmp_path: Path) -> None:
        snippet = tmp_path / "typo.py"
        snippet.write_text(textwrap.dedent("""\
            from libcalico import api
            from libcalico.model import ResourceKey, ResourceListOptions

            ResourceListOptions("IPPol")
            ResourceKey(api.IPPol, "default")
            """))
        out, _, status = mypy_api.run([
            "--strict", "--no-incremental", "--follow-imports=silent", "--config-file", str(ROOT / "pyproject.toml"),
            "--cache-dir", str(tmp_path / "cache"), str(snippet)])
        assert status == 1, out
        assert 'typo.py:4: error: Argument 1 to "ResourceListOptions" has incompatible type "str"' in out
        assert 'typo.py:5: error: Module has no attribute "IPPol"' in out
