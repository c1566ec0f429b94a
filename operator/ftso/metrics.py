"""Prometheus metrics of the operator, served on `--metrics-port` from a private registry.

Names follow controller-runtime's and client-go's (controller_runtime_*, workqueue_*, rest_client_*) so
that dashboards made for Go operators work, next to our own ftso_* ones; process_* and python_* come from
prometheus_client's standard collectors. Names are spelled in names.Metric only."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ftso import names
from ftso.model import parse_time
from ftso.names import CONTROLLER, ConditionType, Reason, ReconcileResult
from ftso.names import Metric as M
from ftso.probes import QueueSnapshot, Readiness

if TYPE_CHECKING:
    from ftso.client import KubeClient
    from ftso.plan import Plan
    from ftso.store import Key

# No `*_created` series beside each counter and histogram: controller-runtime has none, they only add series.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
REGISTRY = CollectorRegistry(auto_describe=True)
# The standard process_*, python_info and python_gc_* series, on our registry (the default one is unused).
for _standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_standard)

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# controller-runtime's reconcile metrics.
RECONCILE_TOTAL = Counter(M.RECONCILE, "Reconciles, by result.", ["controller", "result"], registry=REGISTRY)
RECONCILE_ERRORS_TOTAL = Counter(
    M.RECONCILE_ERRORS, "Reconciles that failed and were retried.", ["controller"], registry=REGISTRY
)
RECONCILE_TIME = Histogram(
    M.RECONCILE_TIME, "Time of one reconcile.", ["controller"], registry=REGISTRY, buckets=DURATION_BUCKETS
)

# client-go's work queue metrics, fed through the queue's observer.
QUEUE_ADDS = Counter(M.QUEUE_ADDS, "Adds handled by the work queue.", ["name"], registry=REGISTRY)
QUEUE_RETRIES = Counter(M.QUEUE_RETRIES, "Retries (after a failure).", ["name"], registry=REGISTRY)
QUEUE_DURATION = Histogram(
    M.QUEUE_DURATION,
    "Time a key waits in the queue before it is run.",
    ["name"],
    registry=REGISTRY,
    buckets=DURATION_BUCKETS,
)
WORK_DURATION = Histogram(
    M.WORK_DURATION, "Time one run of a key takes.", ["name"], registry=REGISTRY, buckets=DURATION_BUCKETS
)

# Ours.
RECONCILES = Counter(M.RECONCILES, "Reconciles run.", registry=REGISTRY)
RECONCILE_ERRORS = Counter(
    M.RECONCILE_ERRORS_OURS, "Reconciles that failed and were retried.", registry=REGISTRY
)
RECONCILE_SECONDS = Histogram(
    M.RECONCILE_DURATION,
    "Time of one reconcile, observe to act.",
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROMOTIONS = Counter(
    M.PROMOTIONS,
    "New primaries, by reason (Elected, Failover, Switchover, ...).",
    ["reason"],
    registry=REGISTRY,
)
LEADER = Gauge(
    M.LEADER, "1 while this replica acts (holds the leader Lease, or runs alone).", registry=REGISTRY
)
FAILOVER_SECONDS = Histogram(
    M.FAILOVER_DURATION,
    "From deciding a new primary to <name>-primary routing to it.",
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)

PER_RESOURCE = ["namespace", "name"]
REPLICAS = Gauge(M.REPLICAS, "Pods that exist, per resource.", PER_RESOURCE, registry=REGISTRY)
READY = Gauge(M.READY_REPLICAS, "Pods Ready, per resource.", PER_RESOURCE, registry=REGISTRY)
SERVING = Gauge(M.SERVING_REPLICAS, "Pods serving, per resource.", PER_RESOURCE, registry=REGISTRY)
PRIMARY_AVAILABLE = Gauge(
    M.PRIMARY_AVAILABLE,
    "1 while the resource has a healthy primary (0: PrimaryUnavailable).",
    PER_RESOURCE,
    registry=REGISTRY,
)
FAILOVER_THROTTLED = Gauge(
    M.FAILOVER_THROTTLED,
    "1 while a needed failover waits for the failover budget.",
    PER_RESOURCE,
    registry=REGISTRY,
)
CHECKPOINT_FAILING = Gauge(
    M.CHECKPOINT_FAILING, "1 while the last finished checkpoint failed.", PER_RESOURCE, registry=REGISTRY
)
CHECKPOINT_LAST_SUCCESS = Gauge(
    M.CHECKPOINT_LAST_SUCCESS,
    "When the last good checkpoint finished (Unix seconds).",
    PER_RESOURCE,
    registry=REGISTRY,
)
RESOURCE_GAUGES: dict[str, Gauge] = {
    M.REPLICAS: REPLICAS,
    M.READY_REPLICAS: READY,
    M.SERVING_REPLICAS: SERVING,
    M.PRIMARY_AVAILABLE: PRIMARY_AVAILABLE,
    M.FAILOVER_THROTTLED: FAILOVER_THROTTLED,
    M.CHECKPOINT_FAILING: CHECKPOINT_FAILING,
    M.CHECKPOINT_LAST_SUCCESS: CHECKPOINT_LAST_SUCCESS,
}


class QueueMetrics:
    """The work queue's observer: client-go's metric names, labelled with the queue's name."""

    def __init__(self, name: str = CONTROLLER) -> None:
        self._adds = QUEUE_ADDS.labels(name=name)
        self._retries = QUEUE_RETRIES.labels(name=name)
        self._waits = QUEUE_DURATION.labels(name=name)
        self._work = WORK_DURATION.labels(name=name)

    def added(self) -> None:
        self._adds.inc()

    def started(self, waited_seconds: float) -> None:
        self._waits.observe(waited_seconds)

    def finished(self, worked_seconds: float) -> None:
        self._work.observe(worked_seconds)

    def retried(self) -> None:
        self._retries.inc()


