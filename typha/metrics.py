"""Typha's Prometheus metrics, with exactly Calico's names, types and summaries.

Calico's Typha (``typha/pkg/snapcache``, ``typha/pkg/syncserver``) registers
its metrics with the Go client; :mod:`libcalico.metrics` exposes them as that
client would (a counter keeps its name: ``typha_connections_accepted``, while
``typha_updates_total`` is the one named so; every summary has Calico's
0.5/0.9/0.99 quantiles). The daemon runner serves :data:`REGISTRY` on
``TYPHA_PROMETHEUSMETRICSPORT`` (9093). Per-syncer metrics carry Calico's
``syncer`` label and, as Calico pre-creates them, exist from the start for
every syncer type (a dashboard sees zeros rather than gaps).
"""

from __future__ import annotations

import prometheus_client as prom

from libcalico import syncers
from libcalico.metrics import CONTENT_TYPE, Summary, counter, exposition as _exposition

REGISTRY = prom.CollectorRegistry()
_SYNCER = ["syncer"]


def _counter(name: str, doc: str, labels: list[str] | None = None) -> prom.Counter:
    return counter(name, doc, labels or [], registry=REGISTRY)


# --- the snapshot cache (typha/pkg/snapcache) ---------------------------------------------------
SEQ_NUMBER = prom.Gauge("typha_breadcrumb_seq_number",
                        "Current (server-local) sequence number; number of snapshot deltas processed.",
                        _SYNCER, registry=REGISTRY)
BREADCRUMB_NON_BLOCK = _counter("typha_breadcrumb_non_block",
                                "Count of the number of times Typha got the next Breadcrumb without blocking.",
                                _SYNCER)
BREADCRUMB_BLOCK = _counter("typha_breadcrumb_block",
                            "Count of the number of times Typha got the next Breadcrumb after blocking.", _SYNCER)
UPDATES_TOTAL = _counter("typha_updates_total", "Total number of updates received from the Syncer.", _SYNCER)
UPDATES_SKIPPED = _counter("typha_updates_skipped", "Total number of updates skipped as duplicates.", _SYNCER)
CACHE_SIZE = prom.Gauge("typha_cache_size",
                        "Current number of key/value pairs contained in the cache of the datastore.",
                        _SYNCER, registry=REGISTRY)
BREADCRUMB_SIZE = Summary("typha_breadcrumb_size", "Number of KVs recorded in each breadcrumb.",
                               _SYNCER, registry=REGISTRY)

# --- the encoded snapshots (typha/pkg/syncserver/snap_precalc.go) -------------------------------
SNAPSHOTS_GENERATED = _counter("typha_snapshots_generated", "Number of binary snapshots generated.", _SYNCER)
SNAPSHOTS_REUSED = _counter("typha_snapshots_reused", "Number of binary snapshots that were cached and reused.",
                            _SYNCER)
SNAPSHOT_RAW_BYTES = prom.Gauge("typha_snapshot_raw_bytes",
                                "Size of the most recently generated binary snapshot (before compression).",
                                _SYNCER, registry=REGISTRY)
SNAPSHOT_COMPRESSED_BYTES = prom.Gauge("typha_snapshot_compressed_bytes",
                                       "Size of the most recently generated binary snapshot (after compression).",
                                       _SYNCER, registry=REGISTRY)

# --- the server (typha/pkg/syncserver) ----------------------------------------------------------
CONNECTIONS_ACCEPTED = _counter("typha_connections_accepted", "Total number of connections accepted over time.")
CONNECTIONS_DROPPED = _counter("typha_connections_dropped", "Total number of connections dropped due to rebalancing.")
CONNECTIONS_ACTIVE = prom.Gauge("typha_connections_active", "Number of open client connections, including "
                                "connections that are still in the handshake.", registry=REGISTRY)
CONNECTIONS_STREAMING = prom.Gauge("typha_connections_streaming", "Number of client connections that completed "
                                   "the handshake and are streaming data.", _SYNCER, registry=REGISTRY)
GRACE_USED = _counter("typha_connections_grace_used", "Total number of connections that made use of the grace "
                      "period to catch up after sending the initial snapshot.", _SYNCER)
SNAPSHOT_SEND_SECS = Summary("typha_client_snapshot_send_secs",
                                  "How long it took to send the initial snapshot to each client.", _SYNCER,
                                  registry=REGISTRY)
CLIENT_LATENCY = Summary("typha_client_latency_secs",
                              "Per-client latency.  I.e. how far behind the current state is each client.", _SYNCER,
                              registry=REGISTRY)
WRITE_LATENCY = Summary("typha_client_write_latency_secs", "Per-client write.  How long each write call is "
                             "taking.", _SYNCER, registry=REGISTRY)
NEXT_BREADCRUMB_LATENCY = Summary("typha_next_breadcrumb_latency_secs",
                                       "Time to retrieve next breadcrumb when already behind.", _SYNCER,
                                       registry=REGISTRY)
PING_LATENCY = Summary("typha_ping_latency", "Round-trip ping latency to client.", _SYNCER, registry=REGISTRY)
KVS_PER_MSG = Summary("typha_kvs_per_msg", "Number of KV pairs sent in each message.", _SYNCER,
                           registry=REGISTRY)

for _t in syncers.ALL_TYPES:
    for _m in (SEQ_NUMBER, BREADCRUMB_NON_BLOCK, BREADCRUMB_BLOCK, UPDATES_TOTAL, UPDATES_SKIPPED, CACHE_SIZE,
               SNAPSHOTS_GENERATED, SNAPSHOTS_REUSED, SNAPSHOT_RAW_BYTES, SNAPSHOT_COMPRESSED_BYTES,
               CONNECTIONS_STREAMING, GRACE_USED, BREADCRUMB_SIZE, SNAPSHOT_SEND_SECS, CLIENT_LATENCY, WRITE_LATENCY,
               NEXT_BREADCRUMB_LATENCY, PING_LATENCY, KVS_PER_MSG):
        _m.labels(_t)


def exposition() -> bytes:
    """What ``GET /metrics`` answers: :data:`REGISTRY` as Calico's Typha exposes it."""
    return _exposition(REGISTRY)


__all__ = ["CONTENT_TYPE", "REGISTRY", "exposition"]
