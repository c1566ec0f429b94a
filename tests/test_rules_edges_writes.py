"""The writes hold at the edges: a status write leaves exactly the decided status (a merge patch keeps what it
does not name), and a write computed from a stale view is refused by the API server, so two writers (a
deposed leader, two installs, a lagging watch) never move a pod's term back. Through the controller, with
tests/fakeapi.py in place of the API server."""

from __future__ import annotations

import asyncio
import copy
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftso import names
from ftso.client import ApiError, KubeClient
from ftso.controller import Controller, StaleView
from ftso.model import format_time
from ftso.plan import Plan, PodDelete
from ftso.store import Store

from .factories import NOW, node, observed, pod, raw_spec
from .fakeapi import FakeApi, apply_merge_patch, check_resource_version

CHECKPOINT = {
    "intervalSeconds": 300,
    "template": {"name": "checkpoint", "image": "counter:dev", "args": ["checkpoint"]},
    "storage": {"persistentVolumeClaim": {"claimName": "ckpt"}},
    "restoreTemplate": {"name": "restore", "image": "counter:dev", "args": ["restore"]},
}
KEY = ("ns", "demo")


def _resource(spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "demo", "namespace": "ns", "uid": "uid-demo", "generation": 1},
        "spec": spec,
        "status": status,
    }


def _api(spec: dict[str, Any], status: dict[str, Any], pods: list[dict[str, Any]]) -> FakeApi:
    api = FakeApi()
    api.put(_resource(spec, status))
    for body in pods:
        api.put({"kind": "Pod", **body})
    return api


def _view(api: FakeApi, store: Store | None = None) -> Store:
    """What the watches deliver: every object the API server holds; pods it no longer holds leave."""
    store = store or Store()
    for n in ("node-0", "node-1", "node-2"):
        store.put_node(node(n))
    for (kind, _, _), body in api.objects.items():
        if kind == names.KIND:
            store.put_resource(copy.deepcopy(body))
        elif kind in ("Pod", "Service", "PodDisruptionBudget", "EndpointSlice", "Job"):
            store.put_owned(kind, copy.deepcopy(body))
    for name, body in list(store.pods.get(KEY, {}).items()):
        if ("Pod", "ns", name) not in api.objects:
            store.drop_pod(body)
    return store


def _controller(api: FakeApi, store: Store) -> Controller:
    controller = Controller(KubeClient.__new__(KubeClient), store, clock=lambda: NOW)
    controller.client = api  # type: ignore[assignment]
    return controller


def _reconcile(controller: Controller) -> float | None:
    return asyncio.run(controller.reconcile(KEY))


def _run_ready(api: FakeApi, name: str, ordinal: int) -> None:
    """The scheduler and the kubelet: the pod runs on node-<ordinal> and has been Ready for a while."""
    body = api.body("Pod", "ns", name)
    body["spec"]["nodeName"] = f"node-{ordinal}"
    ready_since = format_time(NOW - timedelta(minutes=8))
    body["status"] = {
        "phase": "Running",
        "podIP": f"10.0.0.{ordinal + 10}",
        "startTime": format_time(NOW - timedelta(minutes=9)),
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready_since}],
        "containerStatuses": [{"name": "app", "state": {"running": {}}}],
    }
    api.put(body)


def _lose_every_pod(api: FakeApi, store: Store) -> None:
    for name in [n for (kind, _, n) in api.objects if kind == "Pod"]:
        del api.objects[("Pod", "ns", name)]
    _view(api, store)


def _started(api: FakeApi) -> int:
    return sum(1 for e in api.events if e["reason"] == names.EventReason.RECOVERY_STARTED)


def _status(api: FakeApi) -> dict[str, Any]:
    return dict(api.body(names.KIND, "ns", "demo")["status"])


# Item: a second automatic recovery


