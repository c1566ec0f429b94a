"""Installing ftso like real software: the Helm chart, the rendered manifests, least-privilege RBAC (the
operator authenticated as the chart's ServiceAccount), leader election, metrics, and server-side apply."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.faults import force_delete_pod
from e2e.fts import Fts, manifest
from e2e.kube import ROOT, Kube, pod_ready, tool_path, wait_for
from e2e.operator_process import OperatorProcess
from ftso.credentials import load_credentials

CHART = ROOT / "charts" / "ftso"
# The chart's operator image is in no registry here: its pods stay on kwok's fake nodes (e2e/fts.py).
ON_FAKE_NODES = (
    "--set",
    "nodeSelector.type=kwok",
    "--set",
    "tolerations[0].key=kwok.x-k8s.io/node,tolerations[0].operator=Exists,tolerations[0].effect=NoSchedule",
)


def helm(kube: Kube, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [tool_path("helm"), "--kubeconfig", kube.kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
    return result


def test_rendered_manifests_match_the_chart() -> None:
    rendered = subprocess.run(
        [str(ROOT / "hack" / "render-manifests.sh")], capture_output=True, text=True, check=True
    ).stdout
    assert (ROOT / "manifests" / "install.yaml").read_text() == rendered, (
        "manifests/ drifted: run `make manifests`"
    )


def test_helm_lint_and_template(kube: Kube) -> None:
    lint = helm(kube, "lint", str(CHART), "--strict", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for values in (
        [],
        ["--set", "watchNamespaces={team-a,team-b}"],
        ["--set", "metrics.serviceMonitor.enabled=true"],
        ["--set", "metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true"],
        ["--set", "metrics.enabled=false"],
    ):
        helm(kube, "template", "ftso", str(CHART), *values)
    refused = helm(kube, "template", "ftso", str(CHART), "--set", "replicaCount=-1", check=False)
    assert refused.returncode != 0 and "replicaCount" in refused.stderr, (
        "values.schema.json guards the values"
    )


def _rendered_objects(kube: Kube, *values: str) -> list[dict[str, Any]]:
    text = helm(kube, "template", "ftso", str(CHART), "-n", "ftso-system", *values).stdout
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize(
    "values", [[], ["--set", "watchNamespaces={team-a}"]], ids=["cluster-wide", "namespaced"]
)
def test_rbac_is_least_privilege(kube: Kube, values: list[str]) -> None:
    rules = [
        rule
        for obj in _rendered_objects(kube, *values)
        if obj["kind"] in ("Role", "ClusterRole")
        for rule in obj["rules"]
    ]
    assert rules
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], (
            rule
        )
        assert "secrets" not in rule["resources"], rule
    deployment = next(o for o in _rendered_objects(kube, *values) if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _template(*values: str) -> list[dict[str, Any]]:
    """The chart rendered by helm alone: no cluster involved."""
    result = subprocess.run(
        [tool_path("helm"), "template", "ftso", str(CHART), "-n", "ftso-system", *values],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_monitoring_objects_and_probes() -> None:
    """ServiceMonitor, PrometheusRule and dashboard as the chart renders them; the probes' endpoints."""
    rules_file = yaml.safe_load((CHART / "files" / "rules.yaml").read_text())
    objects = _template(
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true",
        "--set",
        "metrics.prometheusRule.runbookBaseURL=https://runbooks.example/ftso.md",
    )
    by_kind = {
        o["kind"]: o for o in objects if o["kind"] in ("ServiceMonitor", "PrometheusRule", "Deployment")
    }
    endpoint = by_kind["ServiceMonitor"]["spec"]["endpoints"][0]
    assert endpoint["honorLabels"] is True and by_kind["ServiceMonitor"]["spec"]["jobLabel"]
    groups = by_kind["PrometheusRule"]["spec"]["groups"]
    assert [r["alert"] for g in groups for r in g["rules"]] == [
        r["alert"] for g in rules_file["groups"] for r in g["rules"]
    ]
    assert all(
        r["annotations"]["runbook_url"].startswith("https://runbooks.example/ftso.md#")
        for g in groups
        for r in g["rules"]
    )
    dashboard = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("dashboard")
    )
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["ftso.json"])["uid"] == "ftso-operator"
    container = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    defaults = [o["kind"] for o in _template()]
    assert "PrometheusRule" not in defaults and "ServiceMonitor" not in defaults, (
        "monitoring is off by default"
    )


