"""Observe -> decide -> act for one FaultTolerantService: the glue between the store, the pure
`reconcile.decide` and the API client. It holds no decisions of its own."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from ftso import conditions, kinds, names
from ftso.api.spec import parse_spec
from ftso.checkpoints import job_view
from ftso.client import ApiError, KubeClient
from ftso.hooks import call_hooks
from ftso.model import NodeView, format_time, node_view, parse_time, pod_view
from ftso.names import EventReason
from ftso.patches import merge_patch
from ftso.plan import EventSpec, MetadataRemoval, Plan
from ftso.reconcile import FtsView, Observed, decide, view_behind
from ftso.settings import OperatorSettings
from ftso.status import FtsStatus
from ftso.store import Key, Store
from ftso.traffic import TrafficView
from ftso.usage import PodUsage, read_pod_metrics

logger = logging.getLogger(__name__)
# How long a primary named in status but never seen in the pod watch is taken for watch lag.
UNSEEN_PRIMARY_GRACE_SECONDS = 2.0
# How long a pod carrying a newer term than the status is taken for news on its way (another writer's
# status, or our own write's event). Then the term is someone else's, a workload's say: decide repairs it.
VIEW_BEHIND_GRACE_SECONDS = 10.0
# A namespace the API server called terminating is skipped this long, then looked at again.
TERMINATING_NAMESPACE_SKIP_SECONDS = 30.0


class StaleView(Exception):
    """A write carried what our view holds as a precondition (a resourceVersion, a uid) and the server
    refused it: someone wrote that object since we read it. The reconcile stops and runs again on fresh
    state, so nothing computed from the stale view is written."""


class StaleStatus(StaleView):
    """Someone wrote the resource since we read it."""


@dataclass(frozen=True)
class ViewSettings:
    """How far the operator trusts its own view of the nodes."""

    max_lost_node_share: float = OperatorSettings.max_lost_node_share
    heartbeat_silence_seconds: float = OperatorSettings.heartbeat_silence_seconds


def observe(
    store: Store,
    key: Key,
    now: datetime,
    view: ViewSettings = ViewSettings(),
    create_failures: Mapping[str, str] | None = None,
) -> Observed | None:
    body = store.resources.get(key)
    if body is None:
        return None
    metadata = body.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return None  # Owned objects go with it through the garbage collector.
    uid = metadata.get("uid", "")
    owned = [
        p
        for p in store.pods.get(key, {}).values()
        if any(ref.get("uid") == uid for ref in (p.get("metadata") or {}).get("ownerReferences") or [])
    ]
    nodes = {name: node_view(node, store.lease_renewed_at.get(name)) for name, node in store.nodes.items()}
    for pod in owned:  # a node its pods are on that the view saw deleted
        name = (pod.get("spec") or {}).get("nodeName") or ""
        if name and name not in nodes and name in store.nodes_deleted:
            nodes[name] = NodeView(name, ready=False, deleted_at=store.nodes_deleted[name])
    return Observed(
        fts=FtsView(
            name=key[1],
            namespace=key[0],
            uid=uid,
            generation=int(metadata.get("generation") or 0),
            spec=body.get("spec") or {},
            status=body.get("status") or {},
            annotations=metadata.get("annotations") or {},
            created_at=parse_time(metadata.get("creationTimestamp")),
        ),
        pods=tuple(pod_view(p, key[1], store.pod_seen.get(p["metadata"].get("uid") or "")) for p in owned),
        nodes=nodes,
        services=dict(store.services.get(key)),
        pdb=store.pdbs.get(key).get(key[1]),
        now=now,
        primary_endpoints=store.ready_addresses(key, f"{key[1]}-primary"),
        primary_slices=store.slices_of(key, f"{key[1]}-primary"),
        jobs=tuple(
            job_view(j)
            for j in store.jobs.get(key).values()
            if any(ref.get("uid") == uid for ref in (j.get("metadata") or {}).get("ownerReferences") or [])
        ),
        node_view_in_doubt=store.heartbeat_doubt(now, view.heartbeat_silence_seconds),
        primary_unseen=_primary_unseen(store, key, body.get("status") or {}, owned),
        max_lost_node_share=view.max_lost_node_share,
        create_failures=dict(create_failures or {}),
    )


class TokenBucket:
    def __init__(self, burst: float, per_second: float, clock: Callable[[], float]) -> None:
        self.burst, self.per_second, self.clock = burst, per_second, clock
        self.tokens, self.at = burst, clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_second)
        self.at = now

    def available(self) -> bool:
        self._refill()
        return self.tokens >= 1

    def take(self) -> None:
        self.tokens -= 1


class NodeLossBudget:
    """Force-deletions for node loss are rate-limited per resource and for the whole cluster: a view that
    passes every other check still cannot empty the cluster at once (as the node lifecycle controller
    limits its evictions)."""

    def __init__(
        self,
        *,
        per_resource: tuple[float, float] = (3, 0.5),
        cluster: tuple[float, float] = (30, 5.0),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_resource = per_resource
        self._clock = clock
        self._cluster = TokenBucket(*cluster, clock)
        self._resources: dict[Key, TokenBucket] = {}

    def allow(self, key: Key) -> bool:
        bucket = self._resources.setdefault(key, TokenBucket(*self._per_resource, self._clock))
        if not (bucket.available() and self._cluster.available()):
            return False
        bucket.take()
        self._cluster.take()
        return True


NODE_LOSS_RETRY_SECONDS = 1.0
# A refused create is retried at this pace (doubling up to the maximum): a quota raised or a policy
# relaxed is picked up by itself, without a storm of requests meanwhile.
CREATE_RETRY_SECONDS = (1.0, 30.0)


def _only_refused(event: EventSpec, creates: list[dict[str, Any]], refused: set[str]) -> bool:
    """The Created Event of a reconcile whose every pod create was refused says nothing true."""
    names_ = {p["metadata"]["name"] for p in creates}
    return event.reason == EventReason.CREATED and bool(names_) and names_ <= refused


def _primary_unseen(store: Store, key: Key, status: Mapping[str, Any], owned: list[dict[str, Any]]) -> bool:
    primary = str(status.get("primary") or "")
    present = {(p.get("metadata") or {}).get("name") for p in owned}
    return bool(primary) and primary not in present and primary not in store.pod_names_seen.get(key, ())


def _log_change_of_primary(key: Key, observed: Observed, plan: Plan) -> None:
    """Said in the log as well as in status: racing writers and lost views show up here first."""
    before = observed.fts.status
    primary, term = plan.status.get("primary", ""), plan.status.get("term", 0)
    if (before.get("primary", ""), before.get("term", 0)) != (primary, term):
        logger.info(
            "%s/%s: primary %r (term %s) -> %r (term %s): %s; %s",
            *key,
            before.get("primary", ""),
            before.get("term", 0),
            primary,
            term,
            plan.promotion or "no candidate",
            "; ".join(
                f"{c['type']}={c['status']} {c.get('message', '')}"
                for c in plan.status.get("conditions") or []
            ),
        )


# The API server allocates each Service's ClusterIP under contention: with every worker creating its
# resource's three Services at once, one create took 4 s at 1,000 resources (17 ms one at a time), and
# each worker waited on it. A few in flight keep each create fast; pods and the rest do not wait for them.
SERVICE_CREATES_IN_FLIGHT: Final = 2


# spec.traffic's objects are read, not watched (their CRDs may be missing, or installed later), and in the
# background, like PodMetrics: a reconcile never waits on the Gateway API, so a failing or hanging one never
# delays a failover. Once per this long for each resource that names a Gateway, and which CRDs are
# installed once per the other.
TRAFFIC_REFRESH_SECONDS: Final = 10.0
# A route apply refused only because the Gateway's controller wrote the route's status meanwhile is tried
# again over the fresh version, this many times in all.
TRAFFIC_APPLY_ATTEMPTS: Final = 3
DISCOVERY_REFRESH_SECONDS: Final = 30.0
# A read (discovery and a few GETs) gets one attempt and this long; a failed one keeps the last good view.
TRAFFIC_READ_TIMEOUT_SECONDS: Final = 5.0
# The route's and the provider object's writes, after the roles moved: one that hangs is given up.
TRAFFIC_WRITE_TIMEOUT_SECONDS: Final = 10.0


@dataclass(frozen=True)
class TrafficReading:
    read_at: float
    gateway: Any  # the spec's Gateway reference the view was read for
    view: TrafficView
    uid: str = ""  # the resource's uid the objects were judged ours by


class TrafficLookup:
    """What the API holds of each resource's route, Gateway and provider object, read in the background at
    most every TRAFFIC_REFRESH_SECONDS; our own writes' answers replace what was read at once."""

    def __init__(self, client: KubeClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        self.on_news: Callable[[Key], None] | None = None  # queues the resource: a read found something new
        self._served: tuple[float, frozenset[str]] | None = None
        self._discovery = asyncio.Lock()  # one discovery at a time, not one per resource
        self._readings: dict[Key, TrafficReading] = {}
        self._reading: dict[Key, asyncio.Task[None]] = {}

    def view(
        self, key: Key, spec: Mapping[str, Any], status: Mapping[str, Any], *, uid: str = ""
    ) -> TrafficView | None:
        """None when there is nothing to look at: no Gateway named now, and no route left from before. Else
        the last view read (a pending one before the first), and a new read starts when one is due. Objects
        are ours when they name the resource's `uid` as their owner (without one, none is)."""
        named = (spec.get("traffic") or {}).get("gatewayRef")  # parsed only when there is one
        gateway = parse_spec(spec).traffic.gateway if named else None
        reason = conditions.reason_of(
            status.get("conditions") or [], names.ConditionType.TRAFFIC_POLICY_READY
        )
        if gateway is None and reason in ("", names.Reason.KUBE_PROXY):
            self.forget(key)
            return None
        reading = self._readings.get(key)
        current = (
            reading if reading is not None and (reading.gateway, reading.uid) == (gateway, uid) else None
        )
        due = current is None or self.clock() - current.read_at >= TRAFFIC_REFRESH_SECONDS
        if due and key not in self._reading:
            self._reading[key] = asyncio.create_task(
                self._refresh(key, gateway, uid), name=f"ftso-traffic-{key[0]}/{key[1]}"
            )
        return current.view if current is not None else TrafficView(pending=True)

    def retry_after(self, key: Key) -> float | None:
        """A failed read or write is tried again at the next refresh, whatever else the resource waits for."""
        reading = self._readings.get(key)
        failed = reading is not None and bool(reading.view.problem or reading.view.stale)
        return TRAFFIC_REFRESH_SECONDS if failed else None

    async def _refresh(self, key: Key, gateway: Any, uid: str) -> None:
        """One bounded read; whatever happens becomes the view (a problem, never an exception)."""
        try:
            view = await asyncio.wait_for(self._read_for(key, uid, gateway), TRAFFIC_READ_TIMEOUT_SECONDS)
        except TimeoutError:
            view = self._kept(
                key, gateway, f"no answer within {TRAFFIC_READ_TIMEOUT_SECONDS:g} s (timed out)"
            )
        except ApiError as error:
            view = self._kept(key, gateway, f"{error.status} {error.reason}: {error.message}")
        except (
            Exception
        ) as error:  # hostile answers (not objects, not lists) included: a background read ends
            logger.warning("%s/%s: reading the traffic objects failed: %r", *key, error)
            view = self._kept(key, gateway, f"unreadable answer: {error!r}")
        finally:
            if self._reading.get(key) is asyncio.current_task():
                del self._reading[key]
        before = self._readings.get(key)
        self._readings[key] = TrafficReading(self.clock(), gateway, view, uid)
        if self.on_news is not None and (before is None or before.view != view):
            self.on_news(key)

    def _kept(self, key: Key, gateway: Any, problem: str) -> TrafficView:
        """After a failed read, the last good view stays, marked stale: writes go on from it."""
        reading = self._readings.get(key)
        if reading is None or reading.gateway != gateway or reading.view.problem:
            return TrafficView(problem=problem)
        return dataclasses.replace(reading.view, stale=problem)

    async def _read_for(self, key: Key, uid: str, gateway: Any) -> TrafficView:
        return await self._read(
            key, uid, gateway.namespace or key[0] if gateway else "", gateway.name if gateway else ""
        )

    async def _read(self, key: Key, uid: str, gateway_namespace: str, gateway_name: str) -> TrafficView:
        served = await self.served()
        gateway_found = False
        if gateway_name and kinds.GATEWAY.kind in served:
            gateway_found = await self._get(kinds.GATEWAY, gateway_namespace, gateway_name) is not None
        route = await self._get(kinds.HTTP_ROUTE, key[0], key[1]) if kinds.HTTP_ROUTE.kind in served else None
        policies, foreign = {}, set()
        for kind in kinds.PROVIDER_POLICY.values():
            if kind.kind not in served:
                continue
            body = await self._get(kind, key[0], key[1])
            if body is not None:
                if _owned_by(body, uid):
                    policies[kind.kind] = body
                else:
                    foreign.add(kind.kind)
        if route is not None and not _owned_by(route, uid):
            route = None  # someone else's object of the same name is never ours to change or delete
            foreign.add(kinds.HTTP_ROUTE.kind)
        return TrafficView(served, gateway_found, route, policies, foreign=frozenset(foreign))

    async def _get(self, kind: kinds.Kind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.request("GET", kind.path(namespace, name), attempts=1)
        except ApiError as error:
            if error.not_found:
                return None
            raise

    async def served(self) -> frozenset[str]:
        """The kinds of kinds.TRAFFIC whose CRDs are installed, from the API's discovery documents."""
        async with self._discovery:
            if self._served is None or self.clock() - self._served[0] >= DISCOVERY_REFRESH_SECONDS:
                self._served = (self.clock(), await self._discover())
            return self._served[1]

    async def _discover(self) -> frozenset[str]:
        found: set[str] = set()
        for group_version in sorted({f"{k.group}/{k.version}" for k in kinds.TRAFFIC}):
            try:
                listing = await self.client.request("GET", f"/apis/{group_version}", attempts=1)
            except ApiError as error:
                if error.not_found:
                    continue
                raise
            plurals = {str(r.get("name")) for r in listing.get("resources") or []}
            found |= {
                k.kind
                for k in kinds.TRAFFIC
                if f"{k.group}/{k.version}" == group_version and k.plural in plurals
            }
        return frozenset(found)

    def seen(self, key: Key, kind: str) -> Mapping[str, Any] | None:
        """The route or provider object as last read or written, for a write's precondition."""
        reading = self._readings.get(key)
        if reading is None:
            return None
        view = reading.view
        return view.route if kind == kinds.HTTP_ROUTE.kind else view.policies.get(kind)

    def wrote(self, key: Key, body: dict[str, Any] | None, kind: str) -> None:
        """Our write's answer (None: deleted) is what the next reconcile sees."""
        reading = self._readings.get(key)
        if reading is None:
            return
        view = reading.view
        if kind == kinds.HTTP_ROUTE.kind:
            view = dataclasses.replace(view, route=body)
        else:
            policies = {k: v for k, v in view.policies.items() if k != kind}
            view = dataclasses.replace(view, policies={**policies, **({kind: body} if body else {})})
        self._readings[key] = dataclasses.replace(reading, view=view)

    def failed(self, key: Key, problem: str) -> None:
        """A write the server refused, or that failed: the condition says so until the next read."""
        reading = self._readings.get(key)
        if reading is not None:
            self._readings[key] = dataclasses.replace(
                reading, view=dataclasses.replace(reading.view, problem=problem)
            )

    def forget(self, key: Key) -> None:
        self._readings.pop(key, None)
        task = self._reading.pop(key, None)
        if task is not None:
            task.cancel()


# PodMetrics are read in the background, at most this often per resource: a read never delays a reconcile
# (a paused metrics-server holds a request for 40 s), and a new sample queues the resource at once.
USAGE_REFRESH_SECONDS: Final = 5.0
METRICS_PATH: Final = "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"


@dataclass
class UsageReading:
    read_at: float
    samples: dict[str, PodUsage]
    problem: str = ""
    rejected: dict[str, str] = field(default_factory=dict)  # pod -> why its PodMetrics was ignored


class UsageLookup:
    """Each pod's newest PodMetrics sample, for the resources with health.metrics."""

    def __init__(self, client: KubeClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        self.on_news: Callable[[Key], None] | None = None  # queues the resource: a sample or a problem is new
        self._readings: dict[Key, UsageReading] = {}
        self._reading: dict[Key, asyncio.Task[None]] = {}

    def current(self, key: Key) -> UsageReading:
        """The last reading (empty at first); a fresh one starts in the background when it is due."""
        reading = self._readings.get(key)
        due = reading is None or self.clock() - reading.read_at >= USAGE_REFRESH_SECONDS
        if due and key not in self._reading:
            self._reading[key] = asyncio.create_task(self._read(key), name=f"ftso-usage-{key[0]}/{key[1]}")
        return reading or UsageReading(self.clock(), {}, "")

    def forget(self, key: Key) -> None:
        self._readings.pop(key, None)
        task = self._reading.pop(key, None)
        if task is not None:
            task.cancel()

    async def _read(self, key: Key) -> None:
        try:
            reading = await self._fetch(key)
        except Exception as error:  # an optional integration: whatever it does is a condition, never a stop
            logger.exception("reading the metrics of %s/%s failed", *key)
            reading = UsageReading(self.clock(), {}, f"reading the metrics API failed: {error!r}"[:300])
        finally:
            self._reading.pop(key, None)
        before = self._readings.get(key)
        self._readings[key] = reading
        if self.on_news is not None and (
            before is None
            or before.samples != reading.samples
            or before.problem != reading.problem
            or before.rejected != reading.rejected
        ):
            self.on_news(key)

    async def _fetch(self, key: Key) -> UsageReading:
        path = METRICS_PATH.format(namespace=key[0])
        params = {"labelSelector": f"{names.LABEL_SERVICE}={key[1]}"}
        try:
            listing = await self.client.request("GET", path, params=params, attempts=1)
        except ApiError as error:
            if error.not_found:
                problem = "the metrics API (metrics.k8s.io) is not served: install metrics-server"
            else:
                problem = f"the metrics API answered {error.status} {error.reason}: {error.message}"
            return UsageReading(self.clock(), {}, problem)
        except ValueError:  # not JSON
            return UsageReading(self.clock(), {}, "the metrics API answered a malformed PodMetricsList")
        read = read_pod_metrics(listing)
        return UsageReading(self.clock(), read.samples, read.problem, read.rejected)


def _measures_usage(spec: Mapping[str, Any]) -> bool:
    """health.metrics judges by usage; traffic.weights.followLoad weighs by it."""
    if not (spec.get("health") or {}).get("metrics") and not (spec.get("traffic") or {}).get("weights"):
        return False  # the common case, without parsing the spec on every reconcile
    parsed = parse_spec(spec)
    return parsed.health.metrics is not None or parsed.traffic.follow_load is not None


def _sooner(first: float | None, second: float | None) -> float | None:
    return min((t for t in (first, second) if t is not None), default=None)


def _resource_version(seen: Mapping[str, Any] | None) -> str:
    """The resourceVersion our view holds of an object, as a write's precondition ("": not in the view)."""
    return str(((seen or {}).get("metadata") or {}).get("resourceVersion") or "")


def _version_of(seen: Mapping[str, Any] | None) -> dict[str, str]:
    """... as metadata for a patch or an apply."""
    version = _resource_version(seen)
    return {"resourceVersion": version} if version else {}


def _owned_by(body: Mapping[str, Any], uid: str) -> bool:
    """By the ownerReference to the resource's uid, which the garbage collector acts on too: a label anyone
    may remove or copy, and a resource deleted and made anew under the same name, say nothing."""
    references = (body.get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(isinstance(r, Mapping) and r.get("uid") == uid for r in references)


class Patience:
    """Since when each key has waited for news, by a monotonic clock: news that is on its way arrives in
    milliseconds, news that never comes must not hold a resource forever."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds, self.clock = seconds, clock
        self._since: dict[Key, float] = {}

    def exhausted(self, key: Key, waiting: bool) -> bool:
        """Whether a key still `waiting` has waited `seconds` already; a key no longer waiting starts over."""
        if not waiting:
            self._since.pop(key, None)
            return False
        since = self._since.setdefault(key, self.clock())
        return self.clock() - since >= self.seconds

    def forget(self, key: Key) -> None:
        self._since.pop(key, None)


class Controller:
    def __init__(
        self,
        client: KubeClient,
        store: Store,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        view: ViewSettings = ViewSettings(),
        node_loss_budget: NodeLossBudget | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.store = store
        self.clock = clock
        self.view = view
        self.node_loss_budget = node_loss_budget or NodeLossBudget()
        self.instance = socket.gethostname()
        self.on_plan: Callable[[Key, Plan], Awaitable[None]] | None = None
        # What the API server refused to create in each resource's last attempt, and how many attempts
        # in a row failed: decide turns them into the ReplicaFailure condition.
        self.create_failures: dict[Key, dict[str, str]] = {}
        self._failed_attempts: dict[Key, int] = {}
        self._unseen_primary = Patience(UNSEEN_PRIMARY_GRACE_SECONDS, monotonic)
        self._view_behind = Patience(VIEW_BEHIND_GRACE_SECONDS, monotonic)
        self._terminating_seen: dict[str, float] = {}  # namespace -> when a create was refused for it
        self._service_creates = asyncio.Semaphore(SERVICE_CREATES_IN_FLIGHT)
        self.traffic = TrafficLookup(client)
        self.usage = UsageLookup(client)

    async def reconcile(self, key: Key) -> float | None:
        if self._in_terminating_namespace(key[0]):
            return None  # its deletion reaches every object in it; work there only delays the others
        before = self.create_failures.get(key, {})
        observed = observe(self.store, key, self.clock(), self.view, before)
        if observed is None:
            self.create_failures.pop(key, None)
            self._failed_attempts.pop(key, None)
            self.traffic.forget(key)
            self.usage.forget(key)
            self._unseen_primary.forget(key)
            self._view_behind.forget(key)
            return None
        observed = self._bound_unseen_primary(key, observed)
        observed = self._bound_view_behind(key, observed)
        # Never waits on the API: the lookup reads in the background.
        traffic = self.traffic.view(key, observed.fts.spec, observed.fts.status, uid=observed.fts.uid)
        if traffic is not None:
            observed = dataclasses.replace(observed, traffic=traffic)
        if _measures_usage(observed.fts.spec):
            reading = self.usage.current(key)
            observed = dataclasses.replace(
                observed,
                usage=reading.samples,
                metrics_problem=reading.problem,
                metrics_rejected=reading.rejected,
            )
        else:
            self.usage.forget(key)
        plan = decide(observed)
        _log_change_of_primary(key, observed, plan)
        self._limit_node_loss(key, plan)
        await self.execute(key, observed, plan)
        if self.on_plan is not None:
            await self.on_plan(key, plan)
        return self._after_creates(key, before, _sooner(plan.requeue_after, self.traffic.retry_after(key)))

    def _in_terminating_namespace(self, namespace: str) -> bool:
        """Known for a while after the API server said so; then one reconcile looks again, so that a
        namespace deleted and made anew under the same name is served."""
        seen = self._terminating_seen.get(namespace)
        if seen is None:
            return False
        if time.monotonic() - seen < TERMINATING_NAMESPACE_SKIP_SECONDS:
            return True
        del self._terminating_seen[namespace]
        return False

    def _note_terminating(self, namespace: str) -> None:
        self._terminating_seen[namespace] = time.monotonic()

    def _bound_unseen_primary(self, key: Key, observed: Observed) -> Observed:
        """A primary never seen is waited for briefly: a watch lags by milliseconds, but a pod deleted while
        this process was not watching never shows up."""
        if self._unseen_primary.exhausted(key, observed.primary_unseen):
            return dataclasses.replace(observed, primary_unseen=False)
        return observed

    def _bound_view_behind(self, key: Key, observed: Observed) -> Observed:
        """A pod's newer term is waited for briefly, by our own clock, since the view first saw it: news
        arrives in milliseconds, but a term a workload wrote on its own pod never gets a status."""
        if self._view_behind.exhausted(key, view_behind(observed)):
            return dataclasses.replace(observed, behind_too_long=True)
        return observed

    def _after_creates(
        self, key: Key, before: Mapping[str, str], requeue_after: float | None
    ) -> float | None:
        """Refused creates come back soon when they are news (the condition must say so), then at a
        slowing pace; the first success clears them."""
        failures = self.create_failures.get(key, {})
        if not failures:
            self._failed_attempts.pop(key, None)
            return requeue_after if not before else 0.1  # the condition must clear
        if set(failures) != set(before):
            self._failed_attempts[key] = 0
            return 0.1
        attempts = self._failed_attempts[key] = self._failed_attempts.get(key, 0) + 1
        first, most = CREATE_RETRY_SECONDS
        retry = min(most, first * 2.0 ** (attempts - 1))
        return min(requeue_after, retry) if requeue_after is not None else retry

    def _limit_node_loss(self, key: Key, plan: Plan) -> None:
        kept = [d for d in plan.deletes if not d.force or self.node_loss_budget.allow(key)]
        if len(kept) < len(plan.deletes):
            logger.warning(
                "%s/%s: %d deletion(s) for node loss wait for the rate limit",
                *key,
                len(plan.deletes) - len(kept),
            )
            plan.deletes = kept
            plan.requeue_after = min(plan.requeue_after or NODE_LOSS_RETRY_SECONDS, NODE_LOSS_RETRY_SECONDS)

    async def execute(self, key: Key, observed: Observed, plan: Plan) -> None:
        """In order: status first (the decision), labels then routing, hooks, pod deletes, creates, the
        owned objects, the route, then the owned objects to delete (a pod's Service goes only once the
        route no longer sends to it), Jobs, and last the Events."""
        if plan.write_status:
            await self._write_status(key, plan.status)
        await self._move_labels_and_route(key, plan)
        await self._call_hooks(key, observed, plan)
        await self._delete_pods(key, plan)
        failures: dict[str, str] = {}
        await asyncio.gather(*(self._create(obj, failures) for obj in (*plan.creates, *plan.owned_creates)))
        await self._update_owned(key[0], plan)
        routed = await self._update_traffic(key, plan)
        await self._delete_owned(key[0], plan, routed)
        for job_name in plan.job_deletes:
            await self._ignore_missing(
                self.client.delete(kinds.JOB.kind, key[0], job_name, propagation="Background")
            )
        for job in plan.job_creates:
            await self._create(job, failures)
        self._set_failures(key, failures)
        refused = {name.removeprefix(f"{kinds.POD.kind} ") for name in failures}
        for event in plan.events:
            if not _only_refused(event, plan.creates, refused):
                await self._post_event(observed, event)

    async def _move_labels_and_route(self, key: Key, plan: Plan) -> None:
        for patch in plan.patches:  # in order: demotions before promotions
            await self._forget_if_missing(
                key, patch.name, self._patch_pod(key, patch.name, patch.labels, patch.annotations)
            )
        if plan.routing is not None:  # the labels moved: route at once, before hooks and the rest
            await self._route(key, plan.routing)

    async def _route(self, key: Key, endpoint_slice: dict[str, Any]) -> None:
        """A slice not in the view yet is created: an apply that creates cost the API server seven times a
        create (158 against 21 ms each at 1,000 resources). One that exists is applied over the version the
        view holds; either write meeting a newer slice means the view is behind (StaleView)."""
        seen = self.store.endpoint_slices.get(key).get(endpoint_slice["metadata"]["name"])
        try:
            if seen is None:
                self._remember(await self.client.create(endpoint_slice))
            else:
                metadata = {**endpoint_slice["metadata"], **_version_of(seen)}
                self._remember(await self.client.apply({**endpoint_slice, "metadata": metadata}))
        except ApiError as error:
            if error.conflict:
                raise StaleView(f"{key[1]}-primary's EndpointSlice: {error}") from error
            raise

    async def _call_hooks(self, key: Key, observed: Observed, plan: Plan) -> None:
        if plan.hooks:
            self.client.ensure_leading()  # hooks do not go through the client: ask the same guard first
        for hook, problem in await call_hooks(plan.hooks):
            await self._post_event(
                observed,
                EventSpec("Warning", EventReason.HOOK_FAILED, f"{hook.role} hook of {hook.pod}: {problem}"),
            )
        if plan.hooks_term:
            await self._mark_hooks_called(key, plan)

    async def _delete_pods(self, key: Key, plan: Plan) -> None:
        await asyncio.gather(
            *(
                self._forget_if_missing(
                    key,
                    d.name,
                    self.client.delete(
                        kinds.POD.kind,
                        key[0],
                        d.name,
                        uid=d.uid,
                        resource_version=_resource_version(self.store.pods.get(key, {}).get(d.name)),
                        grace_seconds=0 if d.force else None,
                    ),
                )
                for d in plan.deletes
            )
        )

    async def _update_owned(self, namespace: str, plan: Plan) -> None:
        for removal in plan.metadata_removals:
            await self._ignore_missing(self._remove_metadata(namespace, removal))
        for obj in plan.applies:
            self._remember(await self.client.apply(obj))

    async def _delete_owned(self, namespace: str, plan: Plan, routed: bool) -> None:
        """After the selector went (its controller would recreate them) and after the route moved: a pod's
        Service stays while a route the server refused may still send to it."""
        for kind, name in plan.owned_deletes:
            if kind == kinds.SERVICE.kind and not routed:
                continue
            await self._ignore_missing(self.client.delete(kind, namespace, name))

    async def _update_traffic(self, key: Key, plan: Plan) -> bool:
        """The route and the provider's object: a refused, failing, hanging or stale write (a webhook, a
        missing permission, a Gateway API outage, another writer) shows in TrafficPolicyReady and ends nothing
        else (the Events and Jobs after it still go out); the plain Services route meanwhile. False when a
        write did not go through: a pod's Service the route may still send to then stays."""
        try:
            await asyncio.wait_for(self._write_traffic(key, plan), TRAFFIC_WRITE_TIMEOUT_SECONDS)
        except TimeoutError:
            logger.warning("%s/%s: a traffic object's write got no answer", *key)
            self.traffic.failed(key, f"a write got no answer within {TRAFFIC_WRITE_TIMEOUT_SECONDS:g} s")
            return False
        except ApiError as error:
            if error.conflict:  # someone wrote it since our read: read again, and write only from that
                logger.info("%s/%s: a traffic object changed since it was read: %s", *key, error)
                self.traffic.forget(key)
                return False
            logger.warning("%s/%s: writing a traffic object failed: %s", *key, error)
            self.traffic.failed(key, f"{error.status} {error.reason}: {error.message}")
            return False
        return True

    async def _apply_seen(self, key: Key, obj: dict[str, Any]) -> None:
        """Over the version read, so another writer's newer object is not overwritten. The Gateway's
        controller writes the route's status after each of our writes: a conflict whose fresh read still
        holds the spec we read is only that, and the apply goes over the fresh version."""
        seen = self.traffic.seen(key, obj["kind"])
        for attempt in range(TRAFFIC_APPLY_ATTEMPTS):
            metadata = {**obj["metadata"], **_version_of(seen)}
            try:
                self.traffic.wrote(key, await self.client.apply({**obj, "metadata": metadata}), obj["kind"])
                return
            except ApiError as error:
                if not error.conflict or seen is None or attempt + 1 == TRAFFIC_APPLY_ATTEMPTS:
                    raise
                try:
                    fresh = await self.client.get(obj["kind"], key[0], obj["metadata"]["name"])
                except ApiError:
                    raise error from None
                same_spec = fresh.get("spec") == seen.get("spec")
                if not same_spec or _resource_version(fresh) == _resource_version(seen):
                    raise  # another writer's spec: our read is stale
                seen = fresh

    async def _delete_seen(self, key: Key, kind: str, name: str, seen: Mapping[str, Any] | None) -> None:
        """The very object the view judged (its uid and version): not one made or changed since."""
        uid = str(((seen or {}).get("metadata") or {}).get("uid") or "")
        try:
            await self.client.delete(kind, key[0], name, uid=uid, resource_version=_resource_version(seen))
        except ApiError as error:
            if not error.not_found:
                raise

    async def _write_traffic(self, key: Key, plan: Plan) -> None:
        for kind, name in plan.traffic_deletes:
            await self._delete_seen(key, kind, name, self.traffic.seen(key, kind))
            self.traffic.wrote(key, None, kind)
        for obj in plan.traffic_applies:
            await self._apply_seen(key, obj)

    def _set_failures(self, key: Key, failures: dict[str, str]) -> None:
        if failures:
            self.create_failures[key] = failures
        else:
            self.create_failures.pop(key, None)

    async def _mark_hooks_called(self, key: Key, plan: Plan) -> None:
        """Only after the calls: a reconcile that dies before this line calls them again (at least once)."""
        status = copy.deepcopy(plan.status)
        for record in status.get("failovers") or []:
            if record["term"] == plan.hooks_term:
                record["hooksCalledAt"] = format_time(self.clock())
        await self._write_status(key, status)

    async def _write_status(self, key: Key, status: FtsStatus) -> None:
        """The status becomes exactly `status`: the merge patch names (null) what it no longer has, from the
        status this very resourceVersion holds, which the precondition makes the server's too."""
        body = self.store.resources[key]
        patch = {
            "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
            "status": merge_patch(body.get("status") or {}, status),
        }
        try:
            updated = await self.client.merge_patch(names.KIND, key[0], key[1], patch, subresource="status")
        except ApiError as error:
            if error.conflict:
                raise StaleStatus(str(error)) from error
            if error.not_found:
                return
            raise
        self.store.put_resource(updated)

    async def _patch_pod(
        self, key: Key, name: str, labels: dict[str, str], annotations: dict[str, str]
    ) -> None:
        """Over the version the view holds: a pod someone changed since (another operator's new term) is
        not relabelled from what we saw before."""
        seen = self.store.pods.get(key, {}).get(name)
        metadata = {"labels": labels, "annotations": annotations, **_version_of(seen)}
        updated = await self.client.merge_patch(kinds.POD.kind, key[0], name, {"metadata": metadata})
        self.store.put_pod(updated)

    async def _create(self, body: dict[str, Any], failures: dict[str, str]) -> None:
        """A create the server refuses for good (policy, quota, validation) is recorded in `failures`,
        in the server's words; transient errors and lost leadership still abort the reconcile."""
        try:
            if body["kind"] == kinds.SERVICE.kind:
                async with self._service_creates:
                    created = await self.client.create(body)
            else:
                created = await self.client.create(body)
        except ApiError as error:
            if error.conflict:  # already exists: our view was behind; the watch will catch up
                return
            if error.namespace_terminating:  # everything in it is going: nothing to retry or report
                self._note_terminating(str(body["metadata"].get("namespace") or ""))
                logger.debug("not creating %s: %s", body["metadata"].get("name"), error.message)
                return
            if error.transient or error.status == 0:
                raise
            failures[f"{body['kind']} {body['metadata'].get('name')}"] = error.message
            logger.warning("the API server refused %s: %s", body["metadata"].get("name"), error)
            return
        self._remember(created)

    async def _remove_metadata(self, namespace: str, removal: MetadataRemoval) -> None:
        self._remember(await self.client.merge_patch(removal.kind, namespace, removal.name, removal.patch))

    def _remember(self, obj: dict[str, Any]) -> None:
        """Our own writes are in the view at once, so the next reconcile does not repeat them."""
        kind = kinds.BY_KIND.get(str(obj.get("kind")))
        if kind is not None and kind.owned:
            self.store.put_owned(kind.kind, obj)

    async def _forget_if_missing(self, key: Key, pod: str, call: Awaitable[Any]) -> None:
        """A pod the API says is gone leaves the view at once: its delete event may have fallen between
        the startup LIST and the start of the watch, and nothing else would ever drop it."""
        try:
            await call
        except ApiError as error:
            if error.not_found and (body := self.store.pods.get(key, {}).get(pod)) is not None:
                self.store.drop_pod(body)
            if error.conflict:  # our view's resourceVersion or uid of the pod is not the server's
                raise StaleView(f"pod {pod}: {error}") from error
            if not error.not_found:
                raise

    @staticmethod
    async def _ignore_missing(call: Awaitable[Any]) -> None:
        try:
            await call
        except ApiError as error:
            if not (error.not_found or error.conflict):
                raise

    async def _post_event(self, observed: Observed, event: EventSpec) -> None:
        fts = observed.fts
        now = format_time(self.clock())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{fts.name}.", "namespace": fts.namespace},
            "involvedObject": {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": fts.name,
                "namespace": fts.namespace,
                "uid": fts.uid,
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": names.COMPONENT},
            "reportingComponent": names.REPORTING_COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.client.create(body, strict=False)
        except ApiError as error:
            if error.namespace_terminating:
                self._note_terminating(fts.namespace)
                return
            logger.warning(
                "could not post event %s for %s/%s: %s", event.reason, fts.namespace, fts.name, error
            )