def test_a_second_recovery_is_started_once_and_enforced() -> None:
    """The first recovery's completedAt must not survive into the second: a merge patch keeps every key it
    does not name, so the written status must name (null) what the decided status no longer has."""
    spec = raw_spec(checkpoint=CHECKPOINT)
    status = {
        "primary": "demo-0",
        "term": 4,
        "checkpoints": [
            {"id": "c7", "job": "j7", "result": "Succeeded", "finishedAt": format_time(NOW)},
        ],
        "lastSuccessfulCheckpoint": "c7",
        "checkpointSchedule": {"lastScheduleTime": format_time(NOW)},
    }
    pods = [pod(i, spec=spec, role="primary" if i == 0 else "replica", term=4) for i in range(3)]
    api = _api(spec, status, pods)
    store = _view(api)
    controller = _controller(api, store)
    for first_or_second in (1, 2):
        _lose_every_pod(api, store)
        for _ in range(3):  # every pod is lost: one recovery starts, and says so once
            _reconcile(controller)
            _view(api, store)
        assert _started(api) == first_or_second
        recovery = _status(api)["recovery"]
        assert recovery["checkpoint"] == "c7" and "completedAt" not in recovery
        created = sorted(n for (kind, _, n) in api.objects if kind == "Pod")
        assert created == ["demo-0", "demo-1", "demo-2"]
        # A pod that did not load the checkpoint (made after the data was lost) turns Ready first ...
        del api.body("Pod", "ns", "demo-0")["metadata"]["annotations"][names.ANNOTATION_RESTORED_FROM]
        _run_ready(api, "demo-0", 0)
        _view(api, store)
        _reconcile(controller)
        _view(api, store)
        assert _status(api)["primary"] == "", "an empty pod is never elected during a recovery"
        assert _started(api) == first_or_second
        # ... then a restored one: it is elected and the recovery completes.
        _run_ready(api, "demo-1", 1)
        _view(api, store)
        _reconcile(controller)
        _view(api, store)
        assert _status(api)["primary"] == "demo-1"
        assert "completedAt" in _status(api)["recovery"]


# The merge patch the status write sends


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=2), json_values, max_size=4)


def _without_nulls(value: Any) -> Any:
    """What a merge patch can produce: a null in an object means "no such key"."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


@settings(deadline=None)
@given(old=json_objects, new=json_objects)
def test_the_merge_patch_from_old_to_new_makes_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    from ftso.patches import merge_patch

    old = _without_nulls(old)  # as the server holds it
    assert apply_merge_patch(old, merge_patch(old, new)) == _without_nulls(new)
    assert merge_patch(new, new) == {}, "nothing changed: nothing to send"


def test_the_fake_applies_a_merge_patch_as_the_api_server_does() -> None:
    """RFC 7386's own examples: null removes, objects merge, lists and scalars replace."""
    assert apply_merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert apply_merge_patch({"a": "b"}, {"a": None}) == {}
    assert apply_merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert apply_merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert apply_merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert apply_merge_patch({"recovery": {"completedAt": "x"}}, {"recovery": {"checkpoint": "c"}}) == {
        "recovery": {"completedAt": "x", "checkpoint": "c"}
    }


def test_a_stale_resource_version_is_a_conflict_in_the_fake() -> None:
    api = _api(raw_spec(), {"term": 1}, [])
    body = api.body(names.KIND, "ns", "demo")
    patch = {"metadata": {"resourceVersion": "1"}, "status": {"term": 2}}
    with pytest.raises(Exception, match="409"):
        asyncio.run(api.merge_patch(names.KIND, "ns", "demo", patch, subresource="status"))
    assert body["status"] == {"term": 1}


# Item: no write from a stale view


def _three_pods(term: int, primary: int) -> list[dict[str, Any]]:
    pods = []
    for i in range(3):
        body = pod(i, role="primary" if i == primary else "replica", term=term, node_name=f"node-{i}")
        body["status"]["podIP"] = f"10.0.0.{i + 10}"
        pods.append(body)
    return pods


def _settle(api: FakeApi, store: Store, controller: Controller) -> None:
    """Reconcile until the view's own writes are done: peers annotations, the Services, the slice."""
    for _ in range(4):
        _reconcile(controller)
        _view(api, store)
    api.calls.clear()


def _term_and_role(api: FakeApi, name: str) -> tuple[str, str]:
    metadata = api.body("Pod", "ns", name)["metadata"]
    return metadata["annotations"][names.ANNOTATION_TERM], metadata["labels"][names.LABEL_ROLE]


def _two_views() -> tuple[FakeApi, Store, Store]:
    """Both operators saw demo-0 primary at term 1. Then the newer one (A) moved the primary to demo-1 at
    term 2: status first, then the labels. The older one (B) saw none of it."""
    api = _api(raw_spec(), {"primary": "demo-0", "term": 1}, _three_pods(1, 0))
    a = _view(api)
    _settle(api, a, _controller(api, a))
    b = _view(api)
    resource = api.body(names.KIND, "ns", "demo")
    api.put({**resource, "status": {**resource["status"], "primary": "demo-1", "term": 2}})
    for i, role in ((0, "replica"), (1, "primary"), (2, "replica")):
        body = api.body("Pod", "ns", f"demo-{i}")
        body["metadata"]["labels"][names.LABEL_ROLE] = role
        body["metadata"]["annotations"][names.ANNOTATION_TERM] = "2"
        api.put(body)
    return api, _view(api, a), b


