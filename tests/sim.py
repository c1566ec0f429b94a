"""A small simulated cluster for the sequence property tests (tests/test_properties_sequences.py).

The world is the truth: the API objects (one FaultTolerantService, its pods, the nodes and their Leases) and
what no API shows: the workload's processes, which keep running on a node the operator cannot reach, whether
their pod was ever Ready (then they may hold the service's data), and each kubelet's clock (skewed per node in
either direction). Operators see the world only through their own Store, fed from a log of watch events that
may lag; they run the real `Controller.reconcile` (observe, decide, execute; PodMetrics read by its usage
lookup) against an API that answers as the API server does (`SimApi`): JSON merge patches as RFC 7386 (absent
keys kept, null deletes), JSON patches as RFC 6902 with `test`, a `metadata.resourceVersion` in a patch as a
precondition, uid and resourceVersion preconditions on deletes, 404 and 409 answers. A write can fail, and the
operator then stops half-way, as a process that died between two writes would.

Every write the API accepts is checked at once against the invariants (`Violations`); the world's state is
checked again after each step."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from ftso import kinds, names
from ftso.api.spec import parse_spec, resolve_max_unavailable
from ftso.client import ApiError, KubeClient
from ftso.controller import UNSEEN_PRIMARY_GRACE_SECONDS, Controller, StaleView, TrafficLookup, UsageLookup
from ftso.health import NODE_SILENT_AFTER_SECONDS, node_loss_confirmed_after
from ftso.model import format_time, node_view
from ftso.store import Store
from ftso.usage import PodUsage

from .fakeapi import apply_merge_patch

NAMESPACE, NAME, FTS_UID = "ns", "demo", "uid-demo"
KEY = (NAMESPACE, NAME)
START = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
HEARTBEAT_SECONDS = 10  # a kubelet renews its node Lease this often
NODE_MONITOR_GRACE_SECONDS = 40  # the node lifecycle controller marks a silent node NotReady after this
HIGH_CPU, LOW_CPU = 0.95, 0.2  # cores, around a threshold of 800m
# A pod whose term annotation is above the status's term makes the operator wait for a status it has not seen
# (view_behind); a workload may write that annotation itself, so the wait must end. The service may stop
# serving for at most this long while it waits.
VIEW_BEHIND_BOUND_SECONDS = 300
# A workload that stops itself when cut off from the API this long (the fencing issue's self-fence
# deadline). None: processes on an unreachable node run until it is back or proven gone. If the operator
# comes to rely on such a deadline, set it here to the same value, so that the world does what it assumes.
SELF_FENCE_SECONDS: float | None = None
CHECKPOINT = {
    "intervalSeconds": 366 * 86400,  # no new checkpoint during a run: the history's c1 is the good one
    "template": {"name": "checkpoint", "image": "demo:1", "args": ["checkpoint"]},
    "storage": {"emptyDir": {}},
    "restoreTemplate": {"name": "restore", "image": "demo:1", "args": ["restore"]},
}


class Abort(Exception):
    """The operator process died before this write (a crash, a restart, a lost connection)."""


@dataclass
class Proc:
    """A workload process: what really runs, whatever the API says."""

    uid: str
    pod: str
    node: str
    running: bool = True
    held_data: bool = False  # its pod was Ready once: it joined the service's data


@dataclass
class Node:
    name: str
    ready: bool = True  # the Ready condition as the API has it
    silent: bool = False  # the kubelet's heartbeats (and status updates) do not reach the API
    silent_since: datetime | None = None
    out_of_service: bool = False
    skew: float = 0.0  # the kubelet's clock minus the true time, seconds
    renewed: datetime | None = None  # true time of the last renewal


@dataclass
class PodTruth:
    """What the kubelet would report, if it could: set by events, reported by `kubelet_tick`."""

    crashed: bool = False
    unready: bool = False
    ready_since: datetime | None = None  # true time of the last Ready transition
    ever_ready: bool = False
    unready_after_ready: bool = False  # was Ready, then not (a blip, a crash): not a usage-only pod


@dataclass
class Operator:
    name: str
    store: Store
    controller: Controller
    cursor: int = 0  # watch events of the world's log applied to the store
    api: SimApi = field(init=False)
    started_at: datetime | None = None  # by the world's clock


@dataclass
class Violations:
    found: list[str] = field(default_factory=list)

    def add(self, rule: str, message: str) -> None:
        self.found.append(f"{rule}: {message}")


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(target: Any, operations: list[Mapping[str, Any]]) -> Any:
    """RFC 6902 (add, remove, replace, test); a failed test or a missing path is a 422, as the API answers."""
    doc = copy.deepcopy(target)
    for op in operations:
        *parents, last = _pointer(str(op["path"]))
        node = doc
        for part in parents:
            if isinstance(node, list):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise ApiError(422, "Invalid", f"path {op['path']} does not exist")
        kind = op["op"]
        if kind == "test":
            if not isinstance(node, dict) or node.get(last) != op.get("value"):
                raise ApiError(422, "Invalid", f"test of {op['path']} failed")
        elif kind in ("add", "replace"):
            node[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            if last not in node:
                raise ApiError(422, "Invalid", f"path {op['path']} does not exist")
            del node[last]
        else:
            raise ApiError(422, "Invalid", f"unsupported op {kind}")
    return doc


def _term_of(body: Mapping[str, Any]) -> int | None:
    text = ((body.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_TERM, "")
    return int(text) if isinstance(text, str) and text.isdigit() else None


class World:
    def __init__(self, spec: dict[str, Any], nodes: int, *, checkpoint: bool) -> None:
        self.now = START
        self.rv = 0
        self.uids = 0
        self.ips = 0
        self.spec = spec
        self.parsed = parse_spec(spec)
        self.log: list[tuple[str, Any]] = []
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.truth: dict[str, PodTruth] = {}  # by pod uid
        self.procs: dict[str, Proc] = {}  # by pod uid
        self.load: dict[str, float] = {}  # pod name -> cpu, when it runs
        self.usage: dict[str, PodUsage] = {}
        self.metrics_down = False
        self.violations = Violations()
        # What the invariants remember across writes (a status reset by hand forgets the status's part).
        self.fenced_uids: set[str] = set()
        self.operator_terms: dict[str, int] = {}  # pod uid -> highest term an operator wrote on it
        self.soft_failovers: list[datetime] = []
        self.leases: dict[str, dict[str, Any]] = {}
        self.term_ahead_since: datetime | None = None  # since when a pod carries a term above the status's
        self.hidden_nodes: set[str] = set()  # nodes whose watch events have not reached the operators yet
        self.recovering = ""  # the checkpoint of a recovery the operator started and did not complete
        for i in range(nodes):
            self.add_node(f"node-{i}")
        status: dict[str, Any] = {}
        if checkpoint:
            status = {
                "checkpoints": [
                    {
                        "id": "c1",
                        "job": f"{NAME}-ckpt-c1",
                        "result": "Succeeded",
                        "sourcePod": f"{NAME}-1",
                        "term": 1,
                        "startedAt": format_time(START - timedelta(minutes=10)),
                        "finishedAt": format_time(START - timedelta(minutes=9)),
                    }
                ],
                "lastSuccessfulCheckpoint": "c1",
                "checkpointSchedule": {"lastScheduleTime": format_time(START)},
            }
        self.fts: dict[str, Any] = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {
                "name": NAME,
                "namespace": NAMESPACE,
                "uid": FTS_UID,
                "generation": 1,
                "creationTimestamp": format_time(START - timedelta(hours=1)),
                "annotations": {},
            },
            "spec": spec,
            "status": status,
        }
        self._put_fts(self.fts)

    # The API's bookkeeping

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _put_fts(self, body: dict[str, Any]) -> None:
        body["metadata"] = {**body["metadata"], "resourceVersion": self.next_rv()}
        self.fts = body
        self.log.append(("fts", body))

    def _put_pod(self, body: dict[str, Any]) -> None:
        body["metadata"] = {**body["metadata"], "resourceVersion": self.next_rv()}
        self.pods[body["metadata"]["name"]] = body
        self.log.append(("pod", body))

    def _drop_pod(self, name: str) -> None:
        body = self.pods.pop(name)
        self.log.append(("pod-", body))

    def node_body(self, node: Node) -> dict[str, Any]:
        taints = (
            [{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}]
            if node.out_of_service
            else []
        )
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node.name,
                "resourceVersion": self.next_rv(),
                "labels": {names.LABEL_ZONE: f"zone-{node.name}", "kubernetes.io/hostname": node.name},
            },
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True" if node.ready else "False"}]},
        }

    def _node_changed(self, node: Node) -> None:
        self.log.append(("node", self.node_body(node)))

    def _renew(self, node: Node, at: datetime | None = None) -> None:
        node.renewed = at or self.now
        kubelet_time = node.renewed + timedelta(seconds=node.skew)
        lease = {
            "metadata": {
                "name": node.name,
                "namespace": "kube-node-lease",
                "resourceVersion": self.next_rv(),
            },
            "spec": {
                "holderIdentity": node.name,
                "renewTime": kubelet_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
        self.leases[node.name] = lease
        self.log.append(("lease", lease))

    def kubelet_time(self, node_name: str) -> str:
        node = self.nodes.get(node_name)
        return format_time(self.now + timedelta(seconds=node.skew if node else 0.0))

    def compact_log(self) -> None:
        """Only what a LIST would return now: operators started after this replay less."""
        self.log = [("fts", self.fts), *(("pod", p) for p in self.pods.values())]
        for node in self.nodes.values():
            self._node_changed(node)
            self._renew(node)

    # The world's own actors

    def add_node(self, name: str) -> None:
        node = Node(name)
        self.nodes[name] = node
        self._node_changed(node)
        self._renew(node)

    def reachable(self, node_name: str) -> bool:
        """The kubelet is up and talks to the API."""
        node = self.nodes.get(node_name)
        return node is not None and not node.silent and not node.out_of_service

    def schedulable(self, node: Node) -> bool:
        return node.ready and not node.silent and not node.out_of_service

    def _schedule(self, body: Mapping[str, Any]) -> str:
        """The least loaded schedulable node, the newest first on a tie (a node that just joined is where
        new pods go), honouring the pod's `NotIn` node affinity."""
        avoid: set[str] = set()
        affinity = ((body.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
        required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
        for term in required.get("nodeSelectorTerms") or []:
            for expression in term.get("matchExpressions") or []:
                if expression.get("operator") == "NotIn":
                    avoid.update(expression.get("values") or [])
        load = {n: 0 for n in self.nodes}
        for pod in self.pods.values():
            node_name = pod["spec"].get("nodeName") or ""
            if node_name in load:
                load[node_name] += 1
        choices = [n for n in self.nodes.values() if self.schedulable(n) and n.name not in avoid]
        if not choices:
            return ""
        return min(choices, key=lambda n: (load[n.name], [-ord(c) for c in n.name])).name

    def kubelet_tick(self) -> None:
        """Heartbeats, the node lifecycle controller, and each reachable kubelet's pods: start them, report
        their state as its own clock reads, finish deletions, and stop processes whose pod is gone."""
        self._heartbeats()
        self._stop_cut_off_processes()
        for name in sorted(self.pods):
            self._kubelet_sync(name)
        if not self.metrics_down:
            for name, body in self.pods.items():
                if body["status"].get("phase") == "Running" and self.reachable(body["spec"]["nodeName"]):
                    self.usage[name] = PodUsage(self.load.get(name, LOW_CPU), 0.0, self.now)

    def _heartbeats(self) -> None:
        due = [
            n
            for n in self.nodes.values()
            if not n.silent
            and (n.renewed is None or (self.now - n.renewed).total_seconds() >= HEARTBEAT_SECONDS)
        ]
        # Time moves in steps, kubelets renew every 10 s: the renewals made during a long step come first,
        # so a watch a few events behind misses the newest ones only, not all of a node's.
        for node in due:
            if node.renewed is not None and (self.now - node.renewed).total_seconds() > HEARTBEAT_SECONDS:
                self._renew(node, self.now - timedelta(seconds=HEARTBEAT_SECONDS / 2))
        for node in due:
            self._renew(node)
        for node in self.nodes.values():
            silent_for = (self.now - node.silent_since).total_seconds() if node.silent_since else 0.0
            if node.silent and node.ready and silent_for > NODE_MONITOR_GRACE_SECONDS:
                node.ready = False
                self._node_changed(node)

    def _stop_cut_off_processes(self) -> None:
        """The kubelet kills a container whose pod the API no longer has; a self-fencing workload stops."""
        live = {p["metadata"]["uid"] for p in self.pods.values()}
        for proc in self.procs.values():
            node = self.nodes.get(proc.node)
            if proc.running and self.reachable(proc.node) and proc.uid not in live:
                proc.running = False
            since = node.silent_since if node is not None else None
            cut_off = (self.now - since).total_seconds() if since is not None else 0.0
            if SELF_FENCE_SECONDS is not None and since is not None and cut_off >= SELF_FENCE_SECONDS:
                proc.running = False

    def _kubelet_sync(self, name: str) -> None:
        body = self.pods[name]
        node_name = body["spec"].get("nodeName") or ""
        uid = body["metadata"]["uid"]
        if not node_name:
            node_name = self._schedule(body)
            if not node_name:
                return
            self._put_pod({**body, "spec": {**body["spec"], "nodeName": node_name}})
            return
        if not self.reachable(node_name):
            return
        if body["metadata"].get("deletionTimestamp"):
            self._stop(uid)
            self._drop_pod(name)
            return
        truth = self.truth.setdefault(uid, PodTruth())
        proc = self.procs.setdefault(uid, Proc(uid, name, node_name))
        status = copy.deepcopy(body["status"])
        if status.get("phase") != "Running":
            self.ips += 1
            status.update(phase="Running", startTime=self.kubelet_time(node_name), podIP=f"10.1.0.{self.ips}")
            status["conditions"] = [
                {"type": "Ready", "status": "False", "lastTransitionTime": self.kubelet_time(node_name)}
            ]
            status["containerStatuses"] = [{"name": "app", "state": {"running": {}}}]
            self._put_pod({**body, "status": status})
            return
        ready = not truth.crashed and not truth.unready
        was_ready = status["conditions"][0]["status"] == "True"
        state = {"terminated": {"exitCode": 1, "reason": "Error"}} if truth.crashed else {"running": {}}
        changed = status["containerStatuses"][0]["state"] != state or ready != was_ready
        if not changed:
            return
        status["containerStatuses"] = [{"name": "app", "state": state}]
        if ready != was_ready:
            status["conditions"] = [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": self.kubelet_time(node_name),
                }
            ]
            truth.ready_since = self.now
            if ready:
                truth.ever_ready = proc.held_data = True
            elif truth.ever_ready:
                truth.unready_after_ready = True
        self._put_pod({**body, "status": status})

    def _stop(self, uid: str) -> None:
        if uid in self.procs:
            self.procs[uid].running = False

    def delete_pod(self, name: str, *, force: bool) -> None:
        """A graceful delete on an unreachable node only marks the pod (its kubelet would finish it); a force
        delete removes the object at once, and the process runs on until the node is back or proven gone."""
        body = self.pods[name]
        node_name = body["spec"].get("nodeName") or ""
        uid = body["metadata"]["uid"]
        if force or not node_name or self.reachable(node_name):
            if not node_name or self.reachable(node_name):
                self._stop(uid)
            self._drop_pod(name)
            return
        if not body["metadata"].get("deletionTimestamp"):
            self._put_pod(
                {**body, "metadata": {**body["metadata"], "deletionTimestamp": format_time(self.now)}}
            )

    def node_proven_gone(self, name: str) -> None:
        """Its processes are stopped for sure: the pod garbage collector removes what the API still has."""
        for proc in self.procs.values():
            if proc.node == name:
                proc.running = False
        for pod_name in [n for n, p in self.pods.items() if p["spec"].get("nodeName") == name]:
            self._drop_pod(pod_name)

    def set_status(self, status: dict[str, Any]) -> None:
        self._put_fts({**self.fts, "status": status})

    def patch_pod_annotation(self, name: str, key: str, value: str) -> None:
        body = self.pods[name]
        metadata = {**body["metadata"], "annotations": {**body["metadata"]["annotations"], key: value}}
        self._put_pod({**body, "metadata": metadata})

    def create_pod(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if name in self.pods:
            raise ApiError(409, "AlreadyExists", f'pods "{name}" already exists')
        self.uids += 1
        created = copy.deepcopy(body)
        created["metadata"].update(uid=f"pod-uid-{self.uids}", creationTimestamp=format_time(self.now))
        created["spec"]["nodeName"] = self._schedule(created)
        created["status"] = {"phase": "Pending"}
        self.truth[created["metadata"]["uid"]] = PodTruth()
        self._put_pod(created)
        return self.pods[name]


class SimApi(KubeClient):
    """The API server over the world, at the HTTP level: whatever request the controller sends (merge patch,
    JSON patch, apply, create, delete) is answered with the server's semantics. Writes are numbered; from
    `die_at` on the operator is dead (nothing more reaches the API), and the write numbered `refuse_at` gets
    a 409, as a precondition the server found false."""

    def __init__(
        self, world: World, operator: Operator, *, die_at: int | None, refuse_at: int | None
    ) -> None:
        self.world = world
        self.operator = operator
        self.die_at = die_at
        self.refuse_at = refuse_at
        self.writes = 0
        self.write_guard = None
        self.attempts = 1

    async def close(self) -> None:
        return None

    async def request_text(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        guarded: bool = True,
        attempts: int | None = None,
        accept: str = "application/json",
    ) -> str:
        if method == "GET":
            return json.dumps(self._read(path))
        number = self.writes
        self.writes += 1
        if self.die_at is not None and number >= self.die_at:
            raise Abort(f"operator died before write {number}")
        if number == self.refuse_at:
            raise _refusal(method, body, content_type)
        body = json.loads(json.dumps(body)) if body is not None else None  # what goes over the wire
        answer = self._answer(method, path, body, content_type)
        return json.dumps(answer) if answer is not None else ""

    def _read(self, path: str) -> Any:
        """Only PodMetrics are read (in the background, by the controller's UsageLookup)."""
        if not path.startswith("/apis/metrics.k8s.io/"):
            raise ApiError(404, "NotFound", "the simulated API serves no other reads")
        if self.world.metrics_down:
            raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        items = [
            {
                "metadata": {"name": name, "namespace": NAMESPACE},
                "timestamp": format_time(sample.at),
                "window": "15s",
                "containers": [
                    {"name": "app", "usage": {"cpu": f"{round(sample.cpu * 1000)}m", "memory": "0"}}
                ],
            }
            for name, sample in sorted(self.world.usage.items())
        ]
        return {"kind": "PodMetricsList", "items": items}

    def _answer(self, method: str, path: str, body: Any, content_type: str) -> Any:
        parts = [unquote(p) for p in path.split("/")]
        plural = parts[parts.index("namespaces") + 2] if "namespaces" in parts else parts[-1]
        index = parts.index(plural)
        name = parts[index + 1] if len(parts) > index + 1 else ""
        subresource = parts[index + 2] if len(parts) > index + 2 else ""
        if plural == kinds.POD.plural:
            return self._pod(method, name, body, content_type)
        if plural == kinds.FTS.plural:
            return self._status(method, subresource, body, content_type)
        if method in ("POST", "PATCH"):  # Services, the PDB, slices, Jobs, Events: accepted as sent
            return {**body, "metadata": {**body.get("metadata", {}), "resourceVersion": self.world.next_rv()}}
        return {}

    def _patched(self, current: Mapping[str, Any], body: Any, content_type: str) -> dict[str, Any]:
        if "json-patch" in content_type:
            return json_patch(current, body)
        precondition = ((body or {}).get("metadata") or {}).get("resourceVersion")
        if precondition is not None and precondition != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        return apply_merge_patch(current, body)

    def _status(self, method: str, subresource: str, body: Any, content_type: str) -> Any:
        world = self.world
        if method != "PATCH":
            return {}
        before = world.fts
        patched = self._patched(before, body, content_type)
        # The status subresource takes only the status (and checks the preconditions above).
        after = {**before, "status": patched.get("status") or {}}
        if subresource != "status":
            after = {**before, "metadata": {**before["metadata"], **(patched.get("metadata") or {})}}
        world._put_fts(after)
        check_status_write(world, self.operator, before.get("status") or {}, world.fts["status"])
        return world.fts

    def _pod(self, method: str, name: str, body: Any, content_type: str) -> Any:
        world = self.world
        if method == "POST":
            created = world.create_pod(body)
            world.operator_terms[created["metadata"]["uid"]] = _term_of(created) or 0
            return created
        current = world.pods.get(name)
        if current is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        uid = current["metadata"]["uid"]
        if method == "DELETE":
            # Both preconditions of DeleteOptions, as the API server checks them: a delete decided on a view
            # older than the pod (a watch an event behind its turning Ready) is refused, not carried out.
            preconditions = (body or {}).get("preconditions") or {}
            if preconditions.get("uid") not in (None, uid):
                raise ApiError(409, "Conflict", "uid precondition failed")
            if preconditions.get("resourceVersion") not in (None, current["metadata"]["resourceVersion"]):
                raise ApiError(409, "Conflict", "resourceVersion precondition failed")
            force = (body or {}).get("gracePeriodSeconds") == 0
            check_delete(world, self.operator, current, force)
            world.delete_pod(name, force=force)
            return {}
        patched = self._patched(current, body, content_type)
        world._put_pod({**current, "metadata": patched["metadata"]})
        check_pod_write(world, current, world.pods[name])
        return world.pods[name]


def _refusal(method: str, body: Any, content_type: str) -> ApiError:
    """What the server can answer to this write: a conflict where it carries a precondition (a uid, a
    resourceVersion, a JSON patch `test`) or creates a name that exists; otherwise an admission webhook's
    denial."""
    metadata = (body or {}).get("metadata") if isinstance(body, dict) else None
    preconditioned = (
        method in ("POST", "DELETE")
        or ("json-patch" in content_type and any(op.get("op") == "test" for op in body or []))
        or bool(isinstance(metadata, dict) and metadata.get("resourceVersion"))
    )
    if preconditioned:
        return ApiError(409, "Conflict", "the object has been modified; please apply your changes again")
    return ApiError(403, "Forbidden", 'admission webhook "policy.example.com" denied the request')


# Invariants checked at each write the API accepts


def check_status_write(
    world: World, operator: Operator, before: Mapping[str, Any], after: Mapping[str, Any]
) -> None:
    v = world.violations
    for record in after.get("failovers") or []:
        if record.get("fenceUid"):
            world.fenced_uids.add(str(record["fenceUid"]))
    primary, term = str(after.get("primary") or ""), int(after.get("term") or 0)
    old_primary, old_term = str(before.get("primary") or ""), int(before.get("term") or 0)
    pod = world.pods.get(primary)
    if pod is not None and (
        pod["metadata"]["uid"] in world.fenced_uids
        or pod["metadata"]["labels"].get(names.LABEL_ROLE) == names.ROLE_FENCED
    ):
        v.add(
            "fenced-never-elected",
            f"{primary} (uid {pod['metadata']['uid']}) is primary at term {term} but is fenced "
            f"(role {pod['metadata']['labels'].get(names.LABEL_ROLE)})",
        )
    if (primary, term) != (old_primary, old_term):
        live = {p["metadata"]["uid"]: p["metadata"]["name"] for p in world.pods.values()}
        for uid, written in world.operator_terms.items():
            if uid in live and term < written:
                v.add(
                    "term-never-backwards",
                    f"status moved to primary {primary or '-'} at term {term}, below term {written} that "
                    f"live pod {live[uid]} carries",
                )
    _check_recovery(world, before, after, primary, pod)
    if primary and primary != old_primary and old_primary and term > old_term:
        newest = (after.get("failovers") or [{}])[-1]
        if newest.get("kind") == names.ChangeKind.FAILOVER and soft_failure(world, operator, old_primary):
            world.soft_failovers.append(world.now)
            _check_rate(world)


def _check_recovery(
    world: World,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    primary: str,
    pod: Mapping[str, Any] | None,
) -> None:
    v = world.violations
    old, new = before.get("recovery") or {}, after.get("recovery") or {}
    if new.get("startedAt") and new.get("startedAt") != old.get("startedAt"):
        holders = [p for p in world.procs.values() if p.running and p.held_data]
        if holders:
            v.add(
                "no-recovery-while-data-may-live",
                f"a recovery from checkpoint {new.get('checkpoint')} started while "
                f"{', '.join(sorted(f'{p.pod} (uid {p.uid}, node {p.node})' for p in holders))} still "
                "runs with the data",
            )
        world.recovering = str(new.get("checkpoint") or "")
    elif new.get("completedAt") and new.get("completedAt") != old.get("completedAt"):
        world.recovering = ""
    if world.recovering and primary and primary != before.get("primary") and pod is not None:
        restored = pod["metadata"]["annotations"].get(names.ANNOTATION_RESTORED_FROM, "")
        if restored != world.recovering:
            v.add(
                "recovery-elects-only-restored",
                f"{primary} became primary during the recovery from {world.recovering} but loaded "
                f"{restored or 'nothing'}",
            )
        world.recovering = ""


def soft_failure(world: World, operator: Operator, pod_name: str) -> bool:
    """What the limits apply to (docs/design.md, roles.throttle): a primary that may come back. Judged on the
    operator's own view with the world's clocks: present and not deleting, running with no container failure,
    its node known, Ready and heard from within the confirmation age, and Ready or unready for less than
    unreadyTimeoutSeconds of true time."""
    body = operator.store.pods.get(KEY, {}).get(pod_name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return False
    status = body.get("status") or {}
    if status.get("phase") != "Running":
        return False
    if any("terminated" in (c.get("state") or {}) for c in status.get("containerStatuses") or []):
        return False
    node_name = body["spec"].get("nodeName") or ""
    node = operator.store.nodes.get(node_name)
    renewed = operator.store.lease_renewed_at.get(node_name)
    confirm = node_loss_confirmed_after(world.parsed.failover.node_lost_after_seconds)
    if node is None or renewed is None or (world.now - renewed).total_seconds() > confirm:
        return False
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in node["status"]["conditions"]):
        return False
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    truth = world.truth.get(body["metadata"]["uid"])
    if ready or truth is None or truth.ready_since is None:
        return True
    return (world.now - truth.ready_since).total_seconds() < world.parsed.health.unready_timeout_seconds


def _check_rate(world: World) -> None:
    limit = world.parsed.failover.max_per_hour
    times = sorted(world.soft_failovers)
    for i, start in enumerate(times):
        within = [t for t in times[i:] if t < start + timedelta(hours=1)]
        if len(within) > limit:
            world.violations.add(
                "max-per-hour",
                f"{len(within)} failovers of a primary that could come back within the hour from "
                f"{format_time(start)} (maxPerHour is {limit})",
            )
            return


def check_pod_write(world: World, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    uid = after["metadata"]["uid"]
    term = _term_of(after)
    written = world.operator_terms.get(uid, 0)
    if term is not None and term < written:
        world.violations.add(
            "pod-term-never-backwards",
            f"{after['metadata']['name']} was relabelled {after['metadata']['labels'].get(names.LABEL_ROLE)} "
            f"at term {term} after an operator had written term {written} on it",
        )
    if term is not None:
        world.operator_terms[uid] = max(written, term)


def check_delete(world: World, operator: Operator, pod: Mapping[str, Any], force: bool) -> None:
    """The node rules judge deletions for node loss: force deletes, which remove the object at once and let a
    pod of the same name start elsewhere. A graceful delete is decided on the pod's own state (its container
    failed, it was fenced, scaled away, rolled) and is carried out by its node's kubelet: on a node that
    cannot be reached the kubelet cannot act, the object stays Terminating and its name stays taken, so
    nothing is stopped or started on the strength of the node's silence. The silence is measured in the
    deleting operator's view, which is what it decided on (a view that stopped syncing sees every node
    silent, as a second operator's does)."""
    v = world.violations
    name, node_name = pod["metadata"]["name"], pod["spec"].get("nodeName") or ""
    if force and node_name and node_name not in operator.store.nodes:
        v.add(
            "no-delete-on-unknown-node",
            f"{name} force-deleted on {node_name}, a node the operator has not seen",
        )
    renewed = operator.store.lease_renewed_at.get(node_name)
    confirm = node_loss_confirmed_after(world.parsed.failover.node_lost_after_seconds)
    # NotReady is the API's own word (its kubelet's, or the node lifecycle controller's), not a guess from
    # silence: only the silence of a node the view holds Ready waits for the confirmation age.
    ready_in_view = (
        node_view(operator.store.nodes[node_name]).ready if node_name in operator.store.nodes else False
    )
    if force and ready_in_view and renewed is not None:
        age = (world.now - renewed).total_seconds()
        if NODE_SILENT_AFTER_SECONDS < age < confirm:
            v.add(
                "no-delete-on-unconfirmed-node",
                f"{name} force-deleted on {node_name}, silent for {age:.0f}s in operator {operator.name}'s view "
                f"(loss confirmed only after {confirm:.0f}s)",
            )
    _check_usage_delete(world, operator, pod, "force-deleted" if force else "deleted")


def usage_only(world: World, operator: Operator, pod: Mapping[str, Any]) -> bool:
    """Nothing but its measured usage could be held against this pod: Ready since it first was, no container
    failure, on a node the operator knows and hears from. Judged on the world's truth, which a delete the API
    accepts was decided on: it carries the view's resourceVersion of the pod, so a view behind the pod's last
    report (say, its turning Ready) has its delete refused."""
    truth = world.truth.get(pod["metadata"]["uid"])
    node_name = pod["spec"].get("nodeName") or ""
    renewed = operator.store.lease_renewed_at.get(node_name)
    return (
        truth is not None
        and truth.ever_ready
        and not truth.unready_after_ready
        and not truth.crashed
        and not truth.unready
        and not pod["metadata"].get("deletionTimestamp")
        and world.reachable(node_name)
        and world.nodes[node_name].ready
        and node_name in operator.store.nodes
        and _ready(operator.store.nodes[node_name])
        and renewed is not None
        and (world.now - renewed).total_seconds() <= NODE_SILENT_AFTER_SECONDS
    )


def _check_usage_delete(world: World, operator: Operator, pod: Mapping[str, Any], how: str) -> None:
    metrics = world.parsed.health.metrics
    if metrics is None or world.recovering or not usage_only(world, operator, pod):
        return  # during a recovery, pods that did not load its checkpoint go whatever their usage
    fenced = pod["metadata"]["labels"].get(names.LABEL_ROLE) == names.ROLE_FENCED
    if fenced or pod["metadata"]["uid"] in world.fenced_uids:
        return  # a failover for usage never fences (it demotes): a fenced pod goes for another failure
    name = pod["metadata"]["name"]
    if metrics.replace_after_seconds == 0:
        world.violations.add(
            "usage-replace-never-when-0", f"{name} {how} for its usage though replaceAfterSeconds is 0"
        )
        return
    replicas = world.parsed.replicas
    budget = resolve_max_unavailable(world.parsed.max_unavailable, replicas)
    down = [
        f"{NAME}-{i}"
        for i in range(replicas)
        if (p := world.pods.get(f"{NAME}-{i}")) is None
        or p["metadata"].get("deletionTimestamp")
        or not _ready(p)
        or p["metadata"]["name"] == name
    ]
    if len(down) > budget:
        world.violations.add(
            "usage-within-max-unavailable",
            f"{name} {how} for its usage while {', '.join(down)} would be down (maxUnavailable {budget})",
        )


def _ready(body: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (body.get("status") or {}).get("conditions") or []
    )


# Invariants of the world between steps


def check_world(world: World, fresh_reconcile: Operator | None) -> None:
    v = world.violations
    term = int((world.fts.get("status") or {}).get("term") or 0)
    serving_primaries = sorted(
        p["metadata"]["name"]
        for p in world.pods.values()
        if p["metadata"]["labels"].get(names.LABEL_ROLE) == names.ROLE_PRIMARY
        and p["metadata"]["labels"].get(names.LABEL_SERVING) == "true"
        and term
        and _term_of(p) == term
    )
    if len(serving_primaries) > 1:
        v.add("one-serving-primary", f"{serving_primaries} all labelled primary and serving at term {term}")
    ahead = any((_term_of(p) or 0) > term for p in world.pods.values())
    world.term_ahead_since = (world.term_ahead_since or world.now) if ahead else None
    if fresh_reconcile is None or world.parsed.health.metrics is None:
        return
    if (
        ahead
        and (world.now - (world.term_ahead_since or world.now)).total_seconds() < VIEW_BEHIND_BOUND_SECONDS
    ):
        return  # a pod carries a newer term than the status: waiting for the status is right, for a while
    if _waits_for_unseen_primary(world, fresh_reconcile):
        return  # a new process waits briefly for a primary its watch may still bring
    capable = [
        p["metadata"]["name"]
        for p in world.pods.values()
        if usage_only(world, fresh_reconcile, p)
        and p["metadata"]["labels"].get(names.LABEL_ROLE) != names.ROLE_FENCED
        and p["metadata"]["uid"] not in world.fenced_uids
    ]
    serving = [p for p in world.pods.values() if p["metadata"]["labels"].get(names.LABEL_SERVING) == "true"]
    if capable and not serving:
        v.add(
            "usage-never-drains-the-last",
            f"no pod serves after a reconcile while {', '.join(sorted(capable))} are Ready and fail nothing "
            "(a usage threshold at most)",
        )


def _waits_for_unseen_primary(world: World, operator: Operator) -> bool:
    """The status names a primary this process never saw, and it started less than the grace ago."""
    primary = str((world.fts.get("status") or {}).get("primary") or "")
    seen = primary in operator.store.pod_names_seen.get(KEY, ())
    started = operator.started_at or world.now
    young = (world.now - started).total_seconds() < UNSEEN_PRIMARY_GRACE_SECONDS + 1
    return bool(primary) and not seen and young


# The operators


def start_operator(world: World, name: str) -> Operator:
    """A new process: its view is a LIST of the world now (every Lease counts as heard now)."""
    store = Store(clock=lambda: world.now)

    def seconds() -> float:  # the controller and its lookups read a monotonic clock: the world's here
        return world.now.timestamp()

    controller = Controller(None, store, clock=lambda: world.now, monotonic=seconds)  # type: ignore[arg-type]
    operator = Operator(name, store, controller, started_at=world.now)
    operator.api = controller.client = SimApi(world, operator, die_at=None, refuse_at=None)

    controller.usage = UsageLookup(operator.api, clock=seconds)
    controller.traffic = TrafficLookup(operator.api, clock=seconds)
    store.put_resource(world.fts)
    for pod in world.pods.values():
        store.put_pod(pod)
    for node in world.nodes.values():
        if node.name not in world.hidden_nodes:
            store.put_node(world.node_body(node))
            store.put_lease(world.leases[node.name], world.now)
    operator.cursor = len(world.log)
    return operator


def sync(world: World, operator: Operator, upto: int) -> None:
    """Apply the world's watch events up to `upto` (never back) to the operator's view, at its clock."""
    store = operator.store
    for kind, body in world.log[operator.cursor : upto]:
        if kind == "fts":
            store.put_resource(body)
        elif kind == "pod":
            store.put_pod(body)
        elif kind == "pod-":
            store.drop_pod(body)
        elif kind in ("node", "lease") and body["metadata"]["name"] in world.hidden_nodes:
            continue  # the node watch is behind the pod watch: this node is news to come
        elif kind == "node":
            store.put_node(body)
        elif kind == "node-":
            store.drop_node(body)
        elif kind == "lease":
            store.put_lease(body, world.now)
    operator.cursor = max(operator.cursor, upto)


def reconcile(
    world: World,
    operator: Operator,
    loop: asyncio.AbstractEventLoop,
    *,
    die_at: int | None = None,
    refuse_at: int | None = None,
) -> bool:
    """One reconcile by the real controller on the operator's view as it is; True when it ran to its end."""
    operator.api.writes, operator.api.die_at, operator.api.refuse_at = 0, die_at, refuse_at
    try:
        loop.run_until_complete(operator.controller.reconcile(KEY))
    except (Abort, StaleView, ApiError):
        return False
    return True


def close(loop: asyncio.AbstractEventLoop) -> None:
    """Background reads still pending (the usage lookup's) end with the run."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()

    async def ended() -> None:
        await asyncio.gather(*pending, return_exceptions=True)

    if pending:
        loop.run_until_complete(ended())
    loop.close()


def restart(world: World, operator: Operator) -> Operator:
    return start_operator(world, operator.name)
