"""crds/ is generated from the models, never stale, structural, and valid for deploy/'s Kubernetes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from libcalico.api import crds, registry

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "crds").glob("*/*.yaml"))


def kubernetes_version() -> str:
    """The Kubernetes version deploy/ runs: the kind node image's tag."""
    config = yaml.safe_load((ROOT / "deploy/kind/cluster.yaml").read_text())
    tags = {re.fullmatch(r"kindest/node:v(\d+\.\d+)\.\d+", n["image"]).group(1)  # type: ignore[union-attr]
            for n in config["nodes"]}
    assert len(tags) == 1, tags
    return f"{tags.pop()}.0"


def test_checked_in_crds_are_what_the_models_generate() -> None:
    r = subprocess.run([sys.executable, "-m", "libcalico.api.crds", str(ROOT / "crds"), "--check"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_check_names_stale_and_stray_files(tmp_path: Path) -> None:
    out = tmp_path / "crds"
    shutil.copytree(ROOT / "crds", out)
    (out / "v1/crd.projectcalico.org_ippools.yaml").write_text("# edited by hand\n")
    (out / "v1/stray.yaml").write_text("{}\n")
    r = subprocess.run([sys.executable, "-m", "libcalico.api.crds", str(out), "--check"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1
    assert "stale:" in r.stderr and "crd.projectcalico.org_ippools.yaml" in r.stderr
    assert "not generated (remove it)" in r.stderr and "stray.yaml" in r.stderr


def test_one_crd_per_stored_kind_in_each_group() -> None:
    stored = {k for k in registry.KINDS if k not in crds.DERIVED_KINDS}
    for subdir, group in (("v1", crds.V1_GROUP), ("v3", crds.V3_GROUP)):
        docs = [yaml.safe_load(f.read_text()) for f in FILES if f.parent.name == subdir]
        assert {d["spec"]["names"]["kind"] for d in docs} == stored
        for d in docs:
            cls = registry.by_kind(d["spec"]["names"]["kind"])
            assert cls is not None
            assert d["metadata"]["name"] == f"{cls.PLURAL}.{group}"
            assert d["spec"]["scope"] == ("Namespaced" if cls.NAMESPACED else "Cluster")
            assert d["spec"]["names"]["listKind"] == f"{cls.KIND}List"
            assert d["spec"]["names"]["singular"] == cls.KIND.lower()


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_crd_is_valid_for_the_deployed_kubernetes(path: Path) -> None:
    kubernetes_validate.validate(yaml.safe_load(path.read_text()), kubernetes_version(), strict=True)


FORBIDDEN = {"$ref", "$defs", "title", "default", "const", "anyOf", "oneOf", "allOf", "additionalItems"}


def structural_problems(node: dict[str, Any], path: str) -> list[str]:
    problems = [f"{path}: has {k}" for k in FORBIDDEN & set(node)]
    if not ({"type", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string"} & set(node)):
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: both properties and additionalProperties")
    for name, sub in (node.get("properties") or {}).items():
        problems += structural_problems(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        problems += structural_problems(node["items"], f"{path}[]")
    return problems


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_schema_is_structural(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    for version in doc["spec"]["versions"]:
        assert structural_problems(version["schema"]["openAPIV3Schema"], "") == []
