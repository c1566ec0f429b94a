"""The operator's view: newest wins, stale deletes do not drop a recreated pod, stored objects stay slim."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from ftso import names
from ftso.store import Store, slim

from .factories import NOW, pod

LABELS = {names.LABEL_SERVICE: "demo"}


def test_slim_pod_keeps_what_the_operator_reads() -> None:
    body = pod(0, node_name="node-1")
    body["metadata"]["managedFields"] = [{"manager": "x"}]
    body["metadata"]["resourceVersion"] = "5"
    small = slim(body)
    assert "managedFields" not in small["metadata"]
    assert small["spec"] == {"nodeName": "node-1"}
    assert small["status"]["phase"] == "Running" and small["status"]["conditions"]
    assert small["metadata"]["labels"] == body["metadata"]["labels"]


def test_newest_wins_and_a_stale_delete_keeps_the_recreated_pod() -> None:
    store = Store()
    first = pod(0)
    first["metadata"]["resourceVersion"] = "10"
    key = store.put_pod(first)
    assert key == ("ns", "demo")
    older = pod(0, phase="Pending")
    older["metadata"]["resourceVersion"] = "9"
    store.put_pod(older)
    assert store.pods[key]["demo-0"]["status"]["phase"] == "Running"
    recreated = pod(0)
    recreated["metadata"]["uid"] = "new-uid"
    recreated["metadata"]["resourceVersion"] = "12"
    store.put_pod(recreated)
    store.drop_pod(first)  # the delete event of the old incarnation arrives late
    assert store.pods[key]["demo-0"]["metadata"]["uid"] == "new-uid"
    assert store.keys_on_node("node-0") == {key}


def _versioned(ordinal: int, version: int, uid: str = "") -> dict[str, Any]:
    body = pod(ordinal)
    body["metadata"]["resourceVersion"] = str(version)
    if uid:
        body["metadata"]["uid"] = uid
    return body


def _relist(
    store: Store, kind: str, namespace: str | None, items: list[dict[str, Any]], version: int
) -> bool:
    """As the operator relists: one page per item, so every test also crosses page boundaries."""
    listing = store.begin_relist(kind, namespace, version)
    for item in items:
        store.take_listed(listing, [item])
    return store.end_relist(listing)


def test_relist_drops_what_vanished_while_the_watch_was_down() -> None:
    store = Store()
    key = store.put_pod(_versioned(0, 10))
    store.put_pod(_versioned(1, 11))
    assert key is not None
    reset = _relist(store, "Pod", "ns", [_versioned(1, 11)], 20)
    assert not reset
    assert set(store.pods[key]) == {"demo-1"}
    assert store.keys_on_node("node-0") == {key}


def test_relist_keeps_what_a_watch_event_brought_after_the_list() -> None:
    store = Store()
    key = store.put_pod(_versioned(2, 25))  # created after the list's snapshot, seen by the watch
    _relist(store, "Pod", "ns", [], 20)
    assert key is not None and set(store.pods[key]) == {"demo-2"}


def test_relist_only_touches_its_own_namespace() -> None:
    store = Store()
    key = store.put_pod(_versioned(0, 10))
    _relist(store, "Pod", "other", [], 20)
    assert key is not None and set(store.pods[key]) == {"demo-0"}


def test_versions_gone_back_reset_the_view_instead_of_freezing_it() -> None:
    """After an etcd restore every resourceVersion is lower than what we hold: take the list as it is."""
    store = Store()
    key = store.put_pod(_versioned(0, 500))
    store.put_pod(_versioned(1, 501))
    assert not _relist(store, "Pod", "ns", [_versioned(0, 500), _versioned(1, 501)], 510)
    restored = _versioned(0, 90)
    restored["status"]["phase"] = "Pending"
    assert _relist(store, "Pod", "ns", [restored], 100)
    assert key is not None and set(store.pods[key]) == {"demo-0"}
    assert store.pods[key]["demo-0"]["status"]["phase"] == "Pending"
    # From then on, watch events newer than the restore are taken again.
    newer = _versioned(0, 101)
    store.put_pod(newer)
    assert store.pods[key]["demo-0"]["metadata"]["resourceVersion"] == "101"


def test_owned_index_and_resources_relist_the_same_way() -> None:
    store = Store()
    service = {"metadata": {"name": "demo", "namespace": "ns", "resourceVersion": "5", "labels": LABELS}}
    store.services.put(service)
    assert not _relist(store, "Service", "ns", [service], 9)
    assert store.services.get(("ns", "demo"))
    _relist(store, "Service", "ns", [], 9)
    assert not store.services.get(("ns", "demo"))
    resource = {"metadata": {"name": "demo", "namespace": "ns", "resourceVersion": "7"}}
    store.put_resource(resource)
    _relist(store, "FaultTolerantService", None, [], 9)
    assert ("ns", "demo") not in store.resources


def test_relist_leaves_an_unchanged_object_as_it_is_and_takes_a_changed_one() -> None:
    store = Store()
    key = store.put_pod(_versioned(0, 10))
    store.put_pod(_versioned(1, 11))
    assert key is not None
    unchanged = store.pods[key]["demo-0"]
    changed = _versioned(1, 15)
    changed["status"]["phase"] = "Failed"
    _relist(store, "Pod", "ns", [_versioned(0, 10), changed], 20)
    assert store.pods[key]["demo-0"] is unchanged
    assert store.pods[key]["demo-1"]["status"]["phase"] == "Failed"


def test_relist_of_nodes_drops_a_node_gone_and_keeps_one_made_after_the_list() -> None:
    store = Store()
    for name, version in (("gone", "3"), ("kept", "4"), ("new", "30")):
        store.put_node({"metadata": {"name": name, "resourceVersion": version}})
    _relist(store, "Node", None, [{"metadata": {"name": "kept", "resourceVersion": "4"}}], 20)
    assert set(store.nodes) == {"kept", "new"}


def test_heartbeat_silence_puts_the_node_view_in_doubt() -> None:
    store = Store()
    assert store.heartbeat_doubt(NOW, 15) == ""  # no heartbeat watch yet: nothing to doubt
    lease = {"metadata": {"name": "node-0"}, "spec": {"renewTime": "t1"}}
    store.put_lease(lease, NOW)
    assert store.heartbeat_doubt(NOW + timedelta(seconds=14), 15) == ""
    assert "in doubt" in store.heartbeat_doubt(NOW + timedelta(seconds=16), 15)
    store.put_lease(
        {"metadata": {"name": "node-1"}, "spec": {"renewTime": "t1"}}, NOW + timedelta(seconds=16)
    )
    assert store.heartbeat_doubt(NOW + timedelta(seconds=17), 15) == ""


def test_stored_objects_share_their_repeated_keys_and_short_values() -> None:
    """Each watch event is parsed on its own; the store keeps one copy of what every pod repeats."""
    first, second = (slim(json.loads(json.dumps(pod(i)))) for i in (0, 1))
    first_condition, second_condition = first["status"]["conditions"][0], second["status"]["conditions"][0]
    assert first_condition["type"] is second_condition["type"]
    assert next(iter(first_condition)) is next(iter(second_condition))
    assert first["metadata"]["namespace"] is second["metadata"]["namespace"]


def test_a_relist_cut_short_after_a_restore_still_resets_when_tried_again() -> None:
    store = Store()
    key = store.put_pod(_versioned(0, 500))
    assert not _relist(store, "Pod", "ns", [_versioned(0, 500)], 510)
    cut_short = store.begin_relist("Pod", "ns", 100)  # etcd restored; a later page then fails
    assert cut_short.reset
    assert _relist(store, "Pod", "ns", [], 100)
    assert key not in store.pods
