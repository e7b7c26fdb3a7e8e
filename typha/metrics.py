"""Typha's Prometheus metrics, with Calico's names (``typha/pkg/snapcache``, ``typha/pkg/syncserver``).

One registry for the process, served on ``TYPHA_PROMETHEUSMETRICSPORT``
(9093). Per-syncer metrics carry Calico's ``syncer`` label. The Python client
adds ``_total`` to a counter's exposed name (``typha_connections_accepted``
is exposed as ``typha_connections_accepted_total``), as Felix's counters here
are; ``typha_updates_total`` keeps its name.
"""

from __future__ import annotations

import prometheus_client as prom

from libcalico import syncers

REGISTRY = prom.CollectorRegistry()
_SYNCER = ["syncer"]

# --- the snapshot cache -------------------------------------------------------------------------
SEQ_NUMBER = prom.Gauge("typha_breadcrumb_seq_number",
                        "Current (server-local) sequence number; number of snapshot deltas processed.",
                        _SYNCER, registry=REGISTRY)
BREADCRUMB_NON_BLOCK = prom.Counter("typha_breadcrumb_non_block",
                                    "Count of the number of times Typha got the next Breadcrumb without blocking.",
                                    _SYNCER, registry=REGISTRY)
BREADCRUMB_BLOCK = prom.Counter("typha_breadcrumb_block",
                                "Count of the number of times Typha got the next Breadcrumb after blocking.",
                                _SYNCER, registry=REGISTRY)
UPDATES_TOTAL = prom.Counter("typha_updates_total", "Total number of updates received from the Syncer.",
                             _SYNCER, registry=REGISTRY)
UPDATES_SKIPPED = prom.Counter("typha_updates_skipped", "Total number of updates skipped as duplicates.",
                               _SYNCER, registry=REGISTRY)
CACHE_SIZE = prom.Gauge("typha_cache_size",
                        "Current number of key/value pairs contained in the cache of the datastore.",
                        _SYNCER, registry=REGISTRY)
BREADCRUMB_SIZE = prom.Summary("typha_breadcrumb_size", "Number of KVs recorded in each breadcrumb.",
                               _SYNCER, registry=REGISTRY)

# --- the server ---------------------------------------------------------------------------------
CONNECTIONS_ACCEPTED = prom.Counter("typha_connections_accepted", "Total number of connections accepted over time.",
                                    registry=REGISTRY)
CONNECTIONS_DROPPED = prom.Counter("typha_connections_dropped",
                                   "Total number of connections dropped due to rebalancing.", registry=REGISTRY)
CONNECTIONS_ACTIVE = prom.Gauge("typha_connections_active", "Number of open client connections, including "
                                "connections that are still in the handshake.", registry=REGISTRY)
CONNECTIONS_STREAMING = prom.Gauge("typha_connections_streaming", "Number of client connections that completed "
                                   "the handshake and are streaming data.", _SYNCER, registry=REGISTRY)
GRACE_USED = prom.Counter("typha_connections_grace_used", "Total number of connections that made use of the grace "
                          "period to catch up after sending the initial snapshot.", _SYNCER, registry=REGISTRY)
SNAPSHOT_SEND_SECS = prom.Summary("typha_client_snapshot_send_secs",
                                  "How long it took to send the initial snapshot to each client.", _SYNCER,
                                  registry=REGISTRY)
CLIENT_LATENCY = prom.Summary("typha_client_latency_secs",
                              "Per-client latency.  I.e. how far behind the current state is each client.", _SYNCER,
                              registry=REGISTRY)
WRITE_LATENCY = prom.Summary("typha_client_write_latency_secs", "Per-client write.  How long each write call is "
                             "taking.", _SYNCER, registry=REGISTRY)
NEXT_BREADCRUMB_LATENCY = prom.Summary("typha_next_breadcrumb_latency_secs",
                                       "Time to retrieve next breadcrumb when already behind.", _SYNCER,
                                       registry=REGISTRY)
PING_LATENCY = prom.Summary("typha_ping_latency", "Round-trip ping latency to client.", _SYNCER, registry=REGISTRY)
KVS_PER_MSG = prom.Summary("typha_kvs_per_msg", "Number of KV pairs sent in each message.", _SYNCER,
                           registry=REGISTRY)

# Calico pre-creates each per-syncer series, so a dashboard sees zeros rather than gaps.
for _t in syncers.ALL_TYPES:
    for _m in (SEQ_NUMBER, BREADCRUMB_NON_BLOCK, BREADCRUMB_BLOCK, UPDATES_TOTAL, UPDATES_SKIPPED, CACHE_SIZE,
               CONNECTIONS_STREAMING, GRACE_USED):
        _m.labels(_t)
