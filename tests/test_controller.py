"""The I/O half around `decide`: what the controller sends to the API, with a fake client in place of it."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from ftso import controller as controller_module
from ftso.client import ApiError, KubeClient
from ftso.controller import Controller, NodeLossBudget, StaleView
from ftso.store import Store

from .factories import NOW, node, pod, raw_spec
from .fakeapi import apply_merge_patch, check_resource_version


class FakeClient:
    """Records every write; the view's objects stand for the server's, and each write is answered as the
    API server would: patches applied by its rules, creates and applies with the object sent."""

    def __init__(self, store: Store, missing: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.missing = missing  # pods the API server no longer has, though the view still does
        self.calls: list[tuple[str, str, str]] = []
        self.refuse: ApiError | None = None  # the answer to every create but an Event's
        self.events: list[dict[str, Any]] = []
        self.versions = itertools.count(1000)

    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        self.calls.append(("PATCH", kind + (f"/{subresource}" if subresource else ""), name))
        if subresource == "status":
            current = self.store.resources[(namespace, name)]
        elif kind == "Pod":
            current = self.store.pods[(namespace, name.rsplit("-", 1)[0])][name]
        else:  # a Service's or the PDB's metadata
            current = self.store.services.get((namespace, name.split("-", maxsplit=1)[0])).get(name) or {
                "kind": kind,
                "metadata": {"name": name, "namespace": namespace},
            }
        # The API server's own rules (tests/fakeapi.py): the view's object is the server's here.
        check_resource_version(current, (patch.get("metadata") or {}).get("resourceVersion"))
        patched = apply_merge_patch(current, patch)
        if subresource == "status":
            patched = {**current, "status": patched.get("status")}
        patched["metadata"]["resourceVersion"] = str(next(self.versions))
        return patched  # type: ignore[no-any-return]

    async def delete(self, kind: str, namespace: str, name: str, **_: Any) -> None:
        self.calls.append(("DELETE", kind, name))
        if name in self.missing:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        if kind == "Pod":  # force-deleted: gone at once, as the watch would tell
            self.store.drop_pod(self.store.pods[(namespace, name.rsplit("-", 1)[0])][name])

    async def create(self, body: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
        self.calls.append(("POST", body["kind"], body["metadata"].get("name", "")))
        if body["kind"] == "Event":
            self.events.append(body)
        elif self.refuse is not None:
            raise self.refuse
        return body

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("APPLY", body["kind"], body["metadata"]["name"]))
        return body


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _store_with_lost_nodes(services: int) -> Store:
    """`services` resources of 3 pods each; node-0 is NotReady, so each loses one pod."""
    store = Store()
    for n, ready in (("node-0", False), ("node-1", True), ("node-2", True)):
        store.put_node(node(n, ready=ready))
    for i in range(services):
        name = f"svc{i}"
        store.put_resource(
            {
                "metadata": {"name": name, "namespace": "ns", "uid": "uid-demo", "resourceVersion": "1"},
                "spec": raw_spec(),
                "status": {"primary": f"{name}-1", "term": 1},
            }
        )
        for ordinal in range(3):
            body = pod(
                ordinal, name=name, node_name=f"node-{ordinal}", role="primary" if ordinal == 1 else "replica"
            )
            store.put_pod(body)
    return store


def _reconcile_all(controller: Controller, services: int) -> list[float | None]:
    async def run() -> list[float | None]:
        return [await controller.reconcile(("ns", f"svc{i}")) for i in range(services)]

    return asyncio.run(run())


def test_node_loss_deletions_are_rate_limited_for_the_cluster() -> None:
    clock = Clock()
    store = _store_with_lost_nodes(5)
    client = FakeClient(store)
    budget = NodeLossBudget(per_resource=(3, 0.5), cluster=(2, 1.0), clock=clock)
    controller = Controller(KubeClient.__new__(KubeClient), store, clock=lambda: NOW, node_loss_budget=budget)
    controller.client = client  # type: ignore[assignment]
    requeues = _reconcile_all(controller, 5)
    deleted = [name for verb, kind, name in client.calls if verb == "DELETE" and kind == "Pod"]
    assert deleted == ["svc0-0", "svc1-0"], "two tokens in the cluster bucket, no more"
    assert all(r is not None and r <= 1.0 for r in requeues[2:]), "the held ones look again soon"
    clock.now += 3.0  # refilled, but never beyond the burst of two
    client.calls.clear()
    _reconcile_all(controller, 5)
    deleted = [name for verb, kind, name in client.calls if verb == "DELETE" and kind == "Pod"]
    assert deleted == ["svc2-0", "svc3-0"]
    clock.now += 1.0
    client.calls.clear()
    _reconcile_all(controller, 5)
    deleted = [name for verb, kind, name in client.calls if verb == "DELETE" and kind == "Pod"]
    assert deleted == ["svc4-0"]


def test_node_loss_budget_per_resource() -> None:
    clock = Clock()
    budget = NodeLossBudget(per_resource=(2, 0.5), cluster=(100, 100.0), clock=clock)
    key = ("ns", "a")
    assert [budget.allow(key) for _ in range(3)] == [True, True, False]
    assert budget.allow(("ns", "b")), "another resource has its own bucket"
    clock.now += 2.0
    assert budget.allow(key) and not budget.allow(key)


def test_a_pod_the_api_no_longer_has_leaves_the_view_and_is_replaced() -> None:
    """Its delete event fell between the startup LIST and the watch: the 404 of our own delete says it."""
    store = _store_with_lost_nodes(1)
    client = FakeClient(store, missing=frozenset({"svc0-0"}))
    controller = Controller(KubeClient.__new__(KubeClient), store, clock=lambda: NOW)
    controller.client = client  # type: ignore[assignment]
    _reconcile_all(controller, 1)
    assert ("DELETE", "Pod", "svc0-0") in client.calls
    assert "svc0-0" not in store.pods[("ns", "svc0")]
    client.calls.clear()
    _reconcile_all(controller, 1)
    # Its node is still unreachable, so its process may still run: the name waits for proof that it stopped.
    assert ("POST", "Pod", "svc0-0") not in client.calls
    tainted = node("node-0", ready=False)
    tainted["spec"] = {"taints": [{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]}
    store.put_node(tainted)
    client.calls.clear()
    _reconcile_all(controller, 1)
    assert ("POST", "Pod", "svc0-0") in client.calls


QUOTA = ApiError(403, "Forbidden", 'pods "svc0-0" is forbidden: exceeded quota: one, limited: pods=1')


def _refusing_controller() -> tuple[Controller, FakeClient]:
    """svc0's pod 0 is gone (its node is healthy again) and every create is refused by a quota."""
    store = _store_with_lost_nodes(1)
    store.put_node(node("node-0"))
    store.drop_pod(store.pods[("ns", "svc0")]["svc0-0"])
    client = FakeClient(store)
    client.refuse = QUOTA
    controller = Controller(KubeClient.__new__(KubeClient), store, clock=lambda: NOW)
    controller.client = client  # type: ignore[assignment]
    return controller, client


