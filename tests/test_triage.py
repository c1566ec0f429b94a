"""Which changes jump the work queue: those that may leave a service without a serving primary."""

from __future__ import annotations

from typing import Any

from ftso import names
from ftso.triage import pod_change_is_urgent, resource_change_is_urgent


def _pod(name: str, role: str = "replica") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {names.LABEL_ROLE: role}}}


def _resource(
    status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {"metadata": {"name": "svc", "annotations": annotations or {}}, "status": status or {}}


SERVING = {"primary": "svc-0", "term": 3}


def test_the_primarys_pod_is_urgent_by_label_or_by_status() -> None:
    assert pod_change_is_urgent(_resource(SERVING), _pod("svc-0"))  # labels not yet caught up
    assert pod_change_is_urgent(_resource(SERVING), _pod("svc-1", role=names.ROLE_PRIMARY))
    assert pod_change_is_urgent(None, _pod("svc-1", role=names.ROLE_PRIMARY))  # resource not seen yet


def test_replicas_are_routine() -> None:
    assert not pod_change_is_urgent(_resource(SERVING), _pod("svc-2"))
    assert not pod_change_is_urgent(_resource(), _pod("svc-0"))  # a new service: creation is routine
    assert not pod_change_is_urgent(_resource(SERVING), {"metadata": {}})


def test_a_service_that_lost_its_primary_is_urgent_a_new_one_is_not() -> None:
    assert resource_change_is_urgent(_resource({"primary": "", "term": 3}))
    assert not resource_change_is_urgent(_resource())
    assert not resource_change_is_urgent(_resource({"primary": "", "term": 0}))
    assert not resource_change_is_urgent(_resource(SERVING))


def test_a_switchover_is_urgent_until_answered() -> None:
    asked = {names.ANNOTATION_SWITCHOVER: "svc-1@7"}
    assert resource_change_is_urgent(_resource(SERVING, asked))
    answered = {**SERVING, "switchover": {"request": "svc-1@7", "result": "done"}}
    assert not resource_change_is_urgent(_resource(answered, asked))
