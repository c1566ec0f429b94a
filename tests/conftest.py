"""Shared fixtures."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from ftso import metrics
from ftso.names import CONTROLLER, ReconcileResult
from ftso.probes import QueueSnapshot

# Hypothesis profiles, registered here so that the plugin's --hypothesis-profile finds them (it loads the
# profile after the initial conftests). "ci" is the default: every property test runs 2,000 examples, the
# same ones each run (derandomized), so `make test` passes or fails with the code, not with the draw.
# "explore" draws 2,000 new ones each run; "soak" is the long run, 50,000 and longer sequences:
# `make unit PYTEST_ARGS=--hypothesis-profile=soak`. What they find is pinned with @example.
_PROFILE = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=2_000, derandomize=True, **_PROFILE)
settings.register_profile("explore", max_examples=2_000, **_PROFILE)
settings.register_profile("soak", max_examples=50_000, **_PROFILE)
settings.load_profile("ci")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def metrics_served() -> Iterator[Any]:
    """The metrics server on a free loopback port, once per session (its collectors register once), after
    one of each thing the operator records, so that every series has a sample."""
    from . import test_metrics  # the fake client and the readiness answer the tests change

    for result in ReconcileResult:
        metrics.RECONCILE_TOTAL.labels(controller=CONTROLLER, result=result).inc()
    metrics.RECONCILE_ERRORS_TOTAL.labels(controller=CONTROLLER).inc()
    metrics.RECONCILE_TIME.labels(controller=CONTROLLER).observe(0.01)
    observer = metrics.QueueMetrics()
    observer.added(), observer.started(0.1), observer.finished(0.2), observer.retried()
    metrics.RECONCILES.inc()
    metrics.RECONCILE_ERRORS.inc()
    metrics.RECONCILE_SECONDS.observe(0.01)
    metrics.PROMOTIONS.labels(reason="Failover").inc()
    metrics.FAILOVER_SECONDS.observe(0.5)
    metrics.LEADER.set(1)
    metrics.observe_status(("tenant", "db"), test_metrics.STATUS)
    snapshot = QueueSnapshot(2, (1.0, 2.0), (3.0,), 3.0, 4, 4, 5.0)
    server = metrics.serve(
        _free_port(),
        test_metrics.FakeClient(),  # type: ignore[arg-type]
        lambda: snapshot,
        lambda: test_metrics.READINESS[0],
        host="127.0.0.1",
    )
    yield server
    server.shutdown()
