"""health.metrics on the real control plane: kwok simulates each pod's CPU from its annotation, a real
metrics-server measures it, and the operator drains, replaces or fails over from a pod held over its
threshold; a short spike or stopped metrics change nothing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from e2e.control_plane import ControlPlane
from e2e.fts import ROLE, Fts, create_gateway, manifest
from e2e.kube import Kube, condition, wait_for
from e2e.operator_process import OperatorProcess
from ftso.client import ApiError

CPU = "kwok.x-k8s.io/usage-cpu"
GATEWAY_API = "/apis/gateway.networking.k8s.io/v1"
# metrics-server samples every 10 s; a breach counts after forSeconds of samples, then one more look.
SEEN_WITHIN = 60


def _metrics(**overrides: Any) -> dict[str, Any]:
    return {
        "cpu": {"above": "500m", "recoverBelow": "300m"},
        "forSeconds": 15,
        "replaceAfterSeconds": 20,
        **overrides,
    }


def _set_cpu(kube: Kube, namespace: str, pod: str, cpu: str) -> None:
    kube.patch(f"/api/v1/namespaces/{namespace}/pods/{pod}", {"metadata": {"annotations": {CPU: cpu}}})


def _entry(fts: Fts, pod: str) -> dict[str, Any]:
    return next((p for p in fts.status().get("pods") or [] if p["name"] == pod), {})


def _uid(fts: Fts, pod: str) -> str:
    return str(((fts.pod(pod) or {}).get("metadata") or {}).get("uid") or "")


def _replicas(fts: Fts) -> list[str]:
    return sorted(
        p["metadata"]["name"] for p in fts.live_pods() if p["metadata"]["labels"].get(ROLE) == "replica"
    )


def _weight(kube: Kube, namespace: str, pod: str) -> int | None:
    route = kube.get(f"{GATEWAY_API}/namespaces/{namespace}/httproutes/svc") or {}
    for backend in (route.get("spec") or {}).get("rules", [{}])[0].get("backendRefs") or []:
        if backend["name"] == pod:
            return int(backend.get("weight", 1))
    return None


def test_a_pod_held_over_its_cpu_threshold_is_drained_then_replaced_and_a_spike_changes_nothing(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    create_gateway(kube, namespace)
    fts = Fts(kube, namespace)
    traffic = {"policy": "Weighted", "gatewayRef": {"name": "web"}}
    fts.create(manifest(health={"metrics": _metrics()}, traffic=traffic))
    fts.wait_ready()
    spiky, busy = _replicas(fts)
    spiky_uid, busy_uid = _uid(fts, spiky), _uid(fts, busy)

    started = time.monotonic()
    _set_cpu(kube, namespace, busy, "900m")
    _set_cpu(kube, namespace, spiky, "900m")
    time.sleep(6)
    _set_cpu(kube, namespace, spiky, "1m")  # a spike shorter than forSeconds
    wait_for(
        lambda: _entry(fts, busy).get("breachSince"), timeout=SEEN_WITHIN, what=f"{busy}'s breach noticed"
    )
    breach_seen = time.monotonic() - started
    wait_for(
        lambda: _entry(fts, busy).get("health") == "Degraded" and _weight(kube, namespace, busy) == 0,
        timeout=SEEN_WITHIN,
        what=f"{busy} Degraded and drained to weight 0",
    )
    drained = time.monotonic() - started
    assert "cpu" in _entry(fts, busy)["reason"] and "above 500m" in _entry(fts, busy)["reason"]
    fts.wait_event("UsageBreach")
    wait_for(
        lambda: _uid(fts, busy) not in ("", busy_uid),
        timeout=SEEN_WITHIN,
        what=f"{busy} replaced by a new pod",
    )
    replaced = time.monotonic() - started
    print(
        f"{busy} at 900m: breach noticed {breach_seen:.1f}s, drained {drained:.1f}s, replaced {replaced:.1f}s"
    )
    fts.wait_ready()  # the replacement runs at kwok's default usage
    assert _uid(fts, spiky) == spiky_uid, "the spike replaced nothing"
    assert _entry(fts, spiky)["health"] == "Healthy" and "breachSince" not in _entry(fts, spiky)
    events = [e for e in fts.events() if e["reason"] == "UsageBreach"]
    assert events and all(spiky not in e["message"] for e in events)


def test_a_primary_held_over_its_cpu_threshold_is_failed_over_from(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    fts = Fts(kube, namespace)
    fts.create(manifest(health={"metrics": _metrics(replaceAfterSeconds=0)}))
    primary = fts.wait_ready()["primary"]
    term = fts.status()["term"]
    primary_uid = _uid(fts, primary)
    _set_cpu(kube, namespace, primary, "900m")
    wait_for(
        lambda: fts.status().get("term", 0) > term and fts.status().get("primary") != primary,
        timeout=SEEN_WITHIN + 10,
        what=f"a failover from {primary}",
    )
    record = fts.status()["failovers"][-1]
    assert record["from"] == primary and "cpu" in record["reason"], record
    assert "fenceUid" not in record, "alive and Ready, it is demoted, not fenced"
    fts.wait_event("FailoverCompleted")
    # replaceAfterSeconds 0: drained and failed over from, never deleted
    assert _uid(fts, primary) == primary_uid and primary in _replicas(fts)


def test_stopped_metrics_judge_nothing_and_the_condition_says_so(
    kube: Kube, namespace: str, operator: OperatorProcess, control_plane: ControlPlane
) -> None:
    fts = Fts(kube, namespace)
    fts.create(manifest(health={"metrics": _metrics(forSeconds=30, staleAfterSeconds=20)}))
    fts.wait_ready()
    busy = _replicas(fts)[0]
    busy_uid = _uid(fts, busy)
    _set_cpu(kube, namespace, busy, "900m")
    wait_for(
        lambda: _entry(fts, busy).get("breachSince"), timeout=SEEN_WITHIN, what=f"{busy}'s breach noticed"
    )
    with control_plane.paused("metrics-server"):
        wait_for(
            lambda: condition(fts.get(), "MetricsAvailable") == "False",
            timeout=SEEN_WITHIN,
            what="MetricsAvailable=False while metrics-server is stopped",
        )
        reason = next(c for c in fts.status()["conditions"] if c["type"] == "MetricsAvailable")["reason"]
        assert reason in ("MetricsStale", "MetricsUnavailable")
        time.sleep(40)  # past forSeconds: had the breach been judged, the pod would be Degraded by now
        assert _entry(fts, busy)["health"] == "Healthy" and _uid(fts, busy) == busy_uid


def test_admission_refuses_thresholds_that_are_not_quantities(kube: Kube, namespace: str) -> None:
    fts = Fts(kube, namespace)
    with pytest.raises(ApiError, match=r"health\.metrics\.cpu\.above"):
        fts.create(manifest(health={"metrics": {"cpu": {"above": "lots"}}}))
