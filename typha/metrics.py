"""Typha's Prometheus metrics, exposed with exactly Calico's names and types.

Calico's Typha (``typha/pkg/snapcache``, ``typha/pkg/syncserver``) registers
its metrics with the Go client, which exposes a counter under the name it was
given: ``typha_connections_accepted`` is a counter called
``typha_connections_accepted``, and ``typha_updates_total`` is the one whose
name ends in ``_total``. The Python client instead renames every counter
(``..._total``) and adds a ``..._created`` series, so a dashboard or alert
written for Calico's Typha would find nothing. (Felix here sidesteps that by
declaring its counters as gauges, which changes their type; Typha's keep
theirs.)

So the metrics are kept in prometheus_client's objects (labels, locking), and
:func:`exposition` writes them in the Prometheus text format (0.0.4) as the Go
client would: each family under Calico's name and type, no ``_created``
series. :func:`serve` answers ``GET /metrics`` with that text on
``TYPHA_PROMETHEUSMETRICSPORT`` (9093). Per-syncer metrics carry Calico's
``syncer`` label and, as Calico pre-creates them, exist from the start for
every syncer type (a dashboard sees zeros rather than gaps). The summaries
carry ``_sum`` and ``_count`` (the Python client keeps no quantiles).
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import logging
import math

import prometheus_client as prom

from libcalico import syncers

log = logging.getLogger(__name__)

REGISTRY = prom.CollectorRegistry()
_SYNCER = ["syncer"]
# Calico's exposed name of each counter, by the family name prometheus_client gives it.
_COUNTER_NAMES: dict[str, str] = {}


def _counter(name: str, doc: str, labels: list[str] | None = None) -> prom.Counter:
    c = prom.Counter(name, doc, labels or [], registry=REGISTRY)
    for family in c.collect():  # prometheus_client strips "_total" from the family's name
        _COUNTER_NAMES[family.name] = name
    return c


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
BREADCRUMB_SIZE = prom.Summary("typha_breadcrumb_size", "Number of KVs recorded in each breadcrumb.",
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

for _t in syncers.ALL_TYPES:
    for _m in (SEQ_NUMBER, BREADCRUMB_NON_BLOCK, BREADCRUMB_BLOCK, UPDATES_TOTAL, UPDATES_SKIPPED, CACHE_SIZE,
               SNAPSHOTS_GENERATED, SNAPSHOTS_REUSED, SNAPSHOT_RAW_BYTES, SNAPSHOT_COMPRESSED_BYTES,
               CONNECTIONS_STREAMING, GRACE_USED, BREADCRUMB_SIZE, SNAPSHOT_SEND_SECS, CLIENT_LATENCY, WRITE_LATENCY,
               NEXT_BREADCRUMB_LATENCY, PING_LATENCY, KVS_PER_MSG):
        _m.labels(_t)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _value(v: float) -> str:
    """As Go's ``strconv.FormatFloat(v, 'g', -1, 64)``: ``0``, ``3``, ``0.25``, ``1.5e+06``, ``+Inf``."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    shortest = decimal.Decimal(repr(v))  # Python's repr and Go's -1 precision: the same shortest digits
    exp = shortest.adjusted()
    if v and (exp < -4 or exp >= 6):  # Go's %e range for the shortest form
        digits = "".join(map(str, shortest.as_tuple().digits)).rstrip("0")
        tail = "." + digits[1:] if len(digits) > 1 else ""
        return f"{'-' if v < 0 else ''}{digits[0]}{tail}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    text = repr(v)
    return text[:-2] if text.endswith(".0") else text


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def exposition(registry: prom.CollectorRegistry = REGISTRY) -> bytes:
    """The registry in the Prometheus text format, each family under Calico's name and type (as the Go client)."""
    out: list[str] = []
    for family in registry.collect():
        name = _COUNTER_NAMES.get(family.name, family.name) if family.type == "counter" else family.name
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {family.type}\n")
        for s in family.samples:
            if s.name.endswith("_created"):
                continue  # the Python client's own series; Calico's Typha has none
            sample = name if family.type == "counter" else s.name
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(s.labels.items()))
            out.append(f"{sample}{{{labels}}} {_value(s.value)}\n" if labels
                       else f"{sample} {_value(s.value)}\n")
    return "".join(out).encode()


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One HTTP request: ``GET /metrics`` gets :func:`exposition` (as Calico's ``promhttp`` handler); else 404."""
    try:
        line = (await asyncio.wait_for(reader.readline(), 5)).decode(errors="replace")
        while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
            pass  # the headers: nothing in them changes the answer
        parts = line.split(" ")
        path = parts[1].split("?")[0] if len(parts) > 1 else "/"
        if path == "/metrics":
            code, ctype, body = "200 OK", CONTENT_TYPE, exposition()
        else:
            code, ctype, body = "404 Not Found", "text/plain; charset=utf-8", b"404 page not found\n"
        writer.write(f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
        await writer.drain()
    except (OSError, TimeoutError, UnicodeError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run_server(host: str, port: int) -> None:
    """Serve :func:`serve` on ``host:port`` until cancelled (a root of the daemon: if it fails, Typha exits)."""
    server = await asyncio.start_server(serve, host, port)
    log.info("typha: Prometheus metrics on %s:%d", host, port)
    async with server:
        await server.serve_forever()
