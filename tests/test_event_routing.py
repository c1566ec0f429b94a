"""Watch events into the store and the work queue: which keys are queued, and which jump the queue."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from ftso import handlers, kinds, names

from .factories import node, offline_runtime, pod

KEY = ("ns", "demo")


class Adds:
    def __init__(self) -> None:
        self.seen: list[tuple[tuple[str, str], bool]] = []

    def __call__(self, key: tuple[str, str], *, urgent: bool = False) -> None:
        self.seen.append((key, urgent))


def _runtime(tmp_path: Path, status: dict[str, Any]) -> tuple[handlers.Runtime, Adds]:
    runtime: handlers.Runtime = offline_runtime(tmp_path)
    resource = {
        "metadata": {"name": "demo", "namespace": "ns", "uid": "uid-demo", "resourceVersion": "1"},
        "status": status,
    }
    runtime.store.put_resource(resource)
    adds = Adds()
    runtime.queue.add = adds  # type: ignore[method-assign]
    return runtime, adds


def test_the_primarys_pod_is_urgent_a_replicas_routine(tmp_path: Path) -> None:
    runtime, adds = _runtime(tmp_path, {"primary": "demo-0", "term": 1})
    runtime.owned_changed(kinds.POD, "MODIFIED", pod(0, role=names.ROLE_PRIMARY))
    runtime.owned_changed(kinds.POD, "MODIFIED", pod(1))
    runtime.owned_changed(kinds.POD, "DELETED", pod(0, role=names.ROLE_PRIMARY))
    assert adds.seen == [(KEY, True), (KEY, False), (KEY, True)]


def test_owned_objects_other_than_pods_are_routine(tmp_path: Path) -> None:
    runtime, adds = _runtime(tmp_path, {"primary": "demo-0", "term": 1})
    service = {
        "kind": "Service",
        "metadata": {
            "name": "demo-primary",
            "namespace": "ns",
            "resourceVersion": "2",
            "labels": {names.LABEL_SERVICE: "demo"},
            "ownerReferences": [{"kind": names.KIND, "name": "demo", "uid": "uid-demo", "controller": True}],
        },
    }
    runtime.owned_changed(kinds.SERVICE, "ADDED", service)
    assert adds.seen == [(KEY, False)]


def test_a_resource_that_lost_its_primary_is_urgent_a_new_one_routine(tmp_path: Path) -> None:
    runtime, adds = _runtime(tmp_path, {})
    body = {"metadata": {"name": "demo", "namespace": "ns", "resourceVersion": "3"}, "status": {}}
    runtime.resource_changed("ADDED", body)
    runtime.resource_changed("MODIFIED", {**body, "status": {"primary": "", "term": 2}})
    assert adds.seen == [(KEY, False), (KEY, True)]
    runtime.resource_changed("DELETED", body)
    assert KEY not in runtime.store.resources and len(adds.seen) == 2


def test_a_node_turning_not_ready_is_urgent_for_its_resources_a_heartbeat_is_nothing(tmp_path: Path) -> None:
    runtime, adds = _runtime(tmp_path, {"primary": "demo-0", "term": 1})
    runtime.node_changed("ADDED", node("node-0"))
    runtime.owned_changed(kinds.POD, "ADDED", pod(1, node_name="node-0"))
    adds.seen.clear()
    runtime.node_changed("MODIFIED", node("node-0"))  # a status heartbeat, still Ready
    assert adds.seen == []
    runtime.node_changed("MODIFIED", node("node-0", ready=False))
    assert adds.seen == [(KEY, True)]


def test_every_event_handler_runs_on_the_event_loop() -> None:
    """kopf runs plain functions on a thread pool; the store and the queue are the loop thread's alone."""
    registered = [handlers.resource_event, handlers.node_event, *handlers.OWNED_EVENT_HANDLERS.values()]
    assert len(handlers.OWNED_EVENT_HANDLERS) == len(kinds.OWNED)
    assert all(inspect.iscoroutinefunction(h) for h in registered)


def test_no_diff_base_is_built_for_raw_events_and_nothing_needs_one() -> None:
    """kopf diffs an object only for its changing and spawning handlers (on.create, on.update, daemons): with
    none registered, the deep copy it would make of every event is waste."""
    import kopf

    registry = kopf.get_default_registry()
    for kind in (kinds.FTS, kinds.NODE, *kinds.OWNED):
        resource = kopf.Resource(kind.group, kind.version, kind.plural)
        assert not registry._changing.has_handlers(resource=resource)
        assert not registry._spawning.has_handlers(resource=resource)
    storage = handlers.EventsOnlyDiffBase(prefix=names.GROUP)
    body = kopf.Body({"metadata": {"name": "demo", "labels": {"a": "b"}}, "spec": {"replicas": 3}})
    assert storage.build(body=body) == {} and storage.fetch(body=body) is None


def test_a_node_missing_a_renewal_turning_lost_and_back_is_urgent_once_each_time(tmp_path: Path) -> None:
    """The heartbeat scan queues a resource when its node misses a renewal (12 s: a partition hold may start),
    when the node's loss is confirmed (24 s at least, here with nodeLostAfterSeconds 20) and when the node
    renews again (a hold may end); every scan in between queues nothing."""
    from datetime import timedelta

    from .factories import NOW

    runtime, adds = _runtime(tmp_path, {"primary": "demo-0", "term": 1})
    runtime.owned_changed(kinds.POD, "ADDED", pod(1, node_name="node-0"))
    runtime.store.lease_renewed_at["node-0"] = NOW
    adds.seen.clear()
    runtime.scan_heartbeats(NOW + timedelta(seconds=11.9))
    assert adds.seen == []
    for seconds in (12.1, 21, 23.9):  # missed a renewal, past nodeLostAfterSeconds, not yet confirmed
        runtime.scan_heartbeats(NOW + timedelta(seconds=seconds))
    assert adds.seen == [(KEY, True)]
    runtime.scan_heartbeats(NOW + timedelta(seconds=24.1))
    runtime.scan_heartbeats(NOW + timedelta(seconds=30))
    assert adds.seen == [(KEY, True)] * 2
    runtime.store.lease_renewed_at["node-0"] = NOW + timedelta(seconds=31)
    runtime.scan_heartbeats(NOW + timedelta(seconds=31))
    runtime.scan_heartbeats(NOW + timedelta(seconds=32))
    assert len(adds.seen) >= 3 and set(adds.seen) == {(KEY, True)}
    queued_on_return = len(adds.seen)
    runtime.scan_heartbeats(NOW + timedelta(seconds=33))
    assert len(adds.seen) == queued_on_return
