"""Bad input never fails silently: what the API server refuses to create shows in the resource's status,
in one Event and in `ftso status`, and clears by itself once the cause is gone."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tests.test_hostile_values import large_failed_status

from e2e.fts import Fts, manifest
from e2e.kube import Kube, condition, ftso_cli, wait_for
from e2e.operator_process import OperatorProcess
from ftso.client import ApiError
from ftso.reconcile import FtsView, Observed, decide

RESTRICTED = "pod-security.kubernetes.io/enforce"


def _restricted_template(name: str) -> dict[str, Any]:
    """A pod template the restricted Pod Security level admits."""
    body = manifest(name, replicas=3)
    spec = body["spec"]["template"]["spec"]
    spec["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    spec["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    return body


def _failure(fts: Fts) -> dict[str, Any]:
    conditions = fts.status().get("conditions") or []
    return next((c for c in conditions if c["type"] == "ReplicaFailure"), {})


def _failed_creates(fts: Fts) -> list[dict[str, Any]]:
    return [e for e in fts.events() if e["reason"] == "FailedCreate"]


def _quota(kube: Kube, namespace: str, pods: int) -> None:
    path = f"/api/v1/namespaces/{namespace}/resourcequotas"
    body = {"metadata": {"name": "pods"}, "spec": {"hard": {"pods": str(pods)}}}
    if kube.get(f"{path}/pods") is None:
        kube.create(path, body)
    else:
        kube.patch(f"{path}/pods", body)
    wait_for(
        lambda: (
            ((kube.get(f"{path}/pods") or {}).get("status") or {}).get("hard", {}).get("pods") == str(pods)
        ),
        what="the quota counted by the controller manager",
    )


def test_refused_pods_show_the_servers_words_once_and_recover_by_themselves(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    kube.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {RESTRICTED: "restricted"}}})
    _quota(kube, namespace, 1)
    quota, policy = Fts(kube, namespace, "quota"), Fts(kube, namespace, "policy")
    quota.create(_restricted_template("quota"))
    policy.create(manifest("policy", replicas=1))  # no securityContext: restricted refuses it
    for fts, words in ((quota, "exceeded quota"), (policy, "violates PodSecurity")):
        wait_for(
            lambda fts=fts, words=words: words in _failure(fts).get("message", ""),
            what=f"ReplicaFailure on {fts.name} saying {words!r}",
        )
        assert _failure(fts)["status"] == "True" and _failure(fts)["reason"] == "FailedCreate"
        status = ftso_cli(kube, "status", fts.name, "-n", namespace)
        assert "ReplicaFailure=True (FailedCreate)" in status.stdout and words in status.stdout
    assert "exceeded quota" in kube.kubectl("get", "fts", "quota", "-n", namespace).stdout
    time.sleep(8)  # several retries later, still one Event each
    for fts in (quota, policy):
        events = _failed_creates(fts)
        assert len(events) == 1 and events[0]["type"] == "Warning", events
    _quota(kube, namespace, 10)
    quota.wait_ready(timeout=60)
    assert condition(quota.get(), "ReplicaFailure") == "False"
    kube.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {RESTRICTED: "baseline"}}})
    policy.wait_ready(timeout=60)
    assert condition(policy.get(), "ReplicaFailure") == "False"


def test_a_misspelt_template_field_is_refused_not_dropped(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = manifest("typo", replicas=1)
    body["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    fts = Fts(kube, namespace, "typo")
    fts.create(body)
    wait_for(
        lambda: "imagePullPolicyy" in _failure(fts).get("message", ""),
        what="ReplicaFailure naming the unknown field",
    )
    assert not fts.pods(), "no pod was created with the field silently dropped"


HOSTILE = [
    ({"replicas": 1001}, "replicas must be at most 1000"),
    ({"failover": {"delaySeconds": 10**11}}, "failover.delaySeconds must be at most 3600"),
    ({"failover": {"nodeLostAfterSeconds": 10**11}}, "failover.nodeLostAfterSeconds must be at most 3600"),
    ({"health": {"unreadyTimeoutSeconds": 10**11}}, "health.unreadyTimeoutSeconds must be at most 86400"),
    ({"health": {"startupProbe": {"failureThreshold": 10**6}}}, "failureThreshold must be at most 1000"),
    ({"disruption": {"maxUnavailable": 10**6}}, "disruption.maxUnavailable must be a count from 1 to 1000"),
    (
        {"failover": {"hooks": {"port": 8080, "promotePath": "@evil.example:80/x"}}},
        "failover.hooks.promotePath must be a path such as /promote, not a URL",
    ),
    (
        {"checkpoint": {"template": {"name": "c", "image": "c:1"}, "intervalSeconds": 10**11}},
        "checkpoint.intervalSeconds must be at most",
    ),
]


def test_hostile_counts_durations_and_hook_paths_are_refused_at_admission(kube: Kube, namespace: str) -> None:
    for extra, words in HOSTILE:
        fts = Fts(kube, namespace, "hostile")
        with pytest.raises(ApiError) as refused:
            fts.create(manifest("hostile", **extra))
        assert refused.value.status == 422 and words in refused.value.message, (extra, refused.value)


def test_the_status_of_a_thousand_mostly_failed_replicas_is_accepted(kube: Kube, namespace: str) -> None:
    """decide's status for 1,000 failed pods with long reasons, written to the real API server: no 422."""
    fts = Fts(kube, namespace, "big")
    fts.create(manifest("big", replicas=1000))
    status = large_failed_status()
    kube.request(
        "PATCH",
        fts.path + "/status",
        body={"status": status},
        content_type="application/merge-patch+json",
    )
    written = fts.status()
    assert len(written["pods"]) == 1000
    assert condition(fts.get(), "Degraded") == "True"