def test_a_stale_views_label_patch_is_refused_and_never_moves_a_term_back() -> None:
    """The racing operators of e2e test_two_operators_racing: B's view is as old for the pods as for the
    status, so view_behind cannot see it; only the server can, by the pod's resourceVersion."""
    api, _, b = _two_views()
    stale = b.pods[KEY]["demo-1"]
    stale["metadata"]["labels"][names.LABEL_SERVING] = "false"  # B has a label to repair on demo-1
    try:
        _reconcile(_controller(api, b))
        outcome = None
    except StaleView as stale:
        outcome = stale
    assert [_term_and_role(api, f"demo-{i}") for i in range(3)] == [
        ("2", "replica"),
        ("2", "primary"),
        ("2", "replica"),
    ]
    assert ("PATCH", "Pod", "demo-1") in api.refused
    assert isinstance(outcome, StaleView), "the reconcile stops; the work queue runs it again"
    assert api.body(names.KIND, "ns", "demo")["status"]["term"] == 2
    _view(api, b)  # the watch catches up: the re-run works on fresh state
    _reconcile(_controller(api, b))
    assert _term_and_role(api, "demo-1") == ("2", "primary")


def test_a_refused_write_requeues_the_key_and_the_rerun_on_fresh_state_succeeds() -> None:
    """No crash loop: the work queue retries the key after its backoff, by then on the watch's news."""
    from ftso.workqueue import WorkQueue

    api, _, b = _two_views()
    b.pods[KEY]["demo-1"]["metadata"]["labels"][names.LABEL_SERVING] = "false"
    controller = _controller(api, b)
    outcomes: list[str] = []

    async def process(key: tuple[str, str]) -> float | None:
        try:
            answer = await controller.reconcile(key)
        except StaleView:
            outcomes.append("stale")
            _view(api, b)  # the watch events arrive meanwhile
            raise
        outcomes.append("done")
        return answer

    async def scenario() -> None:
        queue: WorkQueue[tuple[str, str]] = WorkQueue(process, workers=1)
        queue.start()
        queue.add(KEY)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if "done" in outcomes:
                break
        await queue.stop()

    asyncio.run(scenario())
    assert outcomes == ["stale", "done"]
    assert _term_and_role(api, "demo-1") == ("2", "primary")


def test_a_stale_views_pod_delete_is_refused() -> None:
    api, _, b = _two_views()
    plan = Plan(status={}, deletes=[PodDelete("demo-1", "pod-uid-1", force=True, reason="")])  # type: ignore[typeddict-item]
    with pytest.raises(StaleView):
        asyncio.run(_controller(api, b)._delete_pods(KEY, plan))
    assert ("Pod", "ns", "demo-1") in api.objects, "B saw an older demo-1 than the one it would delete"


def test_a_stale_views_primary_slice_is_refused() -> None:
    api, a, b = _two_views()
    _reconcile(_controller(api, a))  # A routes <name>-primary to demo-1
    routed = api.body("EndpointSlice", "ns", "demo-primary")
    assert [e["targetRef"]["name"] for e in routed["endpoints"]] == ["demo-1"]
    old_slice = copy.deepcopy(b.endpoint_slices.get(KEY)["demo-primary"])
    del old_slice["metadata"]["resourceVersion"]  # as decide builds it
    old_slice["endpoints"][0]["addresses"] = ["10.0.0.99"]  # B would route again to what it sees
    with pytest.raises(StaleView):
        asyncio.run(_controller(api, b)._route(KEY, old_slice))
    b.endpoint_slices.drop(old_slice)  # and with no slice in B's view, its create meets A's slice
    with pytest.raises(StaleView):
        asyncio.run(_controller(api, b)._route(KEY, old_slice))
    assert api.body("EndpointSlice", "ns", "demo-primary") == routed


def test_our_own_writes_keep_our_view_current_while_the_watch_lags() -> None:
    """Each write's answer carries the new resourceVersion into the view: a lone operator whose watch is
    behind its own writes never refuses itself."""
    pods = _three_pods(1, 0)
    pods[0]["status"]["phase"] = "Failed"  # the primary fails: a failover writes status, labels, slice
    api = _api(raw_spec(), {"primary": "demo-0", "term": 1}, pods)
    store = _view(api)
    controller = _controller(api, store)
    for _ in range(4):
        _reconcile(controller)  # no watch event in between
    assert api.refused == []
    assert _status(api)["primary"] != "demo-0" and _status(api)["term"] == 2


# Item: the leader guard and the time a write waits for a connection


