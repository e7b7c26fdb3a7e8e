"""``calico-lab dashboards --png DIR``: deploy/observability's dashboards as pictures, from the lab's Prometheus.

The lab has a Prometheus (``up --observability``) but no Grafana, and the dashboards are Grafana
JSON. So each dashboard's panels are drawn with matplotlib from Prometheus's own ``query_range``
answers: one PNG per dashboard, its panels in a grid laid out as Grafana's ``gridPos`` does (two
panels a row). What the picture shows is what Grafana would, query for query.

Fetching and rendering are separate on purpose. :func:`fetch` asks Prometheus over its HTTP API
and returns plain JSON-able results; :func:`render` draws any such results. The lab's Prometheus
listens in the underlay namespace, so the fetch runs there (``python3 -m lab.dashboards``, its
results on stdout) while the rendering stays on the host; and a test renders real results from a
Prometheus on loopback without any namespace.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import data

if TYPE_CHECKING:
    from lab.cluster import Lab

DASHBOARDS_DIR = data.OBSERVABILITY / "dashboards"  # package data: deploy/observability/dashboards

JSON = dict[str, Any]
Series = JSON          # {"label": str, "points": [[unix seconds, value], ...]}
Results = list[list[Series]]  # one list of series per panel, in the dashboard's panel order


class DashboardError(Exception):
    """A dashboard that cannot be read, or a Prometheus that cannot be asked."""


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class Dashboard:
    name: str            # the file's stem: felix, typha, ipam
    title: str
    panels: tuple[Panel, ...]
    range_seconds: int   # the dashboard's default time range ("now-1h" -> 3600)


def load(path: Path) -> Dashboard:
    """A Grafana dashboard JSON file's panels, in Grafana's reading order (top to bottom, left to right)."""
    try:
        doc: JSON = json.loads(path.read_text())
        panels = sorted(doc["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
        return Dashboard(
            name=path.stem, title=doc["title"], range_seconds=_range_seconds(doc.get("time", {}).get("from", "now-1h")),
            panels=tuple(Panel(title=p["title"], unit=p.get("fieldConfig", {}).get("defaults", {}).get("unit", ""),
                               targets=tuple(Target(t["expr"], t.get("legendFormat", "")) for t in p["targets"]))
                         for p in panels))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DashboardError(f"{path}: not a readable Grafana dashboard: {exc}") from exc


def _range_seconds(spec: str) -> int:
    m = re.fullmatch(r"now-(\d+)([smhd])", spec)
    if m is None:
        raise DashboardError(f"time range {spec!r}: expected now-<n>s|m|h|d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def dashboards(directory: Path = DASHBOARDS_DIR) -> list[Dashboard]:
    return [load(p) for p in sorted(directory.glob("*.json"))]


# --- fetching --------------------------------------------------------------------------------


def query_range(url: str, expr: str, *, start: float, end: float, step: float) -> list[JSON]:
    """Prometheus's ``/api/v1/query_range`` answer (a matrix), or a :class:`DashboardError` naming the query."""
    q = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query_range?{q}", timeout=10) as r:
            doc: JSON = json.loads(r.read())
    except urllib.error.HTTPError as exc:   # Prometheus answers a bad query with 400 and a JSON error
        raise DashboardError(f"Prometheus at {url} refused {expr!r}: {exc.read().decode(errors='replace')}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DashboardError(f"Prometheus at {url} does not answer: {exc}") from exc
    if doc.get("status") != "success":
        raise DashboardError(f"Prometheus at {url} refused {expr!r}: {doc.get('error')}")
    result: list[JSON] = doc["data"]["result"]
    return result


def legend(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's ``legendFormat``: ``{{label}}`` replaced by the series' label value."""
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def fetch(dashboard: Dashboard, url: str, *, end: float | None = None, range_seconds: int | None = None,
          step: float | None = None) -> Results:
    """Every panel's series over the dashboard's range ending now ($instance: every instance)."""
    end = time.time() if end is None else end
    span = range_seconds or dashboard.range_seconds
    step = step or max(1.0, span / 240)
    out: Results = []
    for panel in dashboard.panels:
        series: list[Series] = []
        for t in panel.targets:
            for s in query_range(url, t.expr.replace("$instance", ".*"), start=end - span, end=end, step=step):
                series.append({"label": legend(t.legend, s["metric"]),
                               "points": [[float(ts), float(v)] for ts, v in s["values"]]})
        out.append(series)
    return out


# --- rendering -------------------------------------------------------------------------------

_UNITS = {"s": "seconds", "ops": "per second", "percentunit": "", "short": ""}


def figure(dashboard: Dashboard, results: Results) -> Any:
    """A matplotlib Figure: one axes per panel, titled as the panel, two panels a row (Grafana's w=12 of 24)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

    if len(results) != len(dashboard.panels):
        raise DashboardError(f"{dashboard.name}: {len(results)} results for {len(dashboard.panels)} panels")
    cols = 2
    rows = max(1, math.ceil(len(dashboard.panels) / cols))
    fig = Figure(figsize=(7 * cols, 3.2 * rows), layout="constrained")
    fig.suptitle(f"{dashboard.title} (deploy/observability/dashboards/{dashboard.name}.json)", fontsize=14)
    grid = fig.add_gridspec(rows, cols)
    clock = FuncFormatter(lambda x, _: datetime.fromtimestamp(x, tz=timezone.utc).strftime("%H:%M:%S"))
    times = [p[0] for series in results for s in series for p in s["points"]]
    span = (min(times), max(times)) if times and min(times) < max(times) else None
    for i, (panel, series) in enumerate(zip(dashboard.panels, results)):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.set_title(panel.title, fontsize=11, loc="left")
        ax.grid(True, alpha=0.3)
        # Prometheus answers 0/0 (a mean over no events) with NaN: no point, as Grafana draws it.
        drawn = [(s["label"], pts) for s in series if (pts := [p for p in s["points"] if math.isfinite(p[1])])]
        if not drawn:
            ax.text(0.5, 0.5, "No data", ha="center", va="center", transform=ax.transAxes, color="grey")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for label, pts in drawn:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, linewidth=1.4, marker="." if len(pts) < 20 else "")
        if span is not None:   # every panel over the same time range, as on a dashboard
            ax.set_xlim(*span)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 3, 6, 10]))   # x: unix seconds, UTC
        ax.xaxis.set_major_formatter(clock)
        if panel.unit == "percentunit":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        if _UNITS.get(panel.unit, panel.unit):
            ax.set_ylabel(_UNITS.get(panel.unit, panel.unit), fontsize=9)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, loc="upper left")
    return fig


