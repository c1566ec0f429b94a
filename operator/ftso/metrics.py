"""Prometheus metrics of the operator, served on `--metrics-port`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ftso.client import KubeClient
    from ftso.plan import Plan
    from ftso.store import Key

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter("ftso_reconciles_total", "Reconciles run.", registry=REGISTRY)
RECONCILE_ERRORS = Counter(
    "ftso_reconcile_errors_total", "Reconciles that failed and were retried.", registry=REGISTRY
)
RECONCILE_SECONDS = Histogram(
    "ftso_reconcile_duration_seconds",
    "Time of one reconcile, observe to act.",
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROMOTIONS = Counter(
    "ftso_promotions_total",
    "New primaries, by reason (Elected, Failover, Switchover, ...).",
    ["reason"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "ftso_leader", "1 while this replica acts (holds the leader Lease, or runs alone).", registry=REGISTRY
)
FAILOVER_SECONDS = Histogram(
    "ftso_failover_duration_seconds",
    "From deciding a new primary to <name>-primary routing to it.",
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
REPLICAS = Gauge("ftso_replicas", "Pods that exist, per resource.", ["namespace", "name"], registry=REGISTRY)
READY = Gauge("ftso_ready_replicas", "Pods Ready, per resource.", ["namespace", "name"], registry=REGISTRY)
SERVING = Gauge(
    "ftso_serving_replicas", "Pods serving, per resource.", ["namespace", "name"], registry=REGISTRY
)


class ApiRequestCollector(Collector):
    """Reads the client's own request counts at scrape time, so the client stays free of metrics code."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "ftso_api_requests", "API requests the operator made, by verb.", labels=["verb"]
        )
        for verb, count in sorted(self.client.requests.items()):
            family.add_metric([verb], count)
        yield family


def observe_plan(key: Key, plan: Plan) -> None:
    status: Mapping[str, object] = plan.status
    labels = {"namespace": key[0], "name": key[1]}
    REPLICAS.labels(**labels).set(float(str(status.get("replicas", 0))))
    READY.labels(**labels).set(float(str(status.get("readyReplicas", 0))))
    SERVING.labels(**labels).set(float(str(status.get("servingReplicas", 0))))


def forget(key: Key) -> None:
    for gauge in (REPLICAS, READY, SERVING):
        with contextlib.suppress(KeyError):
            gauge.remove(key[0], key[1])


def serve(port: int, client: KubeClient) -> None:
    REGISTRY.register(ApiRequestCollector(client))
    start_http_server(port, registry=REGISTRY)
