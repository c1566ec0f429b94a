"""The operator's view of the cluster, fed by kopf's watch events: no reconcile reads from the API."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ftso import names

Key = tuple[str, str]  # (namespace, name) of a FaultTolerantService
Body = dict[str, Any]


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


_METADATA_KEPT = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "labels",
    "annotations",
    "ownerReferences",
    "deletionTimestamp",
    "creationTimestamp",
)


def _slim_metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    metadata = _meta(body)
    slim = {k: metadata[k] for k in _METADATA_KEPT if k in metadata}
    if "annotations" in slim:
        slim["annotations"] = {
            k: v
            for k, v in slim["annotations"].items()
            if k != "kubectl.kubernetes.io/last-applied-configuration"
        }
    return slim


def slim(body: Mapping[str, Any]) -> Body:
    """What the operator reads of an object, without managedFields and the rest: thousands of pods stay small."""
    kind = body.get("kind")
    result: Body = {"metadata": _slim_metadata(body)}
    if kind == "Pod" or ("spec" in body and "containers" in (body.get("spec") or {})):
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        result["spec"] = {"nodeName": spec.get("nodeName")} if spec.get("nodeName") else {}
        result["status"] = {
            k: status[k] for k in ("phase", "conditions", "podIP", "startTime") if k in status
        }
        result["status"]["containerStatuses"] = [
            {"name": c.get("name"), "state": c.get("state")} for c in status.get("containerStatuses") or []
        ]
        return result
    for field in ("spec", "status", "endpoints"):
        if field in body:
            result[field] = body[field]
    if "kind" in body:
        result["kind"] = kind
    return result


def owner_key(body: Mapping[str, Any]) -> Key | None:
    """The FaultTolerantService that owns an object, by its ftso.dev/service label."""
    metadata = _meta(body)
    owner = (metadata.get("labels") or {}).get(names.LABEL_SERVICE)
    if not owner or not metadata.get("namespace"):
        return None
    return (metadata["namespace"], owner)


def _newer(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Our own write responses and watch events race; keep whichever the API server produced last."""
    if old is None:
        return True
    try:
        return int(_meta(new).get("resourceVersion") or 0) >= int(_meta(old).get("resourceVersion") or 0)
    except ValueError:
        return True


class OwnedIndex:
    """Objects a resource owns, of one kind, by owner and name; newest resourceVersion wins."""

    def __init__(self) -> None:
        self._by_owner: dict[Key, dict[str, Body]] = defaultdict(dict)

    def get(self, key: Key) -> dict[str, Body]:
        return self._by_owner.get(key, {})

    def put(self, body: Body) -> Key | None:
        body = slim(body)
        key = owner_key(body)
        if key is not None and _newer(self._by_owner[key].get(_meta(body)["name"]), body):
            self._by_owner[key][_meta(body)["name"]] = body
        return key

    def drop(self, body: Mapping[str, Any]) -> Key | None:
        key = owner_key(body)
        if key is not None and key in self._by_owner:
            self._by_owner[key].pop(_meta(body)["name"], None)
            if not self._by_owner[key]:
                del self._by_owner[key]
        return key


class Store:
    def __init__(self) -> None:
        self.resources: dict[Key, Body] = {}
        self.pods: dict[Key, dict[str, Body]] = defaultdict(dict)
        self.services = OwnedIndex()
        self.pdbs = OwnedIndex()
        self.endpoint_slices = OwnedIndex()
        self.jobs = OwnedIndex()
        self.nodes: dict[str, Body] = {}
        self.leases: dict[str, Body] = {}
        self.lease_renewed_at: dict[str, datetime] = {}
        self._pods_by_node: dict[str, set[tuple[Key, str]]] = defaultdict(set)

    # Resources

    def put_resource(self, body: Body) -> Key:
        body = slim(body)
        key = (_meta(body)["namespace"], _meta(body)["name"])
        if _newer(self.resources.get(key), body):
            self.resources[key] = body
        return key

    def drop_resource(self, key: Key) -> None:
        self.resources.pop(key, None)

    # Owned objects

    def put_pod(self, body: Body) -> Key | None:
        body = slim(body)
        key = owner_key(body)
        if key is None:
            return None
        name = _meta(body)["name"]
        old = self.pods[key].get(name)
        if not _newer(old, body):
            return key
        if old is not None:
            self._pods_by_node[(old.get("spec") or {}).get("nodeName") or ""].discard((key, name))
        self.pods[key][name] = body
        self._pods_by_node[(body.get("spec") or {}).get("nodeName") or ""].add((key, name))
        return key

    def drop_pod(self, body: Mapping[str, Any]) -> Key | None:
        key = owner_key(body)
        if key is None:
            return None
        name = _meta(body)["name"]
        old = self.pods[key].get(name)
        # A delete event for an older incarnation must not drop a pod recreated under the same name.
        if old is not None and _meta(old).get("uid") == _meta(body).get("uid"):
            del self.pods[key][name]
            self._pods_by_node[(old.get("spec") or {}).get("nodeName") or ""].discard((key, name))
        if not self.pods[key]:
            del self.pods[key]
        return key

    def ready_addresses(self, key: Key, service: str) -> frozenset[str]:
        """Ready endpoint addresses of one of the resource's Services, from its EndpointSlices."""
        addresses: set[str] = set()
        for eps in self.endpoint_slices.get(key).values():
            if (_meta(eps).get("labels") or {}).get("kubernetes.io/service-name") != service:
                continue
            for endpoint in eps.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready"):
                    addresses.update(endpoint.get("addresses") or [])
        return frozenset(addresses)

    # Nodes and their heartbeats

    def put_node(self, body: Body) -> set[Key]:
        self.nodes[_meta(body)["name"]] = slim(body)
        return self.keys_on_node(_meta(body)["name"])

    def drop_node(self, name: str) -> set[Key]:
        self.nodes.pop(name, None)
        return self.keys_on_node(name)

    def put_lease(self, body: Body, now: datetime) -> None:
        """Remember when we saw each node's Lease renewed, by our own clock: a kubelet's clock may be off."""
        name = _meta(body)["name"]
        renew_time = (body.get("spec") or {}).get("renewTime")
        old = self.leases.get(name)
        if old is None or (old.get("spec") or {}).get("renewTime") != renew_time:
            self.lease_renewed_at[name] = now
        self.leases[name] = body

    def keys_on_node(self, node: str) -> set[Key]:
        return {key for key, _ in self._pods_by_node.get(node, set())}
