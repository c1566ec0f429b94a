"""The rules at the edges of time, of the node view and of terms: pod transitions are timed by the operator's
own clock (a kubelet's may be skewed either way), a node the view has not seen is unknown rather than lost,
and a term never goes backwards (a status wiped by hand, a pod annotated with a bogus term)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from ftso import names
from ftso.client import KubeClient
from ftso.controller import Controller, observe
from ftso.model import PodSeen, format_time, pod_view
from ftso.reconcile import Observed, decide
from ftso.store import NODES_DELETED_KEPT, Store

from .factories import NOW, UID, node, observed, pod, raw_spec
from .fakeapi import apply_merge_patch

KEY = ("ns", "demo")
NODES = [node("node-0"), node("node-1", zone="zone-b"), node("node-2", zone="zone-c")]


def _resource(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo", "namespace": "ns", "uid": UID, "resourceVersion": "1", "generation": 1},
        "spec": raw_spec(),
        "status": status,
    }


def _store(status: dict[str, Any]) -> Store:
    store = Store()
    store.put_resource(_resource(status))
    for body in NODES:
        store.put_node(body)
    return store


def _put(store: Store, body: dict[str, Any], version: int) -> None:
    body["metadata"]["resourceVersion"] = str(version)
    store.put_pod(body)


def _observe(store: Store, now: datetime) -> Observed:
    seen = observe(store, KEY, now)
    assert seen is not None
    return seen


PRIMARY = {"primary": "demo-0", "term": 1}


# Item 6: kubelet clock skew. The store records transitions on the operator's (here the real) clock.


def test_a_kubelet_60s_behind_does_not_turn_a_readiness_blip_into_a_hard_failover() -> None:
    store = _store(PRIMARY)
    for ordinal in (1, 2):
        _put(store, pod(ordinal, node_name=f"node-{ordinal}"), 10 + ordinal)
    watched = datetime.now(UTC)
    _put(store, pod(0, role="primary", ready_changed=watched - timedelta(minutes=9)), 20)
    # The operator sees the primary turn unready now; its kubelet, 60 s behind, stamps it a minute ago.
    _put(store, pod(0, role="primary", ready=False, ready_changed=watched - timedelta(seconds=62)), 21)
    plan = decide(_observe(store, watched + timedelta(seconds=3)))
    assert plan.deletes == [], "a 3 s readiness blip deletes nothing"
    assert plan.status["primary"] == "demo-0" and plan.status["term"] == 1
    # Past failover.delaySeconds by the operator's clock: a soft failure, so the anti-flapping limits apply.
    recent = {
        "term": 1,
        "kind": "Failover",
        "reason": "Failover",
        "from": "demo-1",
        "to": "demo-0",
        "detectedAt": format_time(watched - timedelta(seconds=1)),
        "decidedAt": format_time(watched - timedelta(seconds=1)),  # failover.minIntervalSeconds is 10
        "fencedAt": format_time(watched),
    }
    store.put_resource(
        {
            **_resource({**PRIMARY, "failovers": [recent]}),
            "metadata": {**_resource(PRIMARY)["metadata"], "resourceVersion": "2"},
        }
    )
    later = decide(_observe(store, watched + timedelta(seconds=7)))
    assert later.status["primary"] == "demo-0" and later.deletes == [], "throttled, not a hard failure"
    throttled = [c for c in later.status["conditions"] if c["type"] == "FailingOver"]
    assert throttled[0]["reason"] == "Throttled"


def test_a_kubelet_10min_ahead_does_not_delay_a_dead_primarys_failover() -> None:
    store = _store(PRIMARY)
    for ordinal in (1, 2):
        _put(store, pod(ordinal, node_name=f"node-{ordinal}"), 10 + ordinal)
    watched = datetime.now(UTC)
    ahead = watched + timedelta(minutes=10)
    _put(
        store,
        pod(0, role="primary", ready=False, ready_changed=ahead, started=ahead - timedelta(hours=1)),
        20,
    )
    plan = decide(_observe(store, watched + timedelta(seconds=40)))
    assert plan.status["primary"] == "demo-1", "not Ready for 40 s by the operator's clock"
    assert plan.status["term"] == 2


def test_a_node_90s_behind_gets_its_new_pod_time_to_start() -> None:
    store = _store(PRIMARY)
    for ordinal in (0, 1):
        _put(
            store,
            pod(ordinal, role="primary" if ordinal == 0 else "replica", node_name=f"node-{ordinal}"),
            10 + ordinal,
        )
    watched = datetime.now(UTC)
    behind = watched - timedelta(seconds=200)  # startup budget is 2 s x 30 + 30 s = 90 s
    _put(store, pod(2, node_name="node-2", ready=False, started=behind, ready_changed=behind), 20)
    plan = decide(_observe(store, watched + timedelta(seconds=5)))
    assert plan.deletes == [], "started 5 s ago by the operator's clock"
    # ... and one that never turns Ready is still replaced once its budget runs out on the operator's clock.
    late = decide(_observe(store, watched + timedelta(seconds=95)))
    assert [d.name for d in late.deletes] == ["demo-2"]


def test_the_store_times_transitions_by_its_own_clock_not_the_kubelets() -> None:
    times = iter([NOW, NOW + timedelta(seconds=5), NOW + timedelta(seconds=9), NOW + timedelta(seconds=20)])
    store = Store(clock=lambda: next(times))
    skewed = NOW - timedelta(hours=3)
    _put(store, pod(0, ready=True, ready_changed=skewed, started=skewed), 1)
    uid = "pod-uid-0"
    assert store.pod_seen[uid] == PodSeen(True, NOW, NOW)
    _put(store, pod(0, ready=False, ready_changed=skewed + timedelta(hours=9), started=skewed), 2)
    assert store.pod_seen[uid] == PodSeen(False, NOW + timedelta(seconds=5), NOW)
    _put(store, pod(0, ready=False, ready_changed=skewed, started=skewed), 3)  # no transition: kept
    assert store.pod_seen[uid] == PodSeen(False, NOW + timedelta(seconds=5), NOW)
    store.drop_pod(pod(0))
    assert uid not in store.pod_seen, "forgotten with the pod: a few bytes per pod, no more"


def test_decide_times_by_the_seen_times_whatever_the_kubelet_says() -> None:
    """Both directions through decide alone: the same observation, kubelet stamps an hour off either way."""
    seen = PodSeen(False, NOW - timedelta(seconds=10), NOW - timedelta(minutes=9))
    for skew in (timedelta(hours=1), -timedelta(hours=1)):
        bodies = [
            pod(
                0,
                role="primary",
                ready=False,
                ready_changed=NOW - timedelta(seconds=10) + skew,
                started=NOW - timedelta(minutes=9) + skew,  # one kubelet, one clock
            ),
            pod(1, node_name="node-1"),
            pod(2, node_name="node-2"),
        ]
        base = observed(bodies, status=dict(PRIMARY))
        views = (pod_view(bodies[0], "demo", seen), *base.pods[1:])
        plan = decide(dataclasses.replace(base, pods=views))
        # Unready for 10 s: past failover.delaySeconds (5 s), short of unreadyTimeoutSeconds (30 s).
        assert plan.status["primary"] == "demo-1", skew
        assert plan.status["pods"][0]["health"] == "Degraded", skew
        assert [d.reason for d in plan.deletes] == ["fenced former primary"], skew


# Item 8: a node the view has not seen.


def test_a_pod_on_a_node_the_view_has_not_seen_is_judged_by_its_own_state() -> None:
    bodies = [
        pod(0, role="primary", node_name="node-new"),
        pod(1, node_name="node-1"),
        pod(2, node_name="node-2"),
    ]
    plan = decide(observed(bodies, status=dict(PRIMARY), nodes=NODES))
    assert plan.deletes == [], "the node watch is behind the pod watch: nothing is lost"
    assert plan.status["primary"] == "demo-0" and plan.status["term"] == 1
    assert plan.status["pods"][0]["health"] == "Healthy"


def test_a_node_seen_deleted_loses_its_pods_only_after_the_confirmation() -> None:
    store = _store(PRIMARY)
    _put(store, pod(0, role="primary", node_name="node-0"), 10)
    for ordinal in (1, 2):
        _put(store, pod(ordinal, node_name=f"node-{ordinal}"), 10 + ordinal)
    deleted = datetime.now(UTC)
    store.drop_node("node-0")
    plan = decide(_observe(store, deleted + timedelta(seconds=5)))
    assert plan.deletes == [] and plan.status["primary"] == "demo-0", "not confirmed yet"
    assert plan.requeue_after is not None and plan.requeue_after <= 20, "looked at again when confirmed"
    confirmed = decide(_observe(store, deleted + timedelta(seconds=30)))
    assert confirmed.status["primary"] == "demo-1"
    assert [(d.name, d.force) for d in confirmed.deletes] == [("demo-0", True)]


def test_a_failed_pod_on_a_silent_node_is_deleted_gracefully_never_forced() -> None:
    """A node silent for 15 s (or seen so by a view that stopped syncing) is not lost before 24 s. A pod there
    whose own state says it failed is still replaced, by a graceful delete its kubelet carries out (on a node
    that cannot be reached it stays Terminating, its name taken), never by a force delete for node loss."""
    bodies = [
        pod(0, role="primary", node_name="node-0"),
        pod(1, node_name="node-1", ready=False, terminated=True),
        pod(2, node_name="node-2"),
    ]
    seen = observed(bodies, status=dict(PRIMARY), nodes=NODES)
    heard = {"node-0": NOW, "node-1": NOW - timedelta(seconds=15), "node-2": NOW}
    nodes = {name: dataclasses.replace(n, lease_renewed_at=heard[name]) for name, n in seen.nodes.items()}
    plan = decide(dataclasses.replace(seen, nodes=nodes))
    assert [(d.name, d.force) for d in plan.deletes] == [("demo-1", False)]
    assert plan.status["primary"] == "demo-0" and plan.status["term"] == 1


def test_the_store_remembers_only_nodes_it_held_deleted_and_only_so_many() -> None:
    store = Store(clock=lambda: NOW)
    store.drop_node("never-seen")
    assert store.nodes_deleted == {}, "a node the view never held is unknown, not gone"
    store.put_node(node("node-a"))
    store.drop_node("node-a")
    assert store.nodes_deleted == {"node-a": NOW}
    store.put_node(node("node-a"))
    assert store.nodes_deleted == {}, "back again"
    for n in range(NODES_DELETED_KEPT + 5):
        store.put_node(node(f"n{n}"))
        store.drop_node(f"n{n}")
    assert len(store.nodes_deleted) == NODES_DELETED_KEPT and "n0" not in store.nodes_deleted


# Item 9: terms never go backwards.


def test_after_a_status_wipe_the_new_term_exceeds_every_pods_term() -> None:
    bodies = [
        pod(0, role="primary", term=5),
        pod(1, node_name="node-1", term=5),
        pod(2, node_name="node-2", term=4),
    ]
    plan = decide(observed(bodies, status={}))
    assert plan.status["term"] == 6 and plan.status["primary"]
    assert all(int(p.annotations[names.ANNOTATION_TERM]) == 6 for p in plan.patches)
    assert {p.name for p in plan.patches} == {"demo-0", "demo-1", "demo-2"}
    assert "BecamePrimary" in [e.reason for e in plan.events], "an election, not a failover"
    assert plan.status["failovers"] == []


def test_after_a_status_wipe_without_a_candidate_no_pod_term_goes_back() -> None:
    bodies = [pod(0, role="primary", term=5, ready=False, ready_changed=NOW - timedelta(seconds=1))]
    plan = decide(observed(bodies, spec=raw_spec(replicas=1), status={}))
    assert plan.status["term"] >= 5
    assert all(int(p.annotations[names.ANNOTATION_TERM]) >= 5 for p in plan.patches)


class FakeClient:
    """Answers each write as the API server would: a JSON merge patch applied to what it holds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []

    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        self.calls.append(("PATCH", kind + (f"/{subresource}" if subresource else ""), name, patch))
        if subresource == "status":
            current = self.store.resources[(namespace, name)]
            version = str(int(current["metadata"]["resourceVersion"]) + 1)
            metadata = {**current["metadata"], "resourceVersion": version}
            return {
                **current,
                "metadata": metadata,
                "status": apply_merge_patch(current.get("status"), patch["status"]),
            }
        current = self.store.pods[(namespace, "demo")][name]
        metadata = {**current["metadata"], "resourceVersion": current["metadata"].get("resourceVersion")}
        patched = apply_merge_patch(metadata, {**patch["metadata"], "resourceVersion": None})
        version = str(int(metadata.get("resourceVersion") or 0) + 1)
        return {**current, "metadata": {**patched, "resourceVersion": version}}

    async def delete(self, kind: str, namespace: str, name: str, **_: Any) -> None:
        self.calls.append(("DELETE", kind, name, {}))

    async def create(self, body: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
        self.calls.append(("POST", body["kind"], body["metadata"].get("name", ""), body))
        return body

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        return body


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bogus_pod_term_is_waited_on_briefly_then_repaired() -> None:
    store = _store({"primary": "demo-0", "term": 3})
    _put(store, pod(0, role="primary", term=3), 10)
    _put(store, pod(1, node_name="node-1", term=3), 11)
    _put(store, pod(2, node_name="node-2", term=7), 12)  # the workload annotated its own pod
    monotonic = Monotonic()
    controller = Controller(
        KubeClient.__new__(KubeClient), store, clock=lambda: datetime.now(UTC), monotonic=monotonic
    )
    client = FakeClient(store)
    controller.client = client  # type: ignore[assignment]

    def reconcile() -> float | None:
        return asyncio.run(controller.reconcile(KEY))

    assert reconcile() is not None and client.calls == [], "a newer term may be news on its way: wait"
    monotonic.now += 1.0
    reconcile()
    assert client.calls == [], "still within the wait"
    monotonic.now += 30.0
    reconcile()
    status = store.resources[KEY]["status"]
    assert status["primary"] == "demo-0" and status["term"] == 7, "raised to the highest live pod term"
    terms = {
        name: int(p["metadata"]["annotations"][names.ANNOTATION_TERM]) for name, p in store.pods[KEY].items()
    }
    assert terms == {"demo-0": 7, "demo-1": 7, "demo-2": 7}, "relabelled, and no pod's term went back"
    events = [c[3]["reason"] for c in client.calls if c[1] == "Event"]
    assert names.EventReason.TERM_RAISED in events
    # The next change of primary exceeds every term a pod carries.
    _put(store, pod(0, role="primary", term=7, deleting=True), 30)
    reconcile()
    assert store.resources[KEY]["status"]["term"] == 8
