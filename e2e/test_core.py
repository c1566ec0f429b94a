"""The core reconcile on the real control plane: replicas, health, roles, routing, scaling, rollouts."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.faults import fail_container, make_node_not_ready, taint_out_of_service
from e2e.fts import ROLE, SERVING, Fts, manifest
from e2e.kube import Kube, condition, pod_ready, wait_for
from e2e.operator_process import OperatorProcess
from e2e.recorder import Seen, WatchRecorder


def _start(kube: Kube, namespace: str, body: dict[str, Any] | None = None) -> tuple[Fts, dict[str, Any]]:
    fts = Fts(kube, namespace)
    fts.create(body or manifest())
    return fts, fts.wait_ready()


def _replay(events: list[Seen]) -> list[tuple[float, dict[str, dict[str, Any]]]]:
    """The pods' states after each watch event: [(time, {name: pod})]."""
    state: dict[str, dict[str, Any]] = {}
    timeline = []
    for seen in events:
        name = seen.object["metadata"]["name"]
        if seen.type == "DELETED":
            state.pop(name, None)
        else:
            state[name] = seen.object
        timeline.append((seen.at, dict(state)))
    return timeline


def test_three_replicas_ready_spread_and_routed(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts, status = _start(kube, namespace)
    pods = fts.live_pods()
    assert len(pods) == 3 and all(pod_ready(p) for p in pods)
    assert len({p["spec"]["nodeName"] for p in pods}) >= 2, "pods spread over nodes"
    assert status["replicas"] == status["readyReplicas"] == status["servingReplicas"] == 3
    assert status["term"] == 1
    wait_for(
        lambda: (
            [p["metadata"]["name"] for p in fts.live_pods() if p["metadata"]["labels"][ROLE] == "primary"]
            == [status["primary"]]
        ),
        what="exactly the primary labelled primary",
    )
    # Status moves first, labels and annotations follow it a moment later.
    wait_for(
        lambda: all(p["metadata"]["annotations"]["ftso.dev/term"] == "1" for p in fts.live_pods()),
        what="every pod annotated with term 1",
    )
    wait_for(fts.primary_routed_exactly, what="<name>-primary to route to exactly the primary")
    all_ips = {p["status"]["podIP"] for p in pods}
    wait_for(lambda: fts.routed("svc") == all_ips, what="<name> to route to every pod")
    replica_ips = all_ips - {fts.pod_ip(status["primary"])}
    wait_for(
        lambda: fts.routed("svc-replicas") == replica_ips, what="<name>-replicas to route to the replicas"
    )
    pdb = kube.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/svc")
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1
    # Default probes were added to the container that had none.
    container = pods[0]["spec"]["containers"][0]
    assert container["readinessProbe"]["tcpSocket"]["port"] == 8080
    assert container["livenessProbe"]["tcpSocket"]["port"] == 8080


def test_kubectl_get_shows_the_columns(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    _start(kube, namespace)
    output = kube.kubectl("get", "fts", "-n", namespace).stdout
    header, row = output.splitlines()[:2]
    for column in ("MODE", "REPLICAS", "READY", "PRIMARY", "PHASE", "AGE"):
        assert column in header
    assert "PrimaryReplica" in row and "svc-" in row and "Ready" in row
    # Short name and categories work too.
    assert "svc" in kube.kubectl("get", "ftso", "-n", namespace).stdout


def test_deleted_replica_is_replaced(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    fts, status = _start(kube, namespace)
    victim = next(p for p in fts.live_pods() if p["metadata"]["name"] != status["primary"])
    name, uid = victim["metadata"]["name"], victim["metadata"]["uid"]
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/{name}")
    wait_for(
        lambda: (p := fts.pod(name)) and p["metadata"]["uid"] != uid and pod_ready(p),
        what=f"{name} replaced and Ready",
    )
    status = fts.wait_ready()
    assert status["primary"] != name


def test_failed_container_leaves_serving_then_is_replaced(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts, status = _start(kube, namespace)
    victim = next(p for p in fts.live_pods() if p["metadata"]["name"] != status["primary"])
    name, uid, ip = victim["metadata"]["name"], victim["metadata"]["uid"], victim["status"]["podIP"]
    wait_for(lambda: ip in fts.routed("svc"), what="the victim routed")
    with WatchRecorder(
        kube.kubeconfig, f"/api/v1/namespaces/{namespace}/pods", "ftso.dev/service=svc"
    ) as pods:
        fail_container(kube, namespace, name)
        wait_for(lambda: ip not in fts.routed("svc"), timeout=30, what="the failed pod out of the Service")
        wait_for(
            lambda: (p := fts.pod(name)) and p["metadata"]["uid"] != uid and pod_ready(p),
            timeout=60,
            what=f"{name} replaced and Ready",
        )
    old = [s.object for s in pods.snapshot() if s.object["metadata"]["uid"] == uid]
    assert any(o["metadata"]["labels"].get(SERVING) == "false" for o in old), (
        "the failed pod was marked not serving"
    )
    fts.wait_ready()


def test_notready_node_pods_are_lost_and_replaced_elsewhere(
    kube: Kube, namespace: str, operator: OperatorProcess, healthy_nodes: None
) -> None:
    fts, status = _start(kube, namespace)
    victim = next(p for p in fts.live_pods() if p["metadata"]["name"] != status["primary"])
    node = victim["spec"]["nodeName"]
    path = f"/apis/ftso.dev/v1alpha1/namespaces/{namespace}/faulttolerantservices"
    with WatchRecorder(kube.kubeconfig, path) as history:
        make_node_not_ready(kube, node)
        # Deleted, but its process may still run on the unreachable node: its name waits for proof.
        fts.wait_event("PodMayStillRun", timeout=60)
        assert victim["metadata"]["name"] not in [p["metadata"]["name"] for p in fts.live_pods()]
        taint_out_of_service(kube, node)

        def replaced_elsewhere() -> bool:
            pods = fts.live_pods()
            return len(pods) == 3 and all(pod_ready(p) and p["spec"]["nodeName"] != node for p in pods)

        wait_for(replaced_elsewhere, timeout=90, what=f"every pod Ready off {node}")
    lost = [
        entry
        for seen in history.snapshot()
        for entry in (seen.object.get("status") or {}).get("pods") or []
        if entry["health"] == "Lost" and entry["node"] == node
    ]
    assert lost, "status reported the pods on the NotReady node as Lost"
    assert "NotReady" in lost[0]["reason"]
    fts.wait_event("PodLost")
    fts.wait_ready()


def test_scale_up_and_down_keeps_the_primary(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    fts, status = _start(kube, namespace)
    primary = status["primary"]
    kube.kubectl("scale", "fts/svc", "--replicas=5", "-n", namespace)
    fts.wait_ready()
    assert sorted(p["metadata"]["name"] for p in fts.live_pods()) == [f"svc-{i}" for i in range(5)]
    assert fts.status()["primary"] == primary
    kube.kubectl("scale", "fts/svc", "--replicas=2", "-n", namespace)
    wait_for(lambda: len(fts.pods()) == 2, what="scaled down to 2 pods")
    status = fts.wait_ready()
    assert sorted(p["metadata"]["name"] for p in fts.pods()) == ["svc-0", "svc-1"]
    if int(primary.rsplit("-", 1)[1]) < 2:
        assert status["primary"] == primary, "the primary is kept when it stays in range"
    scale = kube.get(f"/apis/ftso.dev/v1alpha1/namespaces/{namespace}/faulttolerantservices/svc/scale")
    assert (
        scale is not None
        and scale["spec"]["replicas"] == 2
        and scale["status"]["selector"] == "ftso.dev/service=svc"
    )


def _max_unavailable(timeline: list[tuple[float, dict[str, dict[str, Any]]]], replicas: int) -> int:
    worst = 0
    # The recorder's initial listing replays pods one by one; measure from the first full view on.
    start = next((i for i, (_, pods) in enumerate(timeline) if len(pods) >= replicas), len(timeline))
    for _, pods in timeline[start:]:
        available = [p for p in pods.values() if pod_ready(p) and not p["metadata"].get("deletionTimestamp")]
        worst = max(worst, replicas - len(available))
    return worst


def test_template_change_rolls_one_pod_at_a_time_primary_last(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts, status = _start(kube, namespace)
    first_primary = status["primary"]
    with WatchRecorder(
        kube.kubeconfig, f"/api/v1/namespaces/{namespace}/pods", "ftso.dev/service=svc"
    ) as pods:
        wait_for(lambda: len(_replay(pods.snapshot())[-1][1]) == 3, what="the recorder to see the pods")
        fts.patch_spec(
            {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "app:2",
                                "ports": [{"name": "http", "containerPort": 8080}],
                            }
                        ]
                    }
                }
            }
        )
        wait_for(
            lambda: (
                all(p["spec"]["containers"][0]["image"] == "app:2" for p in fts.live_pods())
                and len(fts.live_pods()) == 3
            ),
            timeout=240,
            what="every pod on the new image",
        )
        status = fts.wait_ready()
    timeline = _replay(pods.snapshot())
    assert _max_unavailable(timeline, 3) <= 1, "never more than maxUnavailable pods down"
    deletions = [
        s.object["metadata"]["name"]
        for s in pods.snapshot()
        if s.type == "DELETED" and s.object["spec"]["containers"][0]["image"] == "app:1"
    ]
    assert len(deletions) == 3
    assert deletions[-1] == first_primary, "the primary is rolled last"
    assert status["primary"] != first_primary and status["term"] == 2


def test_operator_restarted_mid_rollout_carries_on(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts, _ = _start(kube, namespace)
    with WatchRecorder(
        kube.kubeconfig, f"/api/v1/namespaces/{namespace}/pods", "ftso.dev/service=svc"
    ) as pods:
        fts.patch_spec({"template": {"metadata": {"labels": {"app": "svc", "rev": "2"}}}})
        wait_for(lambda: any(s.type == "DELETED" for s in pods.snapshot()), what="the rollout to start")
        operator.kill()
        operator.start()
        wait_for(
            lambda: (
                len(fts.live_pods()) == 3
                and all(p["metadata"]["labels"].get("rev") == "2" for p in fts.live_pods())
            ),
            timeout=120,
            what="the rollout to finish after the restart",
        )
        fts.wait_ready()
    for _, state in _replay(pods.snapshot()):
        live = [p for p in state.values() if not p["metadata"].get("deletionTimestamp")]
        assert len(live) <= 3, f"duplicate pods: {sorted(state)}"


def test_active_active_every_healthy_pod_serves(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts, status = _start(kube, namespace, manifest(mode="ActiveActive"))
    assert status["primary"] == "" and status["servingReplicas"] == 3
    pods = fts.live_pods()
    assert {p["metadata"]["labels"][ROLE] for p in pods} == {"replica"}
    assert kube.get(f"/api/v1/namespaces/{namespace}/services/svc-primary") is None
    wait_for(lambda: fts.routed("svc") == {p["status"]["podIP"] for p in pods}, what="every pod routed")


def test_operator_judged_invalid_spec_is_reported_and_pods_kept(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts, _ = _start(kube, namespace)
    uids = {p["metadata"]["uid"] for p in fts.live_pods()}
    fts.patch_spec({"template": {"metadata": {"labels": {"app": "svc", "ftso.dev/role": "primary"}}}})
    wait_for(lambda: condition(fts.get(), "InvalidSpec") == "True", what="InvalidSpec=True")
    assert fts.status()["phase"] == "Invalid"
    wait_for(
        lambda: any(e["reason"] == "InvalidSpec" and e["type"] == "Warning" for e in fts.events()),
        what="a Warning event",
    )
    assert {p["metadata"]["uid"] for p in fts.live_pods()} == uids, "running pods are left alone"
    fts.patch_spec({"template": {"metadata": {"labels": {"app": "svc", "ftso.dev/role": None}}}})
    wait_for(lambda: condition(fts.get(), "InvalidSpec") == "False", what="InvalidSpec=False again")


def test_deleting_the_resource_removes_what_it_owned(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts, _ = _start(kube, namespace)
    kube.delete(fts.path)

    def all_gone() -> bool:
        services = kube.items(f"/api/v1/namespaces/{namespace}/services", "ftso.dev/service=svc")
        pdbs = kube.items(
            f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets", "ftso.dev/service=svc"
        )
        return not fts.pods() and not services and not pdbs and fts.get() is None

    wait_for(all_gone, timeout=90, what="pods, Services and the PDB garbage-collected")


INVALID_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("negative replicas", {"replicas": -1}, "replicas must be 0 or more"),
    ("unknown mode", {"mode": "Leaderless"}, "Unsupported value"),
    ("no containers", {"template": {"spec": {"containers": []}}}, "at least one container"),
    (
        "duplicate container names",
        {"template": {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]}}},
        "unique names",
    ),
    (
        "duplicate service port names",
        {"service": {"ports": [{"name": "web", "port": 80}, {"name": "web", "port": 81}]}},
        "service.ports must have unique names",
    ),
    (
        "service port out of range",
        {"service": {"ports": [{"name": "web", "port": 70000}]}},
        "between 1 and 65535",
    ),
    (
        "zero probe period",
        {"health": {"readinessProbe": {"periodSeconds": 0}}},
        "periodSeconds must be a positive number",
    ),
    (
        "negative unready timeout",
        {"health": {"unreadyTimeoutSeconds": -5}},
        "unreadyTimeoutSeconds must be a positive",
    ),
    (
        "bad maxUnavailable",
        {"disruption": {"maxUnavailable": "half"}},
        "count from 1 to 1000 or a percentage",
    ),
    ("unknown service type", {"service": {"type": "Magic"}}, "Unsupported value"),
    ("unknown spread policy", {"spread": {"whenUnsatisfiable": "Sometimes"}}, "Unsupported value"),
    ("too many replicas", {"replicas": 5000}, "at most 1000"),
    (
        "node lost sooner than kubelets renew",
        {"failover": {"nodeLostAfterSeconds": 5}},
        "must be at least 11",
    ),
]


@pytest.mark.parametrize(("case", "spec", "message"), INVALID_SPECS, ids=[c[0] for c in INVALID_SPECS])
def test_invalid_spec_is_rejected_with_a_readable_message(
    kube: Kube, namespace: str, case: str, spec: dict[str, Any], message: str
) -> None:
    body = manifest()
    body["spec"].update(spec)
    result = kube.kubectl(
        "apply", "-n", namespace, "-f", "-", stdin=__import__("json").dumps(body), check=False
    )
    assert result.returncode != 0, f"{case} was accepted"
    assert message in result.stderr, result.stderr


def test_long_names_and_mode_changes_are_rejected(kube: Kube, namespace: str) -> None:
    import json

    long = manifest(name="x" * 53)
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(long), check=False)
    assert result.returncode != 0 and "at most 52 characters" in result.stderr
    kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest()))
    changed = manifest(mode="ActiveActive")
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(changed), check=False)
    assert result.returncode != 0 and "mode is immutable" in result.stderr