def _rules_by_resource(role: dict[str, Any]) -> dict[str, set[str]]:
    return {
        resource: set(rule["verbs"])
        for rule in role["rules"]
        if rule["apiGroups"] == ["ftso.dev"]
        for resource in rule["resources"]
    }


def test_tenant_roles_aggregate_into_view_edit_and_admin() -> None:
    read = {"get", "list", "watch"}
    write = read | {"create", "update", "patch", "delete", "deletecollection"}
    expected = {
        "view": {
            "faulttolerantservices": read,
            "faulttolerantservices/status": read,
            "faulttolerantservices/scale": read,
        },
        "edit": {
            "faulttolerantservices": write,
            "faulttolerantservices/status": read,
            "faulttolerantservices/scale": {"get", "update", "patch"},
        },
    }
    expected["admin"] = expected["edit"]
    aggregated = {
        label.rpartition("-")[2]: obj
        for obj in _template()
        if obj["kind"] == "ClusterRole"
        for label, value in obj["metadata"]["labels"].items()
        if label.startswith("rbac.authorization.k8s.io/aggregate-to-") and value == "true"
    }
    assert {role: obj["metadata"]["name"] for role, obj in aggregated.items()} == {
        "view": "ftso-view",
        "edit": "ftso-edit",
        "admin": "ftso-admin",
    }
    assert {role: _rules_by_resource(obj) for role, obj in aggregated.items()} == expected
    assert not [
        o
        for o in _template("--set", "rbac.aggregateClusterRoles=false")
        if o["metadata"]["name"] in ("ftso-view", "ftso-edit", "ftso-admin")
    ]


@pytest.mark.parametrize(
    "values", [[], ["--set", "watchNamespaces={team-a}"]], ids=["cluster-wide", "namespaced"]
)
def test_the_operator_may_update_finalizers_for_owner_references_that_block_deletion(
    values: list[str],
) -> None:
    operator_roles = [
        o
        for o in _template(*values)
        if o["kind"] in ("Role", "ClusterRole") and o["metadata"]["name"] == "ftso"
    ]
    assert any(
        _rules_by_resource(role).get("faulttolerantservices/finalizers") == {"update"}
        for role in operator_roles
    )


def test_the_security_contexts_are_overridable_and_default_to_restricted() -> None:
    def pod_spec(*values: str) -> dict[str, Any]:
        deployment = next(o for o in _template(*values) if o["kind"] == "Deployment")
        spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
        return spec

    default = pod_spec()
    assert default["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    changed = pod_spec(
        "--set",
        "podSecurityContext.runAsUser=1000680000,podSecurityContext.runAsGroup=null,podSecurityContext.fsGroup=5",
        "--set",
        "securityContext.readOnlyRootFilesystem=false",
    )
    assert changed["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000680000,
        "fsGroup": 5,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert changed["containers"][0]["securityContext"] == {
        **default["containers"][0]["securityContext"],
        "readOnlyRootFilesystem": False,
    }


def test_manifests_are_accepted_by_the_api_server(kube: Kube) -> None:
    # A server-side dry run admits every object (schema, RBAC rules, Pod Security) without installing a
    # second operator beside the tests' own; it needs the namespace to exist.
    wait_for(
        lambda: (
            (ns := kube.get("/api/v1/namespaces/ftso-system")) is None or ns["status"]["phase"] == "Active"
        ),
        timeout=90,
        what="no ftso-system namespace left terminating",
    )
    if kube.get("/api/v1/namespaces/ftso-system") is None:
        kube.create("/api/v1/namespaces", {"metadata": {"name": "ftso-system"}})
    try:
        kube.kubectl(
            "apply", "--server-side", "--dry-run=server", "-f", str(ROOT / "manifests" / "install.yaml")
        )
        kube.kubectl("apply", "--server-side", "--dry-run=server", "-k", str(ROOT / "manifests"))
    finally:
        kube.delete("/api/v1/namespaces/ftso-system")


@pytest.fixture
def release(kube: Kube, namespace: str) -> Iterator[tuple[str, str]]:
    name = f"ftso-{uuid.uuid4().hex[:4]}"
    yield name, namespace
    helm(kube, "uninstall", name, "-n", namespace, "--wait", check=False)


def _release_objects(kube: Kube, name: str) -> list[str]:
    found = []
    for path in (
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    ):
        found += [o["metadata"]["name"] for o in kube.items(path, f"app.kubernetes.io/instance={name}")]
    return found


def test_helm_install_upgrade_uninstall(kube: Kube, release: tuple[str, str]) -> None:
    name, namespace = release
    helm(kube, "install", name, str(CHART), "-n", namespace, *ON_FAKE_NODES)
    deployment = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    assert kube.get(f"/api/v1/namespaces/{namespace}/services/{name}-metrics") is not None
    assert _release_objects(kube, name)
    helm(
        kube,
        "upgrade",
        name,
        str(CHART),
        "-n",
        namespace,
        "--set",
        "replicaCount=3",
        "--set",
        f"watchNamespaces={{{namespace}}}",
        *ON_FAKE_NODES,
    )
    deployment = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    assert deployment is not None and deployment["spec"]["replicas"] == 3
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={namespace}" in args
    assert kube.get(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}") is not None
    helm(kube, "uninstall", name, "-n", namespace, "--wait")
    assert _release_objects(kube, name) == []
    assert kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}") is None
    assert (
        kube.items(
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
            f"app.kubernetes.io/instance={name}",
        )
        == []
    )


