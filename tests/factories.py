"""Raw API objects for unit tests, shaped as the API server returns them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from ftso import names
from ftso.api.spec import parse_spec
from ftso.builders import Owner, build_pod
from ftso.checkpoints import JobView
from ftso.model import format_time
from ftso.reconcile import FtsView, Observed

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
UID = "uid-demo"


def raw_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": 3,
        "template": {
            "metadata": {"labels": {"app": "demo"}},
            "spec": {
                "containers": [
                    {"name": "app", "image": "demo:1", "ports": [{"name": "http", "containerPort": 8080}]}
                ]
            },
        },
    }
    spec.update(overrides)
    return spec


def node(name: str, *, ready: bool = True, zone: str = "zone-a") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def pod(
    ordinal: int,
    *,
    spec: dict[str, Any] | None = None,
    name: str = "demo",
    node_name: str = "node-0",
    phase: str = "Running",
    ready: bool = True,
    role: str = names.ROLE_REPLICA,
    serving: bool = True,
    term: int = 1,
    deleting: bool = False,
    terminated: bool = False,
    ready_changed: datetime | None = None,
    started: datetime | None = None,
    template_hash: str | None = None,
) -> dict[str, Any]:
    body = build_pod(parse_spec(spec or raw_spec()), Owner(name, "ns", UID), ordinal, role=role, term=term)
    body["metadata"]["uid"] = f"pod-uid-{ordinal}"
    body["metadata"]["labels"][names.LABEL_SERVING] = "true" if serving else "false"
    body["metadata"]["creationTimestamp"] = format_time(NOW - timedelta(minutes=10))
    if template_hash is not None:
        body["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_HASH] = template_hash
    if deleting:
        body["metadata"]["deletionTimestamp"] = format_time(NOW)
    body["spec"]["nodeName"] = node_name
    started = started or NOW - timedelta(minutes=9)
    ready_changed = ready_changed or NOW - timedelta(minutes=8)
    status: dict[str, Any] = {
        "phase": phase,
        "startTime": format_time(started),
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "lastTransitionTime": format_time(ready_changed),
            }
        ],
        "containerStatuses": [{"name": "app", "state": {"running": {}}}],
    }
    if terminated:
        status["containerStatuses"] = [
            {"name": "app", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
        ]
    body["status"] = status
    return body


def observed(
    pods: list[dict[str, Any]],
    *,
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    nodes: list[dict[str, Any]] | None = None,
    now: datetime = NOW,
    services: dict[str, Any] | None = None,
    pdb: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    created_at: datetime | None = None,
    primary_endpoints: frozenset[str] = frozenset(),
    jobs: tuple[JobView, ...] = (),
    primary_slices: dict[str, Any] | None = None,
) -> Observed:
    from ftso.model import node_view, pod_view

    node_bodies = (
        nodes
        if nodes is not None
        else [node("node-0"), node("node-1", zone="zone-b"), node("node-2", zone="zone-c")]
    )
    return Observed(
        fts=FtsView("demo", "ns", UID, 1, spec or raw_spec(), status or {}, annotations or {}, created_at),
        pods=tuple(pod_view(p, "demo") for p in pods),
        nodes={n["metadata"]["name"]: node_view(n) for n in node_bodies},
        services=services or {},
        pdb=pdb,
        now=now,
        primary_endpoints=primary_endpoints,
        jobs=jobs,
        primary_slices=primary_slices or {},
    )


def offline_runtime(tmp_path: Any, resync_seconds: float | None = None) -> Any:
    """A handlers.Runtime whose kubeconfig points at a closed loopback port: for tests of its bookkeeping."""
    from ftso import handlers
    from ftso.settings import OperatorSettings

    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    settings = OperatorSettings(namespaces=("ns",), kubeconfig=str(config))
    if resync_seconds is not None:
        settings = dataclasses.replace(settings, resync_seconds=resync_seconds)
    return handlers.Runtime(settings)
