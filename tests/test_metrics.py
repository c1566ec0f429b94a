"""The operator's metrics: the work queue reports as client-go's does, reconciles count by result, the
private registry serves the standard process and Python series, and /readyz answers on the same port."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ftso import metrics
from ftso.names import Metric, ReconcileResult
from ftso.probes import QueueSnapshot, Readiness, queue_problems
from ftso.workqueue import WorkQueue


class Recorder:
    def __init__(self) -> None:
        self.adds, self.retries = 0, 0
        self.waits: list[float] = []
        self.works: list[float] = []

    def added(self) -> None:
        self.adds += 1

    def started(self, waited_seconds: float) -> None:
        self.waits.append(waited_seconds)

    def finished(self, worked_seconds: float) -> None:
        self.works.append(worked_seconds)

    def retried(self) -> None:
        self.retries += 1


def test_the_work_queue_reports_adds_waits_work_and_retries() -> None:
    recorder = Recorder()
    calls: list[str] = []

    async def run() -> QueueSnapshot:
        async def process(key: str) -> float | None:
            calls.append(key)
            if key == "bad" and calls.count("bad") == 1:
                raise RuntimeError("first try fails")
            await asyncio.sleep(0.01)
            return None

        queue: WorkQueue[str] = WorkQueue(process, workers=2, observer=recorder)
        queue.start()
        queue.add("a")
        queue.add("a")  # coalesced: one add
        queue.add("bad")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if calls.count("bad") == 2 and len(recorder.works) == 3:
                break
        snapshot = queue.snapshot()
        await queue.stop()
        return snapshot

    snapshot = asyncio.run(run())
    assert recorder.adds == 3  # a, bad, and bad again after its failure
    assert recorder.retries == 1
    assert len(recorder.waits) == len(recorder.works) == 3
    assert (
        snapshot.depth == 0 and snapshot.alive_workers == 3 and snapshot.running_since == ()
    )  # 2 + the urgent one


def test_reconcile_results_as_controller_runtime_names_them() -> None:
    assert metrics.reconcile_result(None) == ReconcileResult.SUCCESS
    assert metrics.reconcile_result(0) == ReconcileResult.REQUEUE
    assert metrics.reconcile_result(5.0) == ReconcileResult.REQUEUE_AFTER


STATUS: dict[str, Any] = {
    "replicas": 3,
    "readyReplicas": 2,
    "servingReplicas": 2,
    "lastSuccessfulCheckpoint": "c2",
    "checkpoints": [{"id": "c2", "finishedAt": "2026-01-01T00:00:10Z"}],
    "conditions": [
        {"type": "PrimaryUnavailable", "status": "True", "reason": "NoHealthyReplica"},
        {"type": "FailingOver", "status": "True", "reason": "Throttled"},
        {"type": "CheckpointSucceeded", "status": "False", "reason": "BackoffLimitExceeded"},
    ],
}


def test_per_resource_values_come_from_the_status() -> None:
    values = metrics.resource_values(STATUS)
    assert values[Metric.PRIMARY_AVAILABLE] == 0
    assert values[Metric.FAILOVER_THROTTLED] == 1
    assert values[Metric.CHECKPOINT_FAILING] == 1
    assert values[Metric.CHECKPOINT_LAST_SUCCESS] == 1767225610.0
    calm = metrics.resource_values(
        {
            "conditions": [
                {"type": "PrimaryUnavailable", "status": "False"},
                {"type": "FailingOver", "reason": "Idle"},
            ]
        }
    )
    assert calm[Metric.PRIMARY_AVAILABLE] == 1 and calm[Metric.FAILOVER_THROTTLED] == 0
    # ActiveActive (no primary conditions), no checkpoint finished yet: no series rather than a false one.
    active_active = metrics.resource_values({"conditions": []})
    assert all(active_active[m] is None for m in (Metric.PRIMARY_AVAILABLE, Metric.FAILOVER_THROTTLED))
    assert (
        active_active[Metric.CHECKPOINT_FAILING] is None
        and active_active[Metric.CHECKPOINT_LAST_SUCCESS] is None
    )


class FakeClient:
    def __init__(self) -> None:
        self.requests = {"GET": 3, "WATCH": 1}
        self.responses = {("GET", "200"): 3, ("PATCH", "409"): 1, ("GET", "<error>"): 1}


def scraped() -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """Every sample name on the registry, with its label sets."""
    samples: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).add(tuple(sorted(sample.labels.items())))
    return samples


def exported_names() -> set[str]:
    """The names the operator serves, once each collector has something to say."""
    return set(scraped())


def test_a_scrape_shows_the_standard_names_and_ours(metrics_served: Any) -> None:
    samples = scraped()
    for name in (
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        "workqueue_depth",
        "workqueue_adds_total",
        "workqueue_queue_duration_seconds_bucket",
        "workqueue_work_duration_seconds_bucket",
        "workqueue_retries_total",
        "workqueue_unfinished_work_seconds",
        "workqueue_longest_running_processor_seconds",
        "rest_client_requests_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "python_info",
        "python_gc_collections_total",
        "ftso_reconciles_total",
        "ftso_api_requests_total",
        "ftso_leader",
        "ftso_primary_available",
        "ftso_checkpoint_last_success_timestamp_seconds",
    ):
        assert name in samples, name
    assert (("code", "409"), ("method", "PATCH")) in samples["rest_client_requests_total"]
    assert (("name", "faulttolerantservice"),) in samples["workqueue_depth"]
    assert ("result", "requeue_after") in {
        label for labels in samples["controller_runtime_reconcile_total"] for label in labels
    }


def test_readyz_and_metrics_on_one_port(metrics_served: Any) -> None:
    port = metrics_served.server_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert b"workqueue_depth" in response.read()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
        assert response.read().startswith(b"standby:")
    READINESS[0] = Readiness(False, "starting", "priming")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        raise AssertionError("a replica still priming must not be ready")
    except urllib.error.HTTPError as error:
        assert error.code == 503
    finally:
        READINESS[0] = Readiness(True, "standby", "waiting")


READINESS = [Readiness(True, "standby", "waiting")]


def test_a_hung_reconcile_shows_in_the_snapshot_and_makes_the_queue_stuck() -> None:
    now = [100.0]

    async def run() -> tuple[QueueSnapshot, QueueSnapshot]:
        hang = asyncio.Event()

        async def process(key: str) -> float | None:
            await hang.wait()  # a reconcile that never returns
            return None

        queue: WorkQueue[str] = WorkQueue(process, workers=1, clock=lambda: now[0])
        queue.start()
        queue.add("hung")
        await asyncio.sleep(0.01)
        queue.add("waiting")  # the only worker is busy: this one waits
        now[0] += 400
        stuck = queue.snapshot()
        hang.set()
        await asyncio.sleep(0.01)
        freed = queue.snapshot()
        await queue.stop()
        return stuck, freed

    stuck, freed = asyncio.run(run())
    assert stuck.depth == 1 and stuck.longest_running_seconds == 400 and stuck.oldest_wait_seconds == 400
    assert len(queue_problems(stuck, 300)) == 2, "a run too long, and a key waiting with no progress"
    assert queue_problems(freed, 300) == [], "once runs end, the queue is not stuck"