def _service_account_kubeconfig(kube: Kube, namespace: str, account: str, path: Path) -> str:
    """A kubeconfig that authenticates as the ServiceAccount, with a token the API server issued for it."""
    token = kube.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )["status"]["token"]
    credentials = load_credentials(kube.kubeconfig)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": credentials.server, "certificate-authority": credentials.ca_path},
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account}}],
        "current-context": account,
    }
    path.write_text(json.dumps(config))
    return str(path)


def _scrape(port: int) -> str:
    """The operator's metrics, or "" while its endpoint is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def _sample(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_operator_as_the_charts_service_account(kube: Kube, release: tuple[str, str], tmp_path: Path) -> None:
    """The operator, authenticated as the chart's ServiceAccount with the chart's namespaced RBAC, runs the
    core scenarios and a failover; any missing permission shows as a 403 and fails the test. Its metrics
    count the failover."""
    name, namespace = release
    helm(
        kube,
        "install",
        name,
        str(CHART),
        "-n",
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--set",
        "replicaCount=0",
    )
    config = _service_account_kubeconfig(kube, namespace, name, tmp_path / "sa.kubeconfig")
    log = tmp_path / "operator.log"
    operator = OperatorProcess(
        config,
        log,
        namespaces=(namespace,),
        extra=(
            "--metrics-port",
            "18093",
            "--leader-election-namespace",
            namespace,
            "--leader-election-name",
            name,
        ),
    ).start()
    try:
        fts = Fts(kube, namespace)
        fts.create(manifest(failover={"delaySeconds": 1, "minIntervalSeconds": 0}))
        status = fts.wait_ready()
        victim = next(
            p["metadata"]["name"] for p in fts.live_pods() if p["metadata"]["name"] != status["primary"]
        )
        kube.delete(f"/api/v1/namespaces/{namespace}/pods/{victim}")
        wait_for(
            lambda: (p := fts.pod(victim)) and pod_ready(p) and not p["metadata"].get("deletionTimestamp"),
            what="replica replaced",
        )
        force_delete_pod(kube, namespace, status["primary"])
        wait_for(
            lambda: fts.status().get("term") == status["term"] + 1 and fts.primary_routed_exactly(),
            what="failover done",
        )
        fts.wait_ready()
        metrics = wait_for(
            lambda: (t := _scrape(18093)) and _sample(t, "ftso_failover_duration_seconds_count") >= 1 and t,
            what="the failover in the metrics",
        )
        assert _sample(metrics, 'ftso_promotions_total{reason="Failover"}') == 1
        assert _sample(metrics, "ftso_leader") == 1
        assert _sample(metrics, "ftso_reconciles_total") > 0
        assert _sample(metrics, "ftso_api_requests_total") > 0
        # The names dashboards made for controller-runtime operators query, and the process's own.
        for standard in (
            'controller_runtime_reconcile_total{controller="faulttolerantservice",result="success"}',
            'workqueue_adds_total{name="faulttolerantservice"}',
            'workqueue_work_duration_seconds_count{name="faulttolerantservice"}',
            'rest_client_requests_total{code="200",method="GET"}',
            "process_resident_memory_bytes",
        ):
            assert _sample(metrics, standard) > 0, standard
    finally:
        operator.stop()
    text = log.read_text()
    assert "403" not in text and "Forbidden" not in text, "\n".join(
        line for line in text.splitlines() if "403" in line or "Forbidden" in line
    )


def test_two_replicas_one_leader_and_takeover(kube: Kube, namespace: str, tmp_path: Path) -> None:
    extra = ("--leader-election-namespace", namespace, "--lease-seconds", "4")
    first = OperatorProcess(
        kube.kubeconfig, tmp_path / "first.log", (namespace,), (*extra, "--metrics-port", "18094")
    ).start()
    wait_for(
        lambda: kube.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/ftso-operator"),
        what="the first replica to lead",
    )
    second = OperatorProcess(
        kube.kubeconfig, tmp_path / "second.log", (namespace,), (*extra, "--metrics-port", "18095")
    ).start()
    try:
        fts = Fts(kube, namespace)
        fts.create(manifest(failover={"delaySeconds": 1, "minIntervalSeconds": 0}))
        status = fts.wait_ready()
        wait_for(
            lambda: (
                "ftso_leader" in _scrape(18095)
                and _sample(_scrape(18095), "ftso_leader") == 0
                and _sample(_scrape(18094), "ftso_leader") == 1
            ),
            what="exactly one leader",
        )
        assert _sample(_scrape(18095), "ftso_reconciles_total") == 0, "the standby does not act"
        first.kill()
        killed = time.monotonic()
        force_delete_pod(kube, namespace, status["primary"])
        wait_for(
            lambda: fts.status().get("term") == status["term"] + 1 and fts.primary_routed_exactly(),
            timeout=30,
            what="the standby to take over and fail over",
        )
        takeover = time.monotonic() - killed
        print(f"leader takeover and failover completed {takeover:.2f}s after the leader was killed")
        assert takeover < 4 + 3
        assert _sample(_scrape(18095), "ftso_leader") == 1
    finally:
        first.stop()
        second.stop()


def test_server_side_apply_twice_changes_nothing(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = json.dumps(manifest())
    kube.kubectl("apply", "--server-side", "--field-manager=gitops", "-n", namespace, "-f", "-", stdin=body)
    fts = Fts(kube, namespace)
    fts.wait_ready()
    before = fts.get()
    assert before is not None
    again = kube.kubectl(
        "apply", "--server-side", "--field-manager=gitops", "-n", namespace, "-f", "-", stdin=body
    )
    assert "conflict" not in again.stderr.lower()
    after = fts.get()
    assert after is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    managers = {m["manager"]: m for m in after["metadata"]["managedFields"]}
    assert "f:spec" in json.dumps(managers["gitops"]["fieldsV1"])
    for manager, entry in managers.items():
        if manager != "gitops":
            assert "f:spec" not in json.dumps(entry.get("fieldsV1", {})), f"{manager} wrote spec fields"


def test_examples_are_accepted(kube: Kube, namespace: str) -> None:
    for example in ("basic.yaml", "counter/counter.yaml"):
        kube.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(ROOT / "examples" / example))


def test_a_tenant_bound_to_edit_lists_everything_and_creates_a_service(
    kube: Kube, release: tuple[str, str]
) -> None:
    """The chart's ClusterRoles aggregate into `edit`: a user bound to nothing else works with `kubectl`."""
    name, namespace = release
    helm(kube, "install", name, str(CHART), "-n", namespace, *ON_FAKE_NODES)
    tenant = f"tenant-{uuid.uuid4().hex[:6]}"
    kube.kubectl(
        "create", "rolebinding", "tenant-edit", "--clusterrole=edit", f"--user={tenant}", "-n", namespace
    )
    as_tenant = ("--as", tenant, "-n", namespace)
    wait_for(
        lambda: (
            kube.kubectl(
                "auth", "can-i", "create", "faulttolerantservices.ftso.dev", *as_tenant, check=False
            ).stdout.strip()
            == "yes"
        ),
        timeout=30,
        what="the aggregated edit role to allow creating FaultTolerantServices",
    )
    everything = kube.kubectl("get", "all", *as_tenant, check=False)
    assert everything.returncode == 0 and "Forbidden" not in everything.stderr, everything.stderr
    kube.kubectl("apply", "-f", "-", *as_tenant, stdin=json.dumps(manifest("tenant-svc")))
    listed = kube.kubectl("get", "fts", "-o", "name", *as_tenant)
    assert "tenant-svc" in listed.stdout
    refused = kube.kubectl(
        "patch",
        "fts",
        "tenant-svc",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"term":9}}',
        *as_tenant,
        check=False,
    )
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), (
        "status is the operator's to write"
    )