def render(dashboard: Dashboard, results: Results, path: Path) -> Path:
    """Write the dashboard's panels, drawn from ``results``, as a PNG at ``path``."""
    fig = figure(dashboard, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


# --- the fetch, run where Prometheus is reachable ----------------------------------------------


def lab_pngs(lab: Lab, out: Path, *, range_seconds: int | None = None) -> list[Path]:
    """The lab's dashboards as PNGs in ``out``: fetched in the underlay (where Prometheus listens), drawn here."""
    from lab.cluster import GATEWAY, LabError

    if not lab.state.observability:
        raise LabError("this lab has no Prometheus: it was not started with `calico-lab up --observability`")
    url = f"http://{GATEWAY}:9090"
    cmd = [sys.executable, "-m", "lab.dashboards", "--url", url]
    if range_seconds is not None:
        cmd += ["--range", str(range_seconds)]
    r = lab.run(lab.underlay, *cmd, check=False)
    if r.returncode != 0:
        raise LabError(f"asking the lab's Prometheus ({url} in {lab.underlay}): {(r.stderr or r.stdout).strip()}")
    results: dict[str, Results] = json.loads(r.stdout)
    by_name = {d.name: d for d in dashboards()}
    return [render(by_name[name], res, out / f"{name}-dashboard.png") for name, res in results.items()]


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m lab.dashboards --url URL [NAME...]``: every named dashboard's results as JSON on stdout."""
    p = argparse.ArgumentParser(prog="python3 -m lab.dashboards", description=main.__doc__)
    p.add_argument("--url", required=True, help="Prometheus's base URL")
    p.add_argument("--range", type=int, default=None, dest="range_seconds", help="seconds (default: the dashboard's)")
    p.add_argument("names", nargs="*", help="dashboard names (default: all)")
    args = p.parse_args(argv)
    try:
        found = {d.name: d for d in dashboards()}
        unknown = sorted(set(args.names) - set(found))
        if unknown:
            raise DashboardError(f"no dashboard {', '.join(unknown)}; dashboards: {', '.join(found)}")
        out = {name: fetch(found[name], args.url, range_seconds=args.range_seconds) for name in args.names or found}
    except DashboardError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
