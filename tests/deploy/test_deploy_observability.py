"""deploy/observability/: the scrape config and the dashboards are valid, and query only real metrics.

A dashboard whose query names a metric nobody exposes shows "No data" forever and looks
like an idle cluster. So every panel's PromQL is checked by ``promtool`` (Debian's
``prometheus`` package), and each metric it names is one the code exposes: Felix's and
Typha's from their own registries (what ``/metrics`` would serve, ``_total``, ``_sum`` and
``_count`` included), the IPAM dashboard's from Calico's calico-kube-controllers names (that
code is being written with those names; the list here is the contract).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client as prom
import pytest
import yaml

from libcalico import metrics

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "deploy" / "observability"
DASHBOARDS = sorted((OBS / "dashboards").glob("*.json"))
# Calico's calico-kube-controllers IPAM metrics (kube-controllers/pkg/controllers/node/ipam.go).
CALICO_IPAM_METRICS = {"ipam_allocations_in_use", "ipam_allocations_borrowed", "ipam_blocks",
                       "ipam_allocations_gc_candidates", "ipam_allocations_gc_reclamations", "ipam_ippool_size"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset"}

JSON = dict[str, Any]


def served(registry: prom.CollectorRegistry) -> set[str]:
    """The sample names /metrics serves for a registry (libcalico.metrics: Calico's names, as the Go client)."""
    types = [line.split()[2:4] for line in metrics.exposition(registry).decode().splitlines()
             if line.startswith("# TYPE ")]
    return {n + s for n, t in types for s in (("", "_sum", "_count") if t == "summary" else ("",))}


def code_metrics() -> dict[str, set[str]]:
    from felix import daemon as felix_daemon
    from typha import metrics as typha_metrics

    return {"felix": served(felix_daemon.REGISTRY), "typha": served(typha_metrics.REGISTRY),
            "kube-controllers": CALICO_IPAM_METRICS}


def load(path: Path) -> JSON:
    doc: JSON = json.loads(path.read_text())
    return doc


def exprs(dashboard: JSON) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, label names or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings (label values, $instance)
    text = re.sub(r"\{[^}]*\}", "", text)                      # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                     # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = {m.group() for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text)
             if not text[m.end():].lstrip().startswith("(")}   # a function (or an aggregation's body)
    return names - PROMQL_WORDS


