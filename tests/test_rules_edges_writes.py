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
from ftso.client import KubeClient
from ftso.controller import Controller
from ftso.model import format_time
from ftso.store import Store

from .factories import NOW, node, pod, raw_spec
from .fakeapi import FakeApi, apply_merge_patch

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


@settings(max_examples=300)
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
