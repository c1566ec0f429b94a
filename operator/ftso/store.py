"""The operator's view of the cluster, fed by kopf's watch events: no reconcile reads from the API."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ftso import kinds, names

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


def _rv(body: Mapping[str, Any]) -> int:
    try:
        return int(_meta(body).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass(frozen=True)
class Listing:
    """One authoritative LIST of a kind in one namespace (None: every namespace)."""

    namespace: str | None
    items: list[Body]
    resource_version: int

    def in_scope(self, namespace: str) -> bool:
        return self.namespace is None or namespace == self.namespace

    def regressed(self, seen: dict[str | None, int]) -> bool:
        """Lists' versions only grow; one older than the last list says etcd was restored. Remembers it."""
        last = seen.get(self.namespace, 0)
        seen[self.namespace] = self.resource_version
        return self.resource_version < last

    def vanished(self, stored: Mapping[str, Mapping[str, Any]], *, reset: bool) -> list[str]:
        """Stored names the list does not hold and that no watch event made after the list explains."""
        listed = {_meta(b).get("name") for b in self.items}
        return [
            n for n, b in stored.items() if n not in listed and (reset or _rv(b) <= self.resource_version)
        ]


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
        self._listed: dict[str | None, int] = {}  # namespace -> resourceVersion of the last LIST

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

    def relist(self, listing: Listing) -> bool:
        """Make the index agree with an authoritative LIST; True when it had to reset (versions went back)."""
        scoped = {k: v for k, v in self._by_owner.items() if listing.in_scope(k[0])}
        reset = listing.regressed(self._listed)
        for key, objs in scoped.items():
            for name in listing.vanished(objs, reset=reset):
                del objs[name]
            if not objs:
                del self._by_owner[key]
        for item in listing.items:
            owner = owner_key(item)
            if reset and owner is not None and owner in self._by_owner:
                self._by_owner[owner].pop(str(_meta(item).get("name")), None)  # older versions lose no more
            self.put(item)
        return reset


class Store:
    def __init__(self) -> None:
        self.resources: dict[Key, Body] = {}
        self.pods: dict[Key, dict[str, Body]] = defaultdict(dict)  # pods are also indexed by node
        # Every pod name this view ever held, per resource: a primary named in status but never seen is news
        # that has not reached the pod watch yet, not a pod that is gone.
        self.pod_names_seen: dict[Key, set[str]] = defaultdict(set)
        self._indexes = {k.kind: OwnedIndex() for k in kinds.OWNED if k is not kinds.POD}
        self.services = self._indexes[kinds.SERVICE.kind]
        self.pdbs = self._indexes[kinds.PDB.kind]
        self.endpoint_slices = self._indexes[kinds.ENDPOINT_SLICE.kind]
        self.jobs = self._indexes[kinds.JOB.kind]
        self.nodes: dict[str, Body] = {}
        self.leases: dict[str, Body] = {}
        self.lease_renewed_at: dict[str, datetime] = {}
        self.last_lease_event_at: datetime | None = None  # any node's: silence says the watch is in doubt
        self._pods_by_node: dict[str, set[tuple[Key, str]]] = defaultdict(set)
        self._pods_listed: dict[str | None, int] = {}
        self._resources_listed: dict[str | None, int] = {}

    # Resources

    def put_resource(self, body: Body) -> Key:
        body = slim(body)
        key = (_meta(body)["namespace"], _meta(body)["name"])
        if _newer(self.resources.get(key), body):
            self.resources[key] = body
        return key

    def drop_resource(self, key: Key) -> None:
        self.resources.pop(key, None)
        self.pod_names_seen.pop(key, None)

    def relist_resources(self, listing: Listing) -> bool:
        reset = listing.regressed(self._resources_listed)
        by_namespace: dict[str, dict[str, Body]] = defaultdict(dict)
        for (namespace, name), body in self.resources.items():
            if listing.in_scope(namespace):
                by_namespace[namespace][name] = body
        for namespace, bodies in by_namespace.items():
            for name in listing.vanished(bodies, reset=reset):
                del self.resources[(namespace, name)]
        for item in listing.items:
            if reset:
                self.resources.pop((_meta(item)["namespace"], _meta(item)["name"]), None)
            self.put_resource(item)
        return reset

    # Owned objects

    def put_owned(self, kind: str, body: Body) -> Key | None:
        """Any owned kind (kinds.OWNED); returns the owner's key."""
        return self.put_pod(body) if kind == kinds.POD.kind else self._indexes[kind].put(body)

    def drop_owned(self, kind: str, body: Body) -> Key | None:
        return self.drop_pod(body) if kind == kinds.POD.kind else self._indexes[kind].drop(body)

    def relist_owned(self, kind: str, listing: Listing) -> bool:
        return self.relist_pods(listing) if kind == kinds.POD.kind else self._indexes[kind].relist(listing)

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
        self.pod_names_seen[key].add(name)
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

    def relist_pods(self, listing: Listing) -> bool:
        scoped = {k: v for k, v in self.pods.items() if listing.in_scope(k[0])}
        reset = listing.regressed(self._pods_listed)
        for pods in scoped.values():
            for name in listing.vanished(pods, reset=reset):
                self.drop_pod(pods[name])
        for item in listing.items:
            owner = owner_key(item)
            old = self.pods.get(owner, {}).get(_meta(item)["name"]) if owner is not None else None
            if reset and old is not None:
                self.drop_pod(old)
            self.put_pod(item)
        return reset

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

    def relist_nodes(self, items: list[Body]) -> None:
        listed = {_meta(n)["name"] for n in items}
        for name in [n for n in self.nodes if n not in listed]:
            self.drop_node(name)
        for item in items:
            self.put_node(item)

    def put_lease(self, body: Body, now: datetime) -> None:
        """Remember when we saw each node's Lease renewed, by our own clock: a kubelet's clock may be off."""
        name = _meta(body)["name"]
        renew_time = (body.get("spec") or {}).get("renewTime")
        old = self.leases.get(name)
        if old is None or (old.get("spec") or {}).get("renewTime") != renew_time:
            self.lease_renewed_at[name] = now
        self.leases[name] = body
        self.last_lease_event_at = now

    def heartbeat_doubt(self, now: datetime, silence_seconds: float) -> str:
        """Nodes renew their Lease every few seconds; when no renewal of any node arrived for a while, the
        silence is our watch's, not the nodes': their heartbeats must not be judged."""
        if self.last_lease_event_at is None:
            return ""
        silent = (now - self.last_lease_event_at).total_seconds()
        if silent <= silence_seconds:
            return ""
        return (
            f"no node heartbeat seen for {silent:.0f}s: the operator's heartbeat watch is in doubt, not the "
            "nodes; node loss is held until heartbeats arrive"
        )

    def keys_on_node(self, node: str) -> set[Key]:
        return {key for key, _ in self._pods_by_node.get(node, set())}
