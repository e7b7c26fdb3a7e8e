"""``calico-lab dashboards --png``: the rendering (lab.dashboards) from given and from real Prometheus results.

No namespaces here: the real case is a Prometheus on loopback scraping a real calico-typha (the
fixture of tests/deploy/test_deploy_observability.py), whose query_range answers are drawn exactly as the
lab's are. Set PYCALICO_DOCS_IMG=1 to also write that picture to docs/img/typha-dashboard.png.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from lab import dashboards as dash
from lab.cluster import Lab, LabError, LabState
from tests.deploy.test_deploy_observability import OBS, exprs, load, typha_scraped_by_prometheus

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def titles(fig: Any) -> list[str]:
    return [ax.get_title(loc="left") for ax in fig.axes]


def test_every_dashboard_loads_with_its_panels_in_grafanas_reading_order() -> None:
    found = {d.name: d for d in dash.dashboards()}
    assert set(found) == {"felix", "typha", "ipam"}
    for name, d in found.items():
        raw = load(OBS / "dashboards" / f"{name}.json")
        ordered = sorted(raw["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
        assert [p.title for p in d.panels] == [p["title"] for p in ordered]
        assert d.range_seconds == 3600


def test_legend_fills_grafanas_legend_format_from_the_series_labels() -> None:
    assert dash.legend("{{syncer}} {{instance}}", {"syncer": "felix", "instance": "a:9093"}) == "felix a:9093"
    assert dash.legend("", {"job": "typha"}) == '{job="typha"}'


def test_render_draws_one_titled_axes_per_panel_and_says_no_data_where_there_is_none(tmp_path: Path) -> None:
    d = dash.load(OBS / "dashboards" / "felix.json")
    results: dash.Results = [[{"label": "a", "points": [[1_700_000_000.0 + i, float(i)] for i in range(5)]}]
                             if i % 2 == 0 else [] for i in range(len(d.panels))]
    fig = dash.figure(d, results)
    assert titles(fig) == [p.title for p in d.panels]
    empty = [ax for ax in fig.axes if any(t.get_text() == "No data" for t in ax.texts)]
    assert len(empty) == len(d.panels) // 2
    path = dash.render(d, results, tmp_path / "felix.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_render_refuses_results_that_do_not_match_the_panels(tmp_path: Path) -> None:
    d = dash.load(OBS / "dashboards" / "typha.json")
    with pytest.raises(dash.DashboardError, match=f"1 results for {len(d.panels)} panels"):
        dash.render(d, [[]], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_fetch_from_a_prometheus_that_does_not_answer_names_it() -> None:
    from tests.etcd_server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(dash.DashboardError, match=f"Prometheus at {url} does not answer"):
        dash.fetch(dash.load(OBS / "dashboards" / "typha.json"), url)


def test_dashboards_on_a_lab_without_prometheus_is_a_clear_error_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "state.json").write_text(json.dumps(dataclasses.asdict(LabState())))
    out = tmp_path / "png"
    with pytest.raises(LabError, match=r"no Prometheus: it was not started with `calico-lab up --observability`"):
        dash.lab_pngs(Lab(tmp_path, "lab"), out)
    if os.geteuid() == 0:
        from lab.main import main

        assert main(["--dir", str(tmp_path), "dashboards", "--png", str(out)]) == 1
        assert "--observability" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.etcd
async def test_the_typha_dashboard_drawn_from_a_real_prometheus_is_a_png_of_its_panels(
        etcd: Any, tmp_path: Path) -> None:
    d = dash.load(OBS / "dashboards" / "typha.json")
    async with typha_scraped_by_prometheus(etcd, tmp_path) as scraped:
        panels = exprs(load(OBS / "dashboards" / "typha.json"))
        must = {"Connections", "Snapshot: keys in the cache", "Breadcrumb sequence number", "Client latency (mean)"}
        await scraped.until_data(panels, need=lambda empty: not must & {t for t, _ in empty})
        if os.environ.get("PYCALICO_DOCS_IMG"):   # a minute of traffic makes a better picture
            await scraped.churn_for(60)
        results = await asyncio.to_thread(dash.fetch, d, f"http://127.0.0.1:{scraped.port}", range_seconds=120,
                                          step=1)
    by_title = dict(zip((p.title for p in d.panels), results))
    for title in must:
        assert by_title[title] and all(s["points"] for s in by_title[title]), title
    assert any(s["label"].startswith("open 127.0.0.1:") for s in by_title["Connections"]), by_title["Connections"]
    fig = dash.figure(d, results)
    assert titles(fig) == [p.title for p in d.panels] and len(fig.axes) == len(d.panels) == 10
    png = dash.render(d, results, tmp_path / "png" / "typha-dashboard.png")
    assert png.read_bytes()[:8] == PNG_MAGIC
    if os.environ.get("PYCALICO_DOCS_IMG"):
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(png, ROOT / "docs" / "img" / "typha-dashboard.png")
