"""Bench: the Kubernetes backend's create and list against raw client calls in the same run.

Serves the test API server (tests/kube_api.py) with the v1 CRDs on 127.0.0.1.
Baseline: kubernetes-asyncio ``create_cluster_custom_object`` of the same
custom-resource bodies, and one raw ``list_cluster_custom_object``, same
concurrency. Ours adds the conversion (metadata annotation) and pydantic
validation on both ways. Reports ratios, never thresholds.

    python3 -m bench.k8s_backend [--n 1000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from bench.etcd_backend import pools, run_bounded
from libcalico.backend.kubernetes import KubeConfig, KubernetesBackend, conversion
from libcalico.model import ResourceListOptions
from tests.kube_api import running_api

ROOT = Path(__file__).resolve().parent.parent


async def main(n: int, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_api(Path(tmp), ROOT / "crds" / "v1") as k:
            cfg = k8s.Configuration()
            await k8s_config.load_kube_config(config_file=str(k.kubeconfig), client_configuration=cfg)
            raw_api = k8s.ApiClient(cfg)
            custom = k8s.CustomObjectsApi(raw_api)
            be = KubernetesBackend(KubeConfig(kubeconfig=str(k.kubeconfig), api_group=conversion.V1_API_VERSION))
            bodies = [conversion.resource_to_crd(kv.value, conversion.V1_API_VERSION) for kv in pools(n, "raw")]
            t = time.perf_counter()
            await run_bounded([custom.create_cluster_custom_object("crd.projectcalico.org", "v1", "ippools", b)
                               for b in bodies], concurrency)
            raw_create = time.perf_counter() - t
            ours_items = pools(n, "ours")
            t = time.perf_counter()
            await run_bounded([be.create(kv) for kv in ours_items], concurrency)
            ours_create = time.perf_counter() - t
            t = time.perf_counter()
            raw = await custom.list_cluster_custom_object("crd.projectcalico.org", "v1", "ippools")
            raw_list = time.perf_counter() - t
            t = time.perf_counter()
            listing = await be.list(ResourceListOptions("IPPool"))
            ours_list = time.perf_counter() - t
            assert len(listing.items) == len(raw["items"]) == 2 * n
            await be.close()
            await raw_api.close()
    return {
        "n": n, "concurrency": concurrency,
        "raw_create_per_s": round(n / raw_create), "create_per_s": round(n / ours_create),
        "create_vs_raw_time_ratio": round(ours_create / raw_create, 2),
        "list_items": 2 * n, "raw_list_s": round(raw_list, 4), "list_s": round(ours_list, 4),
        "list_vs_raw_time_ratio": round(ours_list / raw_list, 2),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=8)
    a = p.parse_args()
    print(json.dumps(asyncio.run(main(a.n, a.concurrency)), indent=2))
