"""libcalico.metrics: what Calico's Go-client metrics look like on /metrics, and ours alike.

A dashboard written for Calico queries ``felix_int_dataplane_failures`` (a counter with no
``_total``) and ``felix_int_dataplane_apply_time_seconds{quantile="0.99"}`` (every Calico summary
has the 0.5/0.9/0.99 objectives of libcalico-go's ``prometheus.NewSummary``).
"""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request

import prometheus_client as prom
import pytest

from libcalico import metrics
from tests.etcd_server import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(registry: prom.CollectorRegistry) -> list[str]:
    return metrics.exposition(registry).decode().splitlines()


def test_a_counter_keeps_the_name_it_was_given_and_has_no_created_series() -> None:
    reg = prom.CollectorRegistry()
    metrics.counter("x_failures", "Failures.", registry=reg).inc(3)
    metrics.counter("y_updates_total", "Updates.", ["syncer"], registry=reg).labels("bgp").inc()
    assert lines(reg) == ["# HELP x_failures Failures.", "# TYPE x_failures counter", "x_failures 3",
                          "# HELP y_updates_total Updates.", "# TYPE y_updates_total counter",
                          'y_updates_total{syncer="bgp"} 1']


def test_a_summary_has_calicos_three_quantiles_then_sum_and_count() -> None:
    reg = prom.CollectorRegistry()
    s = metrics.Summary("lat_secs", "Latency.", ["syncer"], registry=reg, clock=Clock())
    for v in range(1, 101):
        s.labels("felix").observe(v / 100)
    assert lines(reg) == ["# HELP lat_secs Latency.", "# TYPE lat_secs summary",
                          'lat_secs{syncer="felix",quantile="0.5"} 0.5',
                          'lat_secs{syncer="felix",quantile="0.9"} 0.9',
                          'lat_secs{syncer="felix",quantile="0.99"} 0.99',
                          'lat_secs_sum{syncer="felix"} 50.5', 'lat_secs_count{syncer="felix"} 100']


def test_a_summary_with_nothing_in_its_window_reports_nan_quantiles_but_keeps_sum_and_count() -> None:
    reg = prom.CollectorRegistry()
    clock = Clock()
    s = metrics.Summary("apply_seconds", "Apply.", registry=reg, clock=clock)
    assert 'apply_seconds{quantile="0.5"} NaN' in lines(reg)
    s.observe(2.0)
    assert 'apply_seconds{quantile="0.99"} 2' in lines(reg)
    clock.now += metrics.MAX_AGE + metrics.MAX_AGE / metrics.AGE_BUCKETS  # the sample left the window
    assert 'apply_seconds{quantile="0.99"} NaN' in lines(reg)
    assert "apply_seconds_sum 2" in lines(reg) and "apply_seconds_count 1" in lines(reg)


def test_quantiles_follow_the_last_ten_minutes() -> None:
    reg = prom.CollectorRegistry()
    clock = Clock()
    s = metrics.Summary("t", "T.", registry=reg, clock=clock)
    for _ in range(100):
        s.observe(10.0)
    clock.now += metrics.MAX_AGE * 0.5
    for _ in range(100):
        s.observe(1.0)
    assert 't{quantile="0.9"} 10' in lines(reg)      # both halves are in the window
    clock.now += metrics.MAX_AGE * 0.6
    assert 't{quantile="0.9"} 1' in lines(reg)       # the first half aged out


def test_a_busy_summary_keeps_bounded_samples_and_close_quantiles() -> None:
    reg = prom.CollectorRegistry()
    s = metrics.Summary("busy", "Busy.", registry=reg, clock=Clock())
    for v in range(100_000):
        s.observe(float(v))
    values = dict(re.findall(r'^busy\{quantile="([0-9.]+)"\} (\S+)$', "\n".join(lines(reg)), re.M))
    for q in metrics.QUANTILES:
        assert abs(float(values[str(q)]) / 100_000 - q) < 0.05, (q, values)


def test_wrong_label_values_are_refused_by_name() -> None:
    s = metrics.Summary("named", "N.", ["syncer"], registry=prom.CollectorRegistry())
    with pytest.raises(ValueError, match="named: 1 label values wanted, 2 given"):
        s.labels("a", "b")
    with pytest.raises(ValueError, match="named has labels syncer"):
        s.observe(1.0)


def test_the_server_answers_metrics_and_404s_anything_else() -> None:
    reg = prom.CollectorRegistry()
    metrics.counter("served", "S.", registry=reg).inc()
    port = free_port()
    server = metrics.start_server("127.0.0.1", port, reg)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.headers["Content-Type"] == metrics.CONTENT_TYPE
            assert "served 1" in resp.read().decode().splitlines()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_felix_exposes_its_failures_counter_and_apply_time_quantiles_as_calico() -> None:
    from felix import daemon as felix_daemon

    text = metrics.exposition(felix_daemon.REGISTRY).decode()
    assert "# TYPE felix_int_dataplane_failures counter" in text
    assert re.search(r"^felix_int_dataplane_failures \S+$", text, re.M)
    assert "# TYPE felix_int_dataplane_apply_time_seconds summary" in text
    for q in ("0.5", "0.9", "0.99"):
        assert f'felix_int_dataplane_apply_time_seconds{{quantile="{q}"}}' in text
    assert not re.search(r"_(total|created)\b", text)


def test_typhas_summaries_have_quantiles_for_every_syncer() -> None:
    from typha import metrics as typha_metrics

    text = typha_metrics.exposition().decode()
    for syncer in ("felix", "bgp"):
        assert f'typha_client_latency_secs{{syncer="{syncer}",quantile="0.99"}}' in text
    assert math.isnan(float(re.search(r'typha_ping_latency\{syncer="felix",quantile="0.5"\} (\S+)',
                                      text).group(1)))  # type: ignore[union-attr]
