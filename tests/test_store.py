"""The operator's view: newest wins, stale deletes do not drop a recreated pod, stored objects stay slim."""

from __future__ import annotations

from ftso.store import Store, slim

from .factories import pod


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