def _replica_failure(store: Store) -> dict[str, Any]:
    conditions = store.resources[("ns", "svc0")]["status"]["conditions"]
    return next(c for c in conditions if c["type"] == "ReplicaFailure")


def test_a_refused_create_is_a_condition_in_the_servers_words_and_one_event() -> None:
    controller, client = _refusing_controller()
    requeues = [_reconcile_all(controller, 1)[0] for _ in range(4)]
    failure = _replica_failure(controller.store)
    assert failure["status"] == "True" and failure["reason"] == "FailedCreate"
    assert "exceeded quota: one, limited: pods=1" in failure["message"]
    warnings = [e for e in client.events if e["reason"] == "FailedCreate"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning", "one Event, not one per retry"
    assert not [e for e in client.events if e["reason"] == "Created"], "nothing was created"
    assert requeues[0] == 0.1, "the condition is written at once"
    assert requeues[1:] == [1.0, 2.0, 4.0], "then retries slow down"
    client.refuse = None
    _reconcile_all(controller, 1)
    _reconcile_all(controller, 1)
    assert _replica_failure(controller.store)["status"] == "False"
    assert [e["reason"] for e in client.events].count("Created") == 1


def test_a_namespace_being_terminated_is_not_an_error_storm() -> None:
    controller, client = _refusing_controller()
    client.refuse = ApiError(403, "Forbidden", "namespace ns is being terminated", ("NamespaceTerminating",))
    requeues = [_reconcile_all(controller, 1)[0] for _ in range(3)]
    assert _replica_failure(controller.store)["status"] == "False"
    assert not [e for e in client.events if e["reason"] == "FailedCreate"]
    assert all(r is None or r >= 1 for r in requeues), "no fast retries"


def test_a_namespace_being_terminated_is_left_alone_for_a_while_then_looked_at_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    controller, client = _refusing_controller()
    client.refuse = ApiError(403, "Forbidden", "namespace ns is being terminated", ("NamespaceTerminating",))
    ticks = Clock()
    monkeypatch.setattr(controller_module.time, "monotonic", ticks)
    _reconcile_all(controller, 1)
    assert ("POST", "Pod", "svc0-0") in client.calls
    client.calls.clear()
    ticks.now = controller_module.TERMINATING_NAMESPACE_SKIP_SECONDS - 1
    assert _reconcile_all(controller, 1) == [None]
    assert client.calls == [], "nothing is sent while the namespace goes"
    ticks.now = controller_module.TERMINATING_NAMESPACE_SKIP_SECONDS + 1
    client.refuse = None  # made anew under the same name
    _reconcile_all(controller, 1)
    assert ("POST", "Pod", "svc0-0") in client.calls


def test_transient_create_errors_still_back_off_through_the_work_queue() -> None:
    controller, client = _refusing_controller()
    client.refuse = ApiError(503, "ServiceUnavailable", "busy")
    with pytest.raises(ApiError):
        _reconcile_all(controller, 1)
    assert not controller.create_failures


def test_hooks_are_marked_called_in_status_only_after_the_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store_with_lost_nodes(1)
    resource = store.resources[("ns", "svc0")]
    resource["spec"]["failover"] = {"hooks": {"port": 9000}}
    client = FakeClient(store)
    controller = Controller(KubeClient.__new__(KubeClient), store, clock=lambda: NOW)
    controller.client = client  # type: ignore[assignment]
    client.ensure_leading = lambda: None  # type: ignore[attr-defined]
    order: list[str] = []

    async def call_hooks(calls: list[Any]) -> list[Any]:
        order.append(f"hooks {sorted(c.pod for c in calls)}")
        return []

    monkeypatch.setattr(controller_module, "call_hooks", call_hooks)
    for p in store.pods[("ns", "svc0")].values():
        p["status"]["podIP"] = "10.0.0." + p["metadata"]["name"][-1]
    store.pods[("ns", "svc0")]["svc0-1"]["status"]["phase"] = "Failed"  # the primary: a failover
    original = client.merge_patch

    async def merge_patch(kind: str, namespace: str, name: str, patch: dict[str, Any], **kw: Any) -> Any:
        if kw.get("subresource") == "status":
            marked = [r.get("hooksCalledAt") for r in patch["status"].get("failovers") or []]
            order.append(f"status hooksCalledAt={marked}")
        return await original(kind, namespace, name, patch, **kw)

    client.merge_patch = merge_patch  # type: ignore[method-assign]
    _reconcile_all(controller, 1)
    assert order[0] == "status hooksCalledAt=[None]"
    assert order[1] == "hooks ['svc0-1', 'svc0-2']"
    assert order[2].startswith("status hooksCalledAt=['20")


def _store_whose_pods_lag_the_status() -> Store:
    """The status (another writer's) names svc0-1 primary; the pod watch has not delivered any pod yet."""
    store = Store()
    for n in ("node-0", "node-1", "node-2"):
        store.put_node(node(n))
    store.put_resource(
        {
            "metadata": {"name": "svc0", "namespace": "ns", "uid": "uid-demo", "resourceVersion": "1"},
            "spec": raw_spec(),
            "status": {"primary": "svc0-1", "term": 1},
        }
    )
    return store


def test_a_primary_never_seen_is_watch_lag_for_a_moment_then_gone() -> None:
    store = _store_whose_pods_lag_the_status()
    client = FakeClient(store)
    ticks = Clock()
    controller = Controller(KubeClient.__new__(KubeClient), store, clock=lambda: NOW, monotonic=ticks)
    controller.client = client  # type: ignore[assignment]
    requeue = _reconcile_all(controller, 1)
    assert client.calls == [], "a view that never held the primary writes nothing"
    assert requeue[0] is not None and requeue[0] <= 1
    ticks.now = controller_module.UNSEEN_PRIMARY_GRACE_SECONDS + 0.1
    _reconcile_all(controller, 1)
    assert ("PATCH", "FaultTolerantService/status", "svc0") in client.calls, "past the grace it is gone"


def test_a_primary_once_seen_and_now_missing_is_gone_at_once() -> None:
    store = _store_whose_pods_lag_the_status()
    for ordinal in range(3):
        store.put_pod(
            pod(
                ordinal,
                name="svc0",
                node_name=f"node-{ordinal}",
                role="primary" if ordinal == 1 else "replica",
            )
        )
    store.drop_pod(store.pods[("ns", "svc0")]["svc0-1"])
    client = FakeClient(store)
    controller = Controller(KubeClient.__new__(KubeClient), store, clock=lambda: NOW)
    controller.client = client  # type: ignore[assignment]
    _reconcile_all(controller, 1)
    assert store.resources[("ns", "svc0")]["status"]["primary"] != "svc0-1"


def test_keys_the_spec_dropped_are_deleted_before_the_apply_records_the_new_ones() -> None:
    from ftso.api.spec import parse_spec
    from ftso.builders import Owner, build_services

    store = _store_with_lost_nodes(1)
    store.put_node(node("node-0"))
    old_spec = raw_spec(service={"metadata": {"labels": {"team": "a"}}})
    for service in build_services(parse_spec(old_spec), Owner("svc0", "ns", "uid-demo")):
        store.put_owned("Service", service)
    client = FakeClient(store)
    controller = Controller(KubeClient.__new__(KubeClient), store, clock=lambda: NOW)
    controller.client = client  # type: ignore[assignment]
    _reconcile_all(controller, 1)
    writes = [(verb, name) for verb, kind, name in client.calls if kind == "Service"]
    assert sorted(writes) == sorted(
        [(verb, name) for name in ("svc0", "svc0-primary", "svc0-replicas") for verb in ("PATCH", "APPLY")]
    )
    for name in ("svc0", "svc0-primary", "svc0-replicas"):
        assert writes.index(("PATCH", name)) < writes.index(("APPLY", name))


def test_service_creates_are_few_in_flight_while_pods_are_not_held_back() -> None:
    """ClusterIP allocation contends in the API server: a flood of Service creates makes each one slow."""
    in_flight = {"Service": 0, "Pod": 0}
    most = {"Service": 0, "Pod": 0}

    class SlowCreates(FakeClient):
        async def create(self, body: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
            kind = body["kind"]
            in_flight[kind] += 1
            most[kind] = max(most[kind], in_flight[kind])
            await asyncio.sleep(0.01)
            in_flight[kind] -= 1
            return body

    store = Store()
    controller = Controller(KubeClient.__new__(KubeClient), store, clock=lambda: NOW)
    controller.client = SlowCreates(store)  # type: ignore[assignment]
    bodies = [
        {"kind": kind, "metadata": {"name": f"{kind}-{i}"}} for i in range(6) for kind in ("Service", "Pod")
    ]

    async def run() -> None:
        await asyncio.gather(*(controller._create(body, {}) for body in bodies))

    asyncio.run(run())
    assert most["Service"] == controller_module.SERVICE_CREATES_IN_FLIGHT
    assert most["Pod"] == 6


def _routing_writes(client: FakeClient) -> list[tuple[str, str]]:
    return [(verb, name) for verb, kind, name in client.calls if kind == "EndpointSlice"]


def _store_with_addresses() -> Store:
    """svc0's three pods on healthy nodes, each with an address: its primary svc0-1 can be routed to."""
    store = Store()
    store.put_node(node("node-0"))
    store.put_resource(
        {
            "metadata": {"name": "svc0", "namespace": "ns", "uid": "uid-demo", "resourceVersion": "1"},
            "spec": raw_spec(),
            "status": {"primary": "svc0-1", "term": 1},
        }
    )
    for ordinal in range(3):
        body = pod(ordinal, name="svc0", role="primary" if ordinal == 1 else "replica")
        body["status"]["podIP"] = f"10.0.0.{ordinal + 1}"
        store.put_pod(body)
    return store


def test_the_primary_slice_is_created_then_applied() -> None:
    """An apply that creates costs the API server several creates; later changes are applied."""
    store = _store_with_addresses()
    client = FakeClient(store)
    controller = Controller(KubeClient.__new__(KubeClient), store, clock=lambda: NOW)
    controller.client = client  # type: ignore[assignment]
    _reconcile_all(controller, 1)
    [(verb, name)] = _routing_writes(client)
    assert verb == "POST" and name in store.endpoint_slices.get(("ns", "svc0"))

    store.drop_pod(store.pods[("ns", "svc0")]["svc0-1"])  # the primary is gone: the slice must change
    client.calls.clear()
    _reconcile_all(controller, 1)
    assert _routing_writes(client) == [("APPLY", name)]


def test_a_slice_created_behind_our_view_stops_the_reconcile_without_a_blind_apply() -> None:
    """Our view is behind (another writer made it): an apply without its resourceVersion could route to a
    primary older than the one that writer saw. The re-run applies over the version the watch brings."""
    store = _store_with_addresses()

    class AlreadyThere(FakeClient):
        async def create(self, body: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
            if body["kind"] == "EndpointSlice":
                self.calls.append(("POST", body["kind"], body["metadata"]["name"]))
                raise ApiError(409, "AlreadyExists", "endpointslices already exists")
            return await super().create(body, strict=strict)

    client = AlreadyThere(store)
    controller = Controller(KubeClient.__new__(KubeClient), store, clock=lambda: NOW)
    controller.client = client  # type: ignore[assignment]
    with pytest.raises(StaleView):
        _reconcile_all(controller, 1)
    verbs = [verb for verb, _ in _routing_writes(client)]
    assert verbs == ["POST"]