def test_a_write_that_waits_for_a_connection_past_the_leadership_is_never_sent() -> None:
    """The guard is asked before each attempt, but the attempt may wait for a connection (the pool is busy,
    a connect is slow) far longer than the leadership lasts: the new leader's writes would then be
    overwritten by the deposed one's. Each attempt is bounded by the leadership left."""
    import aiohttp
    from aiohttp import web

    from ftso.client import NotLeader

    from .test_client import Server, serving

    arrived: list[tuple[str, bool]] = []
    deadline = [0.0]
    loop_time = [lambda: 0.0]

    class SlowReads(Server):
        async def handle(self, request: web.Request) -> web.Response:
            arrived.append((request.method, loop_time[0]() < deadline[0]))
            if request.method == "GET":
                await asyncio.sleep(0.6)  # holds the only connection
            return web.json_response({"kind": "Status"})

    async def scenario() -> str:
        async with serving(SlowReads()) as client:
            loop = asyncio.get_running_loop()
            loop_time[0] = loop.time
            client._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            deadline[0] = loop.time() + 0.2
            client.write_guard = lambda: loop.time() < deadline[0]
            client.leadership_left = lambda: deadline[0] - loop.time()
            read = asyncio.create_task(client.request("GET", "/api/v1/namespaces/ns/pods"))
            await asyncio.sleep(0.05)
            try:
                await client.request("PATCH", "/api/v1/namespaces/ns/pods/p", body={})
                outcome = "written"
            except NotLeader:
                outcome = "NotLeader"
            await read
            return outcome

    outcome = asyncio.run(scenario())
    assert ("PATCH", False) not in arrived, "a write reached the server after the leadership ended"
    assert [method for method, _ in arrived] == ["GET"] and outcome == "NotLeader"


# Item: per-pod Services and the route that sends to them


class _Recorder(FakeApi):
    """Accepts every write and records its order; objects need not exist."""

    async def delete(self, kind: str, namespace: str, name: str, **_: Any) -> None:
        self.calls.append(("DELETE", kind, name))

    async def apply(self, body: Any) -> dict[str, Any]:
        self.calls.append(("APPLY", body["kind"], body["metadata"]["name"]))
        return dict(body)


def _scale_down_plan(refuse_route: bool = False) -> tuple[Plan, list[tuple[str, str, str]]]:
    """Weighted, 3 -> 2 replicas: the route moves off demo-2's Service and that Service goes."""
    from .test_traffic import _decide, _pods, _spec

    first = _decide(_spec(policy="Weighted"))
    services = {s["metadata"]["name"]: s for s in first.owned_creates if s["kind"] == "Service"}
    decided = _decide({**_spec(policy="Weighted"), "replicas": 2}, pods=_pods()[:2], services=services)
    (route,) = [o for o in decided.traffic_applies if o["kind"] == "HTTPRoute"]
    backends = {b["name"] for rule in route["spec"]["rules"] for b in rule["backendRefs"]}
    assert "demo-2" not in backends and ("Service", "demo-2") in decided.owned_deletes
    plan = Plan(status={}, owned_deletes=decided.owned_deletes, traffic_applies=decided.traffic_applies)  # type: ignore[typeddict-item]
    api = _Recorder()
    if refuse_route:

        async def refused(body: Any) -> dict[str, Any]:
            api.calls.append(("APPLY", body["kind"], body["metadata"]["name"]))
            raise ApiError(403, "Forbidden", "httproutes is forbidden")

        api.apply = refused  # type: ignore[method-assign]
    controller = _controller(api, Store())
    asyncio.run(controller.execute(KEY, observed([]), plan))  # no status, hooks nor Events to write
    return plan, api.calls


def test_a_pods_service_is_deleted_only_after_the_route_moved_off_it() -> None:
    """Deleted first, the route's share for demo-2 fails (a backend that does not exist) until it moves."""
    _, calls = _scale_down_plan()
    writes = [(verb, kind, name) for verb, kind, name in calls if kind in ("Service", "HTTPRoute")]
    assert writes.index(("APPLY", "HTTPRoute", "demo")) < writes.index(("DELETE", "Service", "demo-2"))


def test_a_pods_service_stays_while_the_route_that_sends_to_it_was_refused() -> None:
    _, calls = _scale_down_plan(refuse_route=True)
    assert ("DELETE", "Service", "demo-2") not in calls


# Item: whose route it is


def _route_body(labels: dict[str, str], owner_uid: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "demo", "namespace": "ns", "labels": labels}
    if owner_uid is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": names.API_VERSION, "kind": names.KIND, "name": "demo", "uid": owner_uid}
        ]
    return {"kind": "HTTPRoute", "metadata": metadata}


