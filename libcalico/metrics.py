"""Prometheus metrics as Calico's components expose them: the Go client's names, types and summaries.

Calico's Felix, Typha and kube-controllers register their metrics with the Go
client (client_golang), and dashboards, alerts and scripts are written against
what that client serves. Two things differ from the Python client
(prometheus_client), and both break such a dashboard:

* **Counter names.** The Go client exposes a counter under the name it was
  given: Typha's ``typha_connections_accepted`` is a counter called
  ``typha_connections_accepted``, Felix's ``felix_int_dataplane_failures``
  likewise; ``typha_updates_total`` is the one that ends in ``_total`` because
  it was named so. The Python client renames every counter ``..._total`` and
  adds a ``..._created`` series.
* **Summary quantiles.** Calico makes its summaries through libcalico-go's
  ``prometheus.NewSummary``, which gives every summary the objectives
  ``{0.5: 0.05, 0.9: 0.01, 0.99: 0.001}``: each exposes ``{quantile="0.5"}``,
  ``"0.9"`` and ``"0.99"`` series over the last ten minutes (client_golang's
  ``DefMaxAge``, in ``DefAgeBuckets`` = 5 steps), besides ``_sum`` and
  ``_count``. The Python client's summary has no quantiles at all, so a panel
  of ``felix_int_dataplane_apply_time_seconds{quantile="0.99"}`` (Calico's own
  Felix dashboard has one) would be empty.

So metrics live in prometheus_client's objects (labels, locking, registries),
counters are made with :func:`counter` (which remembers Calico's name),
summaries are this module's :class:`Summary`, and :func:`exposition` writes a
registry in the text format (0.0.4) as the Go client does: families sorted by
name, each under Calico's name and type, no ``_created`` series, a summary's
quantiles before its ``_sum`` and ``_count``. :func:`start_server` serves it
on ``GET /metrics`` from a thread (as ``promhttp`` serves from goroutines, a
scrape is answered while the daemon's loop is busy applying).

Quantiles are computed over the samples kept for the window (each 2-minute step
keeps at most :data:`SAMPLES_PER_STEP` of them, a uniform reservoir beyond
that), by nearest rank; with no sample in the window a quantile is ``NaN``, as
the Go client reports it.
"""

from __future__ import annotations

import decimal
import http.server
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import prometheus_client as prom
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# libcalico-go/lib/prometheus/summary.go DefObjectives: the quantiles every Calico summary exposes.
QUANTILES = (0.5, 0.9, 0.99)
# client_golang's DefMaxAge and DefAgeBuckets: the window a quantile covers, and its steps.
MAX_AGE = 600.0
AGE_BUCKETS = 5
SAMPLES_PER_STEP = 2048

# Calico's exposed name of each counter, by registry and the family name prometheus_client gives it.
_COUNTER_NAMES: dict[tuple[int, str], str] = {}


def counter(name: str, doc: str, labels: Sequence[str] = (), *, registry: prom.CollectorRegistry) -> prom.Counter:
    """A counter exposed under ``name`` itself, as the Go client exposes it (no ``_total`` added)."""
    c = prom.Counter(name, doc, list(labels), registry=registry)
    for family in c.collect():  # prometheus_client strips "_total" from the family's name
        _COUNTER_NAMES[(id(registry), family.name)] = name
    return c


