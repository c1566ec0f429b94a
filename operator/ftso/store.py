"""The operator's view of the cluster, fed by kopf's watch events: no reconcile reads from the API."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ftso import kinds, names
from ftso.model import PodSeen, pod_seen

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


SHARED_STRING_MAX = 64
# Deleted nodes remembered; Kubernetes' pod garbage collector removes pods bound to a missing node long
# before a cluster deletes this many more.
NODES_DELETED_KEPT = 1024


def _shared(value: Any) -> Any:
    """The same keys and short values (condition types, states, label keys) repeat in every object; each
    parsed event carries its own copies, so one shared copy of each keeps thousands of objects small."""
    if isinstance(value, dict):
        return {(sys.intern(k) if type(k) is str else k): _shared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shared(v) for v in value]
    if type(value) is str and len(value) <= SHARED_STRING_MAX:  # not str subclasses such as enums
        return sys.intern(value)
    return value


def slim(body: Mapping[str, Any]) -> Body:
    """What the operator reads of an object, without managedFields and the rest: thousands of pods stay small."""
    shared: Body = _shared(_slim(body))
    return shared


def _slim(body: Mapping[str, Any]) -> Body:
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
    for part in ("spec", "status", "endpoints", "addressType", "ports"):
        if part in body:
            result[part] = body[part]
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


@dataclass
class Listing:
    """One authoritative LIST of a kind in one namespace (None: every namespace), taken page by page.
    Only the listed names are kept, so that a relist of thousands of objects never holds them all at once."""

    kind: str
    namespace: str | None
    resource_version: int
    reset: bool = False  # the versions went back (etcd restored): take the list as it is
    listed: set[tuple[str, str]] = field(default_factory=set)  # (namespace, name); "" for cluster-scoped

    def in_scope(self, namespace: str) -> bool:
        return self.namespace is None or namespace == self.namespace

    def vanished(self, namespace: str, stored: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Stored names the list does not hold and that no watch event made after the list explains."""
        return [
            n
            for n, b in stored.items()
            if (namespace, n) not in self.listed and (self.reset or _rv(b) <= self.resource_version)
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

    def get(self, key: Key) -> dict[str, Body]:
        return self._by_owner.get(key, {})

    def put(self, body: Body) -> Key | None:
        key = owner_key(body)
        if key is not None and _newer(self._by_owner[key].get(_meta(body)["name"]), body):
            self._by_owner[key][_meta(body)["name"]] = slim(body)
        return key

    def drop(self, body: Mapping[str, Any]) -> Key | None:
        key = owner_key(body)
        if key is not None and key in self._by_owner:
            self._by_owner[key].pop(_meta(body)["name"], None)
            if not self._by_owner[key]:
                del self._by_owner[key]
        return key

    def prune(self, listing: Listing) -> None:
        """Drop what an authoritative LIST no longer holds."""
        for key, objs in [(k, v) for k, v in self._by_owner.items() if listing.in_scope(k[0])]:
            for name in listing.vanished(key[0], objs):
                del objs[name]
            if not objs:
                del self._by_owner[key]

    def __len__(self) -> int:
        return sum(len(objs) for objs in self._by_owner.values())

    def stored(self, body: Mapping[str, Any]) -> Body | None:
        key = owner_key(body)
        return self._by_owner.get(key, {}).get(_meta(body).get("name", "")) if key is not None else None


class Store:
    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        self.resources: dict[Key, Body] = {}
        self.pods: dict[Key, dict[str, Body]] = defaultdict(dict)  # pods are also indexed by node
        # Every pod name this view ever held, per resource: a primary named in status but never seen is news
        # that has not reached the pod watch yet, not a pod that is gone.
        self.pod_names_seen: dict[Key, set[str]] = defaultdict(set)
        # Per pod uid, when we saw its Ready state change and saw it start, by our own clock (as Lease
        # renewals below): a kubelet's clock may be off. One small tuple per pod.
        self.pod_seen: dict[str, PodSeen] = {}
        self._indexes = {k.kind: OwnedIndex() for k in kinds.OWNED if k is not kinds.POD}
        self.services = self._indexes[kinds.SERVICE.kind]
        self.pdbs = self._indexes[kinds.PDB.kind]
        self.endpoint_slices = self._indexes[kinds.ENDPOINT_SLICE.kind]
        self.jobs = self._indexes[kinds.JOB.kind]
        self.nodes: dict[str, Body] = {}
        # Nodes this view held and saw deleted, and when (our clock), the newest NODES_DELETED_KEPT: only a
        # node known gone can lose its pods; one never seen is unknown.
        self.nodes_deleted: dict[str, datetime] = {}
        self.leases: dict[str, Body] = {}
        self.lease_renewed_at: dict[str, datetime] = {}
        self.last_lease_event_at: datetime | None = None  # any node's: silence says the watch is in doubt
        self._pods_by_node: dict[str, set[tuple[Key, str]]] = defaultdict(set)
        # kind -> namespace -> resourceVersion of its last LIST: lists' versions only grow
        self._listed_versions: dict[str, dict[str | None, int]] = defaultdict(dict)

    def size(self) -> int:
        """Objects in the view: what a relist of everything watched lists again."""
        owned = sum(len(index) for index in self._indexes.values())
        return len(self.resources) + sum(len(pods) for pods in self.pods.values()) + owned + len(self.nodes)

    # Resources

    def put_resource(self, body: Body) -> Key:
        key = (_meta(body)["namespace"], _meta(body)["name"])
        if _newer(self.resources.get(key), body):
            self.resources[key] = slim(body)
        return key

    def drop_resource(self, key: Key) -> None:
        self.resources.pop(key, None)
        self.pod_names_seen.pop(key, None)

    # Owned objects

    def put_owned(self, kind: str, body: Body) -> Key | None:
        """Any owned kind (kinds.OWNED); returns the owner's key."""
        return self.put_pod(body) if kind == kinds.POD.kind else self._indexes[kind].put(body)

    def drop_owned(self, kind: str, body: Body) -> Key | None:
        return self.drop_pod(body) if kind == kinds.POD.kind else self._indexes[kind].drop(body)

    def put_pod(self, body: Body) -> Key | None:
        key = owner_key(body)
        if key is None:
            return None
        name = _meta(body)["name"]
        old = self.pods[key].get(name)
        if not _newer(old, body):
            return key
        body = slim(body)
        if old is not None:
            self._pods_by_node[(old.get("spec") or {}).get("nodeName") or ""].discard((key, name))
            if _meta(old).get("uid") != _meta(body).get("uid"):
                self.pod_seen.pop(_meta(old).get("uid") or "", None)
        uid = _meta(body).get("uid") or ""
        self.pod_seen[uid] = pod_seen(body, self.pod_seen.get(uid), self.clock())
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
            self.pod_seen.pop(_meta(old).get("uid") or "", None)
            self._pods_by_node[(old.get("spec") or {}).get("nodeName") or ""].discard((key, name))
        if not self.pods[key]:
            del self.pods[key]
        return key

    def slices_of(self, key: Key, service: str) -> dict[str, Body]:
        """One of the resource's Services' EndpointSlices, by name."""
        return {
            name: eps
            for name, eps in self.endpoint_slices.get(key).items()
            if (_meta(eps).get("labels") or {}).get(names.LABEL_SLICE_SERVICE) == service
        }

    def ready_addresses(self, key: Key, service: str) -> frozenset[str]:
        """Ready endpoint addresses of one of the resource's Services, from its EndpointSlices."""
        addresses: set[str] = set()
        for eps in self.slices_of(key, service).values():
            for endpoint in eps.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready"):
                    addresses.update(endpoint.get("addresses") or [])
        return frozenset(addresses)

    # Relists: an authoritative LIST, applied page by page

    def begin_relist(self, kind: str, namespace: str | None, resource_version: int) -> Listing:
        """Versions older than the last LIST's say etcd was restored: that listing resets the view. The
        version is remembered only once the listing ends, so a relist cut short still resets on retry."""
        last = self._listed_versions[kind].get(namespace, 0)
        return Listing(kind, namespace, resource_version, reset=resource_version < last)

    def take_listed(self, listing: Listing, items: list[Body]) -> None:
        """One page: what changed is taken, an unchanged object is left as it is (no copy made)."""
        for item in items:
            metadata = _meta(item)
            listing.listed.add((metadata.get("namespace") or "", metadata["name"]))
            old = self._stored(listing.kind, item)
            if old is not None and listing.reset:
                self._drop(listing.kind, old)
            elif old is not None and _rv(old) == _rv(item) and _rv(item):
                continue
            self._put(listing.kind, item)

    def end_relist(self, listing: Listing) -> bool:
        """Drop what vanished while a watch was down; True when the view was reset."""
        if listing.kind == kinds.FTS.kind:
            for (namespace, name), body in list(self.resources.items()):
                if listing.in_scope(namespace) and listing.vanished(namespace, {name: body}):
                    self.drop_resource((namespace, name))
        elif listing.kind == kinds.POD.kind:
            for key, pods in [(k, v) for k, v in self.pods.items() if listing.in_scope(k[0])]:
                for name in listing.vanished(key[0], pods):
                    self.drop_pod(pods[name])
        elif listing.kind == kinds.NODE.kind:
            for name in listing.vanished("", self.nodes):
                self.drop_node(name)
        else:
            self._indexes[listing.kind].prune(listing)
        self._listed_versions[listing.kind][listing.namespace] = listing.resource_version
        return listing.reset

    def _stored(self, kind: str, body: Mapping[str, Any]) -> Body | None:
        metadata = _meta(body)
        if kind == kinds.FTS.kind:
            return self.resources.get((metadata.get("namespace") or "", metadata.get("name") or ""))
        if kind == kinds.POD.kind:
            key = owner_key(body)
            return self.pods.get(key, {}).get(metadata.get("name") or "") if key is not None else None
        if kind == kinds.NODE.kind:
            return self.nodes.get(metadata.get("name") or "")
        return self._indexes[kind].stored(body)

    def _put(self, kind: str, body: Body) -> None:
        if kind == kinds.FTS.kind:
            self.put_resource(body)
        elif kind == kinds.NODE.kind:
            self.put_node(body)
        else:
            self.put_owned(kind, body)

    def _drop(self, kind: str, body: Body) -> None:
        metadata = _meta(body)
        if kind == kinds.FTS.kind:
            self.resources.pop((metadata["namespace"], metadata["name"]), None)
        elif kind == kinds.NODE.kind:
            self.nodes.pop(metadata["name"], None)
        else:
            self.drop_owned(kind, body)

    # Nodes and their heartbeats

    def put_node(self, body: Body) -> set[Key]:
        self.nodes[_meta(body)["name"]] = slim(body)
        self.nodes_deleted.pop(_meta(body)["name"], None)
        return self.keys_on_node(_meta(body)["name"])

    def drop_node(self, name: str) -> set[Key]:
        if self.nodes.pop(name, None) is not None:
            self.nodes_deleted.pop(name, None)  # reinserted: the dict's order is the order of deletion
            self.nodes_deleted[name] = self.clock()
            if len(self.nodes_deleted) > NODES_DELETED_KEPT:
                del self.nodes_deleted[next(iter(self.nodes_deleted))]
        return self.keys_on_node(name)

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