def _with_container(**fields: Any) -> dict[str, Any]:
    body = manifest("tmpl", replicas=1)
    body["spec"]["template"]["spec"]["containers"][0].update(fields)
    return body


def _with_volumes(volumes: list[dict[str, Any]]) -> dict[str, Any]:
    body = manifest("tmpl", replicas=1)
    body["spec"]["template"]["spec"]["volumes"] = volumes
    return body


TEMPLATE_MISTAKES = [
    (_with_container(name="App_1"), "container names must be a DNS label"),
    (_with_container(ports=[{"name": "http--x", "containerPort": 80}]), "port names must be at most 15"),
    (_with_container(ports=[{"name": "8080", "containerPort": 80}]), "with at least one letter"),
    (
        _with_container(ports=[{"name": "a", "containerPort": 80}, {"name": "a", "containerPort": 81}]),
        "a container's ports must have unique names",
    ),
    (_with_container(imagePullPolicy="Sometimes"), "Unsupported value"),
    (_with_container(livenessProbe={"periodSeconds": 5}), "livenessProbe needs exactly one of exec"),
    (
        _with_container(readinessProbe={"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}),
        "readinessProbe needs exactly one of exec",
    ),
    (
        _with_container(livenessProbe={"tcpSocket": {"port": 80}, "successThreshold": 2}),
        "livenessProbe.successThreshold must be 1",
    ),
    (_with_container(resources={"limits": {"cpu": "lots"}}), "resources.limits values must be quantities"),
    (
        _with_container(resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}),
        "resources.requests must not exceed resources.limits",
    ),
    (
        _with_container(volumeMounts=[{"name": "data", "mountPath": "/data"}]),
        "every volumeMounts[].name must name one of template.spec.volumes",
    ),
    (
        _with_container(
            volumeMounts=[{"name": "ftso-role", "mountPath": "/d"}, {"name": "ftso-role", "mountPath": "/d"}]
        ),
        "volumeMounts must have unique mountPaths",
    ),
    (_with_volumes([{"name": "Data", "emptyDir": {}}]), "volume names must be a DNS label"),
    (
        _with_volumes([{"name": "d", "emptyDir": {}}, {"name": "d", "emptyDir": {}}]),
        "volumes must have unique names",
    ),
]


def test_pod_template_mistakes_are_refused_at_admission_with_pod_validations_words(
    kube: Kube, namespace: str
) -> None:
    for body, words in TEMPLATE_MISTAKES:
        with pytest.raises(ApiError) as refused:
            Fts(kube, namespace, "tmpl").create(body)
        assert refused.value.status == 422 and words in refused.value.message, (words, refused.value)


def test_a_full_valid_template_is_still_accepted(kube: Kube, namespace: str) -> None:
    body = _with_container(
        name="app-1",
        imagePullPolicy="IfNotPresent",
        ports=[{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
        livenessProbe={"httpGet": {"path": "/", "port": "http"}, "successThreshold": 1},
        readinessProbe={"tcpSocket": {"port": 8080}, "successThreshold": 2},
        resources={"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": 1, "memory": "128Mi"}},
        volumeMounts=[{"name": "data", "mountPath": "/data"}, {"name": "ftso-role", "mountPath": "/x"}],
    )
    body["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    Fts(kube, namespace, "tmpl").create(body)


def _mostly(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid three times in four, so that accepted specs are generated too."""
    return st.one_of(valid, valid, valid, hostile)


NAMES = _mostly(st.sampled_from(["app", "app-2"]), st.sampled_from(["App", "a_b", "-a", "x" * 64]))
PORT_NAMES = _mostly(
    st.sampled_from(["http", "h2c", "web-metrics"]), st.sampled_from(["8080", "a--b", "-http", "x" * 16])
)
PORTS = _mostly(st.integers(1, 65535), st.integers(-1, 70000))
CRONS = _mostly(
    st.sampled_from(["*/5 * * * *", "@daily", "0 0 * JAN MON"]),
    st.sampled_from(["0 0 30 2 *", "\u0663 * * * *", "1 2 3"]),
)
SECONDS = _mostly(st.integers(11, 3600), st.integers(-5, 10**12))


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    body = manifest("prop", replicas=draw(_mostly(st.integers(0, 5), st.integers(-2, 1200))))
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["name"] = draw(NAMES)
    container["ports"] = [
        {"name": name, "containerPort": draw(PORTS)} for name in draw(st.sets(PORT_NAMES, max_size=2))
    ]
    spec = body["spec"]
    spec["failover"] = {"delaySeconds": draw(SECONDS), "nodeLostAfterSeconds": draw(SECONDS)}
    spec["health"] = {"unreadyTimeoutSeconds": draw(SECONDS)}
    spec["disruption"] = {
        "maxUnavailable": draw(
            _mostly(st.sampled_from([1, 2, "25%"]), st.sampled_from([0, 5000, "x%", "1000%"]))
        )
    }
    if draw(st.booleans()):
        spec["checkpoint"] = {"template": {"name": "c", "image": "c:1"}, "schedule": draw(CRONS)}
    if draw(st.booleans()):
        spec["failover"]["hooks"] = {
            "port": 8080,
            "promotePath": draw(_mostly(st.just("/p"), st.sampled_from(["@h:1/x", "//h/x", "http://h/x"]))),
        }
    return body


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=specs())
def test_generated_specs_are_refused_readably_or_decided(
    kube: Kube, namespace: str, body: dict[str, Any]
) -> None:
    """Refused at admission with a message naming the field, or accepted (as the server defaults it) and then
    decide() plans without raising and reports either progress or InvalidSpec."""
    path = f"/apis/ftso.dev/v1alpha1/namespaces/{namespace}/faulttolerantservices"
    try:
        accepted = kube.request("POST", path, body=body, params={"dryRun": "All"})
    except ApiError as error:
        event("refused")
        assert error.status == 422, error
        assert "spec." in error.message and "Internal error" not in error.message, error.message
        return
    event("accepted")
    fts = FtsView("prop", namespace, "uid", 1, accepted["spec"], {})
    plan = decide(Observed(fts=fts, pods=(), nodes={}, services={}, pdb=None, now=datetime.now(UTC)))
    invalid = condition({"status": plan.status}, "InvalidSpec") == "True"
    progressing = condition({"status": plan.status}, "Progressing") == "True"
    assert invalid or progressing or accepted["spec"]["replicas"] == 0, plan.status["conditions"]