@pytest.mark.parametrize(
    ("labels", "owner_uid", "ours"),
    [
        ({names.LABEL_MANAGED_BY: names.MANAGED_BY}, "uid-demo", True),
        ({}, "uid-demo", True),  # someone removed the label: still ours, still kept up to date
        ({names.LABEL_MANAGED_BY: names.MANAGED_BY}, "uid-of-an-older-demo", False),
        ({names.LABEL_MANAGED_BY: names.MANAGED_BY}, None, False),  # a copy with our label is not ours
    ],
)
def test_a_route_is_ours_by_its_owner_reference_not_by_a_label(
    labels: dict[str, str], owner_uid: str | None, ours: bool
) -> None:
    from ftso.controller import TrafficLookup

    from .test_traffic import FakeTrafficApi, _looked_up, _spec

    api = FakeTrafficApi(
        {"gateway.networking.k8s.io/v1": ["gateways", "httproutes"]},
        {("Gateway", "web"): {}, ("HTTPRoute", "demo"): _route_body(labels, owner_uid)},
    )
    lookup = TrafficLookup(api)  # type: ignore[arg-type]
    view = _looked_up(lookup, _spec(), {}, KEY)
    assert view is not None
    assert (view.route is not None) == ours
    assert ("HTTPRoute" in view.foreign) != ours


def test_a_route_apply_from_a_stale_read_is_refused_and_read_again() -> None:
    """The route is read at most every 10 s: another writer's newer route is not overwritten from the old
    read (it may weigh a newer primary); the write is given up (nothing else is) and the route read again."""
    from ftso.controller import TrafficLookup

    from .test_traffic import FakeTrafficApi, _looked_up, _spec

    class VersionedRoutes(FakeTrafficApi):
        async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
            current = self.objects.get((body["kind"], body["metadata"]["name"]))
            if current is not None:
                check_resource_version(current, body["metadata"].get("resourceVersion"))
            stored = {**body, "metadata": {**body["metadata"], "resourceVersion": "9"}}
            self.objects[(body["kind"], body["metadata"]["name"])] = stored
            return stored

        async def delete(self, kind: str, namespace: str, name: str, **preconditions: Any) -> None:
            check_resource_version(self.objects[(kind, name)], preconditions.get("resource_version") or None)
            del self.objects[(kind, name)]

    read = _route_body({}, "uid-demo")
    read["metadata"]["resourceVersion"] = "5"
    api = VersionedRoutes({"gateway.networking.k8s.io/v1": ["gateways", "httproutes"]}, {})
    api.objects = {("Gateway", "web"): {}, ("HTTPRoute", "demo"): read}
    controller = Controller(api, Store())  # type: ignore[arg-type]
    controller.traffic = TrafficLookup(api)  # type: ignore[arg-type]
    _looked_up(controller.traffic, _spec(), {}, KEY)
    newer = {**read, "metadata": {**read["metadata"], "resourceVersion": "7"}, "spec": {"theirs": 1}}
    api.objects[("HTTPRoute", "demo")] = newer  # another writer, after our read
    ours = {**_route_body({}, "uid-demo"), "spec": {"ours": 1}}
    plan = Plan(status={}, traffic_applies=[ours])  # type: ignore[typeddict-item]
    assert not asyncio.run(controller._update_traffic(KEY, plan)), "refused: a pod's Service would stay"
    assert api.objects[("HTTPRoute", "demo")] is newer
    requests = api.requests
    _looked_up(controller.traffic, _spec(), {}, KEY)
    assert api.requests > requests, "the next reconcile reads the route again"
    # The Gateway's controller wrote the route's status since our read: the same spec, so it goes over it.
    api.objects[("HTTPRoute", "demo")] = {**newer, "metadata": {**newer["metadata"], "resourceVersion": "10"}}
    plan = Plan(status={}, traffic_applies=[ours])  # type: ignore[typeddict-item]
    assert asyncio.run(controller._update_traffic(KEY, plan))
    assert api.objects[("HTTPRoute", "demo")]["spec"] == {"ours": 1}
    # A delete from a stale read (the Gateway was dropped) is refused the same way.
    stored = api.objects[("HTTPRoute", "demo")]
    api.objects[("HTTPRoute", "demo")] = {
        **stored,
        "metadata": {**stored["metadata"], "resourceVersion": "11"},
    }
    plan = Plan(status={}, traffic_deletes=[("HTTPRoute", "demo")])  # type: ignore[typeddict-item]
    assert not asyncio.run(controller._update_traffic(KEY, plan))
    assert ("HTTPRoute", "demo") in api.objects