def reconcile_result(requeue_after: float | None) -> ReconcileResult:
    """The `result` label of a reconcile that returned: as controller-runtime's Result."""
    if requeue_after is None:
        return ReconcileResult.SUCCESS
    return ReconcileResult.REQUEUE_AFTER if requeue_after > 0 else ReconcileResult.REQUEUE


class QueueCollector(Collector):
    """Depth and running times, read from the queue at scrape time (gauges that need no bookkeeping)."""

    def __init__(self, snapshot: Callable[[], QueueSnapshot | None], name: str = CONTROLLER) -> None:
        self._snapshot = snapshot
        self._name = name

    def collect(self) -> Iterator[Metric]:
        queue = self._snapshot()
        if queue is None:
            return  # a standby runs no queue
        gauges = (
            (M.QUEUE_DEPTH, "Keys waiting in the queue.", queue.depth, "name", self._name),
            (
                M.UNFINISHED_WORK,
                "Seconds of work in progress not yet observed by work_duration.",
                queue.unfinished_work_seconds,
                "name",
                self._name,
            ),
            (
                M.LONGEST_RUNNING,
                "How long the longest running key has been running.",
                queue.longest_running_seconds,
                "name",
                self._name,
            ),
            (
                M.MAX_CONCURRENT_RECONCILES,
                "Workers of the controller.",
                queue.workers,
                "controller",
                CONTROLLER,
            ),
            (
                M.ACTIVE_WORKERS,
                "Workers running a reconcile now.",
                len(queue.running_since),
                "controller",
                CONTROLLER,
            ),
        )
        for name, documentation, value, label, label_value in gauges:
            family = GaugeMetricFamily(name, documentation, labels=[label])
            family.add_metric([label_value], float(value))
            yield family


class ApiRequestCollector(Collector):
    """Reads the client's own request counts at scrape time, so the client stays free of metrics code."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    def collect(self) -> Iterator[CounterMetricFamily]:
        ours = CounterMetricFamily(
            M.API_REQUESTS, "API requests the operator made, by verb.", labels=["verb"]
        )
        for verb, count in sorted(dict(self.client.requests).items()):
            ours.add_metric([verb], count)
        yield ours
        rest = CounterMetricFamily(
            M.REST_REQUESTS,
            "API requests by HTTP method and status code ('<error>': no answer).",
            labels=["code", "method"],
        )
        for (method, code), count in sorted(dict(self.client.responses).items()):
            rest.add_metric([code, method], count)
        yield rest


def _condition(status: Mapping[str, Any], kind: ConditionType) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def resource_values(status: Mapping[str, Any]) -> dict[str, float | None]:
    """Each per-resource gauge's value from a status the operator wrote; None: no series (the primary ones
    exist in PrimaryReplica mode only, the checkpoint ones once a checkpoint finished)."""
    last_good = str(status.get("lastSuccessfulCheckpoint") or "")
    record: Mapping[str, Any] = next(
        (r for r in status.get("checkpoints") or [] if r.get("id") == last_good), {}
    )
    finished = parse_time(record.get("finishedAt")) if last_good else None
    checkpoint = _condition(status, ConditionType.CHECKPOINT_SUCCEEDED)
    primary = _condition(status, ConditionType.PRIMARY_UNAVAILABLE)
    failing_over = _condition(status, ConditionType.FAILING_OVER)
    return {
        M.REPLICAS: float(status.get("replicas") or 0),
        M.READY_REPLICAS: float(status.get("readyReplicas") or 0),
        M.SERVING_REPLICAS: float(status.get("servingReplicas") or 0),
        M.PRIMARY_AVAILABLE: float(primary.get("status") != "True") if primary else None,
        M.FAILOVER_THROTTLED: float(failing_over.get("reason") == Reason.THROTTLED) if failing_over else None,
        M.CHECKPOINT_FAILING: float(checkpoint.get("status") == "False") if checkpoint else None,
        M.CHECKPOINT_LAST_SUCCESS: finished.timestamp() if finished else None,
    }


def observe_plan(key: Key, plan: Plan) -> None:
    observe_status(key, plan.status)


def observe_status(key: Key, status: Mapping[str, Any]) -> None:
    values = resource_values(status)
    for name, gauge in RESOURCE_GAUGES.items():
        value = values[name]
        if value is None:
            with contextlib.suppress(KeyError):
                gauge.remove(key[0], key[1])
        else:
            gauge.labels(namespace=key[0], name=key[1]).set(value)


def forget(key: Key) -> None:
    for gauge in RESOURCE_GAUGES.values():
        with contextlib.suppress(KeyError):
            gauge.remove(key[0], key[1])


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape or probe is noise


def app(registry: CollectorRegistry, readiness: Callable[[], Readiness]) -> Callable[..., Iterable[bytes]]:
    """/readyz answers the readiness probe (200 or 503, the role in the body); any other path: metrics."""
    metrics_app = make_wsgi_app(registry)

    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != names.READINESS_PATH:
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        answer = readiness()
        status = "200 OK" if answer.ready else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [f"{answer.role}: {answer.message}\n".encode()]

    return route


def serve(
    port: int,
    client: KubeClient,
    queue: Callable[[], QueueSnapshot | None],
    readiness: Callable[[], Readiness],
    host: str = "0.0.0.0",  # scraped and probed from outside the pod
) -> WSGIServer:
    REGISTRY.register(ApiRequestCollector(client))
    REGISTRY.register(QueueCollector(queue))
    server = make_server(host, port, app(REGISTRY, readiness), _Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="ftso-metrics", daemon=True).start()
    return server
