"""Which changes may leave a service without a serving primary: those go to the front of the work queue.
Creations, resyncs, replicas and owned objects other than pods are routine. Node changes (lost, back) are
urgent for every resource with a pod on the node; the caller knows which those are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftso import names


def pod_change_is_urgent(resource: Mapping[str, Any] | None, pod: Mapping[str, Any]) -> bool:
    """Any change to the primary's pod (by label or by the status) or to one being made primary."""
    meta = pod.get("metadata") or {}
    if (meta.get("labels") or {}).get(names.LABEL_ROLE) == names.ROLE_PRIMARY:
        return True
    status = (resource or {}).get("status") or {}
    return bool(meta.get("name")) and meta.get("name") == status.get("primary")


def resource_change_is_urgent(resource: Mapping[str, Any]) -> bool:
    """A switchover asked for and not answered yet, or a service that had a primary and has none: a
    failover under way."""
    annotations = (resource.get("metadata") or {}).get("annotations") or {}
    status = resource.get("status") or {}
    request = annotations.get(names.ANNOTATION_SWITCHOVER)
    if request is not None and request != (status.get("switchover") or {}).get("request"):
        return True
    return bool(status.get("term")) and not status.get("primary")