def test_metric_names_finds_the_selected_metrics_and_nothing_else() -> None:
    assert metric_names('sum by (ippool) (ipam_blocks{node=~"$n"}) / on (ippool) sum(rate(x_total[5m]))') == \
        {"ipam_blocks", "x_total"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: scripts/install-deps.sh installs Debian's prometheus")
    return path


def test_the_scrape_config_passes_promtool(promtool: str) -> None:
    r = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=OBS, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_scrape_jobs_are_the_ones_the_dashboards_select_and_the_manifests_ports() -> None:
    config = yaml.safe_load((OBS / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    assert jobs == {"felix", "typha", "kube-controllers"}
    for path in DASHBOARDS:
        instance = next(v for v in load(path)["templating"]["list"] if v["name"] == "instance")
        assert re.search(r'job="([^"]+)"', instance["query"]["query"]).group(1) in jobs  # type: ignore[union-attr]
    ports = {d["metadata"]["name"]: {p["containerPort"] for c in d["spec"]["template"]["spec"]["containers"]
                                     for p in c.get("ports", []) if p["name"] == "metrics"}
             for d in yaml.safe_load_all((ROOT / "deploy/calico.yaml").read_text())
             if d and d["kind"] in ("DaemonSet", "Deployment")}
    assert ports == {"calico-node": {9091}, "calico-typha": {9093}, "calico-kube-controllers": {9094}}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_each_dashboard_is_a_grafana_dashboard_with_unique_panels(path: Path) -> None:
    d = load(path)
    assert d["uid"] == f"pycalico-{path.stem}" and d["title"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]


def test_the_dashboards_cover_what_the_issue_asks() -> None:
    titles = {path.stem: " ".join(p["title"].lower() for p in load(path)["panels"]) for path in DASHBOARDS}
    for word in ("endpoints", "policies", "apply time", "failures", "resync"):
        assert word in titles["felix"], word
    for word in ("connections", "snapshot", "breadcrumb", "ping latency"):
        assert word in titles["typha"], word
    for word in ("pool", "node", "borrowed", "leaks"):
        assert word in titles["ipam"], word


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panels_promql_passes_promtool(path: Path, promtool: str, tmp_path: Path) -> None:
    # promtool checks PromQL in rule files: each query becomes a recording rule ($instance filled in).
    rules = [{"record": f"pycalico:check:{i}", "expr": e.replace("$instance", ".*")}
             for i, (_, e) in enumerate(exprs(load(path)))]
    file = tmp_path / "rules.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    r = subprocess.run([promtool, "check", "rules", str(file)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_metric_a_panel_queries_is_one_the_code_exposes(path: Path) -> None:
    d = load(path)
    job = re.search(r'job="([^"]+)"', next(v for v in d["templating"]["list"]  # type: ignore[union-attr]
                                           if v["name"] == "instance")["query"]["query"]).group(1)
    known = code_metrics()[job]
    for title, expr in exprs(d):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= known, f"{path.name}: {title}: {sorted(names - known)} not exposed by {job}"


# --- a real Prometheus, with this config, against a real Typha --------------------------------------


def prometheus_query(port: int, expr: str) -> list[JSON]:
    import urllib.parse
    import urllib.request

    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(expr)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        doc: JSON = json.loads(r.read())
    assert doc["status"] == "success", doc
    result: list[JSON] = doc["data"]["result"]
    return result


@contextlib.asynccontextmanager
async def typha_scraped_by_prometheus(etcd: Any, tmp_path: Path) -> AsyncIterator[Scraped]:
    """calico-typha on a real etcd with a Felix and a confd behind it (both in sync), scraped by Debian's
    Prometheus through deploy/observability/prometheus.yml (its targets file written, its interval shortened)."""
    from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
    from tests.etcd_server import free_port
    from tests.typha.helpers import wait_for
    from tests.typha.test_typha_process import churn, consumers, typha_process

    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: scripts/install-deps.sh installs Debian's prometheus")
    be = EtcdBackend(EtcdConfig(endpoints=(etcd.endpoint,), timeout=10))
    home = tmp_path / "prometheus"
    (home / "targets").mkdir(parents=True)
    config = (OBS / "prometheus.yml").read_text().replace("scrape_interval: 15s", "scrape_interval: 1s")
    (home / "prometheus.yml").write_text(config)
    port = free_port()
    proc = None
    try:
        async with typha_process(etcd.endpoint, tmp_path / "typha.log", serverpingintervalsecs="1") as typha, \
                consumers(typha.port) as cs:
            for job, targets in (("typha", [f"127.0.0.1:{typha.metrics}"]), ("felix", []), ("kube-controllers", [])):
                (home / "targets" / f"{job}.json").write_text(json.dumps([{"targets": targets}] if targets else []))
            proc = subprocess.Popen([binary, "--config.file=prometheus.yml", f"--storage.tsdb.path={home / 'data'}",
                                     f"--web.listen-address=127.0.0.1:{port}"], cwd=home,
                                    stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"))
            cs.felix("node1")
            cs.confd("node1", tmp_path)
            await wait_for(lambda: all(r.in_sync for r in cs.recorders), 60, "both clients in sync")
            rounds = 0

            async def churn_more() -> None:
                nonlocal rounds
                await churn(be, range(rounds * 5, rounds * 5 + 5))
                rounds += 1

            yield Scraped(port=port, churn=churn_more, proc=proc, log=tmp_path / "prometheus.log")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        await be.close()


@dataclass
class Scraped:
    port: int
    churn: Callable[[], Awaitable[None]]   # more datastore updates through Typha (breadcrumbs, client latency)
    proc: subprocess.Popen[bytes]
    log: Path

    async def churn_for(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            await self.churn()
            await asyncio.sleep(1)

    async def until_data(self, panels: list[tuple[str, str]], *, need: Callable[[list[tuple[str, str]]], bool],
                         timeout: float = 90) -> list[tuple[str, str]]:
        """Churn until ``need(panels without data)``; returns the panels still without data."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self.churn()
            empty = [(t, e) for t, e in panels
                     if not await asyncio.to_thread(prometheus_query, self.port, e.replace("$instance", ".*"))] \
                if self.proc.poll() is None and await asyncio.to_thread(_ready, self.port) else panels
            if need(empty):
                return empty
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            assert loop.time() < deadline, f"panels without data: {empty}"
            await asyncio.sleep(1)


@pytest.mark.etcd
async def test_a_real_prometheus_with_this_config_has_data_for_every_typha_panel(etcd: Any, tmp_path: Path) -> None:
    async with typha_scraped_by_prometheus(etcd, tmp_path) as scraped:
        panels = exprs(load(OBS / "dashboards/typha.json"))
        names = sorted({n for _, e in panels for n in metric_names(e)})
        await scraped.until_data(panels, need=lambda empty: not empty)
        up = await asyncio.to_thread(prometheus_query, scraped.port, 'up{job="typha"}')
        assert [s["value"][1] for s in up] == ["1"], up
        for name in names:
            assert await asyncio.to_thread(prometheus_query, scraped.port, f'{name}{{job="typha"}}'), name


def _ready(port: int) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False