class _Window:
    """One series' observations: the running sum and count, and the samples of the quantile window."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rng = random.Random(0)
        self.sum = 0.0
        self.count = 0
        self._steps: dict[int, tuple[list[float], list[int]]] = {}  # step -> (samples, [seen])

    def _step(self) -> int:
        return math.floor(self._clock() / (MAX_AGE / AGE_BUCKETS))

    def observe(self, value: float) -> None:
        value = float(value)
        step = self._step()
        with self._lock:
            self.sum += value
            self.count += 1
            kept, seen = self._steps.setdefault(step, ([], [0]))
            seen[0] += 1
            if len(kept) < SAMPLES_PER_STEP:
                kept.append(value)
            else:  # reservoir sampling: every observation of the step equally likely kept
                i = self._rng.randrange(seen[0])
                if i < SAMPLES_PER_STEP:
                    kept[i] = value
            for old in [s for s in self._steps if s <= step - AGE_BUCKETS]:
                del self._steps[old]

    def quantiles(self) -> list[tuple[float, float]]:
        now = self._step()
        with self._lock:
            values = sorted(v for s, (kept, _) in self._steps.items() if s > now - AGE_BUCKETS for v in kept)
        if not values:
            return [(q, math.nan) for q in QUANTILES]
        n = len(values)
        return [(q, values[min(n - 1, max(0, math.ceil(q * n) - 1))]) for q in QUANTILES]


class Summary(Collector):
    """A summary as Calico's ``prometheus.NewSummary`` makes it: quantiles 0.5/0.9/0.99, ``_sum``, ``_count``.

    The parts of prometheus_client's Summary API the daemons use: ``observe`` (no labels),
    ``labels(*values).observe``. Registered with ``registry`` on creation."""

    def __init__(self, name: str, doc: str, labels: Sequence[str] = (), *, registry: prom.CollectorRegistry,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labels)
        self._clock = clock
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], _Window] = {}
        if not self.labelnames:
            self._children[()] = _Window(clock)
        registry.register(self)

    def labels(self, *values: str) -> _Window:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(self.labelnames)} label values wanted, {len(values)} given")
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = _Window(self._clock)
            return child

    def observe(self, value: float) -> None:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {', '.join(self.labelnames)}: use .labels(...).observe")
        self._children[()].observe(value)

    def describe(self) -> Iterable[Metric]:
        return [Metric(self.name, self.doc, "summary")]

    def collect(self) -> Iterable[Metric]:
        family = Metric(self.name, self.doc, "summary")
        with self._lock:
            children = sorted(self._children.items())
        for values, child in children:
            labels = dict(zip(self.labelnames, values, strict=True))
            for q, v in child.quantiles():
                family.add_sample(self.name, {**labels, "quantile": _value(q)}, v)
            family.add_sample(self.name + "_sum", labels, child.sum)
            family.add_sample(self.name + "_count", labels, float(child.count))
        return [family]


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


def _labels(labels: dict[str, str]) -> str:
    """Label pairs in the Go client's order: the metric's own sorted by name, ``quantile``/``le`` last."""
    keys = sorted(k for k in labels if k not in ("quantile", "le")) + [k for k in ("quantile", "le") if k in labels]
    return ",".join(f'{k}="{_escape(labels[k])}"' for k in keys)


def exposition(registry: prom.CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format, each family under Calico's name and type (as the Go client)."""
    out: list[str] = []
    families = sorted(registry.collect(), key=lambda f: _COUNTER_NAMES.get((id(registry), f.name), f.name))
    for family in families:
        counter = family.type == "counter"
        name = _COUNTER_NAMES.get((id(registry), family.name), family.name) if counter else family.name
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {family.type}\n")
        for s in family.samples:
            if s.name.endswith("_created"):
                continue  # the Python client's own series; Calico's components have none
            sample = name if counter else s.name
            labels = _labels(s.labels)
            out.append(f"{sample}{{{labels}}} {_value(s.value)}\n" if labels else f"{sample} {_value(s.value)}\n")
    return "".join(out).encode()


def start_server(host: str, port: int, registry: prom.CollectorRegistry) -> http.server.ThreadingHTTPServer:
    """Serve :func:`exposition` on ``GET /metrics`` (anything else: 404, as ``promhttp``) from a daemon thread.

    ``shutdown()`` and ``server_close()`` stop it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] == "/metrics":
                code, ctype, body = 200, CONTENT_TYPE, exposition(registry)
            else:
                code, ctype, body = 404, "text/plain; charset=utf-8", b"404 page not found\n"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
            pass  # a scrape every few seconds is not worth a log line

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"metrics:{port}", daemon=True).start()
    return server


__all__ = ["AGE_BUCKETS", "CONTENT_TYPE", "MAX_AGE", "QUANTILES", "Summary", "counter", "exposition",
           "start_server"]
