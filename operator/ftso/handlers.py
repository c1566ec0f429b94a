"""The kopf layer, kept thin: every watch event updates the store and queues the owning resource's
reconcile; startup wires the pieces together. Nothing here decides anything."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from ftso import kinds, metrics, names, probes, triage
from ftso.api.spec import node_lost_after_seconds
from ftso.client import ApiError, KubeClient, NotLeader
from ftso.controller import Controller, ViewSettings
from ftso.health import NODE_SILENT_AFTER_SECONDS, node_loss_confirmed_after
from ftso.leader import LeaderElector, LeaseSettings
from ftso.plan import Plan
from ftso.settings import OperatorSettings
from ftso.store import Key, Listing, Store
from ftso.workqueue import WorkQueue

logger = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"
PRIME_BACKOFF_BASE = 0.5
PRIME_BACKOFF_MAX = 30.0
FIRST_RELIST_SECONDS = 5.0


class Runtime:
    """What the handlers share, kept in kopf's memo."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.store = Store()
        self.client = KubeClient.from_environment(settings.kubeconfig, settings.context)
        self.controller = Controller(
            self.client,
            self.store,
            view=ViewSettings(settings.max_lost_node_share, settings.heartbeat_silence_seconds),
        )
        self.controller.on_plan = self._observe_plan
        self.controller.usage.on_news = self.queue_key
        self.controller.traffic.on_news = self.queue_key
        self.queue: WorkQueue[Key] = WorkQueue(
            self.reconcile, workers=settings.workers, observer=metrics.QueueMetrics()
        )
        self.background: list[asyncio.Task[None]] = []
        self.elector: LeaderElector | None = None
        self.primed = False
        self._silent_nodes: set[str] = set()  # nodes that missed a renewal
        self._lost: set[tuple[str, Key]] = set()  # (node, resource) pairs whose loss is confirmed
        self._promoted_at: dict[Key, float] = {}
        self._lease_watch: asyncio.Task[None] | None = None
        self._lease_watch_started = 0.0
        self._heartbeats_in_doubt = False

    def queue_key(self, key: Key) -> None:
        self.queue.add(key)

    async def reconcile(self, key: Key) -> float | None:
        started = time.perf_counter()
        metrics.RECONCILES.inc()
        result = names.ReconcileResult.ERROR
        try:
            requeue_after = await self.controller.reconcile(key)
            result = metrics.reconcile_result(requeue_after)
            return requeue_after
        except NotLeader:
            logger.warning("reconcile of %s/%s stopped: this replica no longer leads", *key)
            result = names.ReconcileResult.SUCCESS  # nothing failed: the new leader takes the key over
            return None  # the process is about to exit
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            metrics.RECONCILE_ERRORS_TOTAL.labels(controller=names.CONTROLLER).inc()
            raise
        finally:
            elapsed = time.perf_counter() - started
            metrics.RECONCILE_SECONDS.observe(elapsed)
            metrics.RECONCILE_TIME.labels(controller=names.CONTROLLER).observe(elapsed)
            metrics.RECONCILE_TOTAL.labels(controller=names.CONTROLLER, result=result).inc()

    def process_state(self) -> probes.ProcessState:
        """What the probes judge; also read from the metrics server's thread (plain reads only)."""
        tasks = list(self.background)
        if self.primed and self._lease_watch is not None:
            tasks.append(self._lease_watch)
        leading = self.elector.leading() if self.elector is not None else True
        return probes.ProcessState(
            elects=self.elector is not None,
            leading=leading,
            primed=self.primed,
            dead_tasks=tuple(t.get_name() for t in tasks if t.done() and not t.cancelled()),
            queue=self.queue.snapshot() if self.primed else None,
        )

    def queue_snapshot(self) -> probes.QueueSnapshot | None:
        return self.queue.snapshot() if self.primed else None

    async def _observe_plan(self, key: Key, plan: Plan) -> None:
        metrics.observe_plan(key, plan)
        if plan.promotion:
            metrics.PROMOTIONS.labels(reason=plan.promotion).inc()
            self._promoted_at[key] = time.monotonic()
        if plan.routed:
            promoted_at = self._promoted_at.pop(key, None)
            if promoted_at is not None:
                metrics.FAILOVER_SECONDS.observe(time.monotonic() - promoted_at)

    async def start(self) -> None:
        """Begin acting: fill the view, then run reconciles, the resync and the heartbeat watch."""
        await self.prime()
        self.queue.start()
        self.primed = True
        metrics.LEADER.set(1)
        self.background += [
            asyncio.create_task(self.resync_forever(), name="ftso-resync"),
            asyncio.create_task(self.watch_heartbeats(), name="ftso-heartbeats"),
        ]
        self._restart_lease_watch()

    async def prime(self) -> None:
        """Fill the store from one LIST of each kind before the first reconcile: a reconcile that saw the
        resource but not yet its pods would create pods that exist and report a wrong status. Retried
        whole, with backoff, until it succeeds: an API hiccup at startup must not leave us dead or blind."""
        delay = PRIME_BACKOFF_BASE
        while True:
            try:
                await self._prime_once()
                return
            except (ApiError, ValueError) as error:
                logger.warning("could not read the cluster's state, retrying in %.1fs: %s", delay, error)
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, PRIME_BACKOFF_MAX)

    async def _prime_once(self) -> None:
        await self.relist()
        for key in list(self.store.resources):
            self.queue.add(key)

    async def follow_node_leases(self) -> None:
        """Node heartbeats, watched by our client: kopf serves only the operator's own namespaces."""

        def on_event(kind: str, lease: dict[str, Any]) -> None:
            if kind != "DELETED":
                self.store.put_lease(lease, datetime.now(UTC))

        await self.client.watch(kinds.LEASE.kind, NODE_LEASE_NAMESPACE, on_event)

    def _restart_lease_watch(self) -> None:
        old = self._lease_watch
        if old is not None and old.done() and not old.cancelled() and old.exception() is not None:
            logger.error("the node heartbeat watch ended, restarting it: %r", old.exception())
        if old is not None:
            old.cancel()
        self._lease_watch = asyncio.create_task(self.follow_node_leases(), name="ftso-node-leases")
        self._lease_watch_started = time.monotonic()

    def _check_heartbeat_silence(self, now: datetime) -> None:
        """A silent heartbeat watch (stalled stream, paused API server, dead task) is restarted; while the
        silence lasts, and when it ends, every resource is looked at (node loss is held meanwhile)."""
        doubt = self.store.heartbeat_doubt(now, self.settings.heartbeat_silence_seconds)
        if bool(doubt) != self._heartbeats_in_doubt:
            self._heartbeats_in_doubt = bool(doubt)
            logger.warning("%s", doubt or "node heartbeats arrive again")
            for key in list(self.store.resources):
                self.queue.add(key)
        watch_dead = self._lease_watch is None or self._lease_watch.done()
        quiet_since_start = (
            time.monotonic() - self._lease_watch_started > self.settings.heartbeat_silence_seconds
        )
        if watch_dead or (doubt and quiet_since_start):
            self._restart_lease_watch()

    async def watch_heartbeats(self) -> None:
        """Leases are renewed every few seconds; reconciling on each renewal would be waste. Instead, look
        four times a second and queue a resource only when one of its nodes turns stale or fresh for it."""
        while True:
            await asyncio.sleep(0.25)
            now = datetime.now(UTC)
            self._check_heartbeat_silence(now)
            self.scan_heartbeats(now)

    def scan_heartbeats(self, now: datetime) -> None:
        """Queue, ahead of routine work, every resource whose node missed a renewal or renews again (a
        partition hold may start or end), and every one for which a node's loss is confirmed or undone."""
        for node, renewed in list(self.store.lease_renewed_at.items()):
            age = (now - renewed).total_seconds()
            silent = age > NODE_SILENT_AFTER_SECONDS
            was_silent = node in self._silent_nodes
            if not silent and not was_silent:
                continue  # renewing on time, as before: the common case, kept cheap
            keys = self.store.keys_on_node(node)
            if silent != was_silent:
                if silent:
                    self._silent_nodes.add(node)
                else:
                    self._silent_nodes.discard(node)
                for key in keys:
                    self.queue.add(key, urgent=True)
            self._flip_lost(node, keys, age)

    def _flip_lost(self, node: str, keys: set[Key], age: float) -> None:
        for key in keys:
            body = self.store.resources.get(key)
            if body is None:
                self._lost.discard((node, key))
                continue
            lost = age > node_loss_confirmed_after(node_lost_after_seconds(body.get("spec") or {}))
            if ((node, key) in self._lost) != lost:
                if lost:
                    self._lost.add((node, key))
                else:
                    self._lost.discard((node, key))
                self.queue.add(key, urgent=True)

    def resource_changed(self, event_type: str, body: dict[str, Any]) -> None:
        if event_type == "DELETED":
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            self.store.drop_resource(key)
            metrics.forget(key)
            return
        self.queue.add(self.store.put_resource(body), urgent=triage.resource_change_is_urgent(body))

    def owned_changed(self, kind: kinds.Kind, event_type: str, body: dict[str, Any]) -> None:
        key = (
            self.store.drop_owned(kind.kind, body)
            if event_type == "DELETED"
            else self.store.put_owned(kind.kind, body)
        )
        if key is not None:
            resource = self.store.resources.get(key)
            urgent = kind is kinds.POD and triage.pod_change_is_urgent(resource, body)
            self.queue.add(key, urgent=urgent)

    def node_changed(self, event_type: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        previous = self.store.nodes.get(name)
        if event_type == "DELETED":
            keys = self.store.drop_node(name)
        else:
            if (
                previous is not None
                and _ready(previous) == _ready(body)
                and _taints(previous) == _taints(body)
            ):
                self.store.put_node(body)
                return  # a heartbeat that changes nothing we judge by
            keys = self.store.put_node(body)
        for key in keys:
            self.queue.add(key, urgent=True)  # a node lost or back: its primaries may need replacing

    async def resync_forever(self) -> None:
        # The first relist comes soon: kopf's watches start after our startup LIST, and a delete between
        # the two would be in neither.
        delay = min(FIRST_RELIST_SECONDS, self.settings.resync_seconds)
        last_relist = -math.inf
        while True:
            await asyncio.sleep(delay)
            delay = self.settings.resync_seconds
            # Half a period of slack: a sleep may end a hair early, and a relist must not slip a whole period.
            if time.monotonic() - last_relist >= self.settings.relist_seconds(self.store.size()) - delay / 2:
                started = time.monotonic()
                try:
                    await self.relist()
                    last_relist = started
                except ApiError as error:
                    logger.warning("periodic relist failed, the next one will try again: %s", error)
            for key in list(self.store.resources):
                self.queue.add(key)

    async def relist(self) -> None:
        """An authoritative, paged LIST of everything watched: what vanished while a watch was down is
        dropped, what changed is taken, and a view whose versions went back (etcd restored) is reset."""
        await self._relist(kinds.NODE.kind, None, "")
        namespaces: list[str | None] = list(self.settings.namespaces) or [None]
        for namespace in namespaces:
            for kind in kinds.OWNED:
                if await self._relist(kind.kind, namespace, names.LABEL_SERVICE):
                    logger.warning("the API's %s versions went back (etcd restored?): view reset", kind.kind)
            await self._relist(kinds.FTS.kind, namespace, "")

    async def _relist(self, kind: str, namespace: str | None, label_selector: str) -> bool:
        listing: Listing | None = None
        async for items, version in self.client.list_pages(kind, namespace, label_selector):
            listing = listing or self.store.begin_relist(kind, namespace, version)
            self.store.take_listed(listing, items)
        return self.store.end_relist(listing) if listing is not None else False


class EventsOnlyDiffBase(kopf.AnnotationsDiffBaseStorage):
    """No diff base: every handler here takes raw events, which need none. kopf builds one for every event
    all the same, a deep copy of the whole object: a tenth of the operator's CPU at 1,000 resources."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None


def _stop_acting() -> None:
    # Another replica may take over any moment now: end this process at once rather than act beside it.
    logging.getLogger(__name__).error("leadership lost; exiting so that only the new leader acts")
    os._exit(3)


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    ours: OperatorSettings = memo.settings
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = EventsOnlyDiffBase(
        prefix=names.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    if not ours.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # one line per watch event is noise
    # A watch that stalls silently is cut and restarted within a minute; the periodic relist covers the gap.
    settings.watching.server_timeout = 45
    settings.watching.client_timeout = 60
    settings.networking.request_timeout = 30
    # kopf keeps a worker task (and the object's last event) per object while events arrive; with thousands
    # of pods, let idle ones go at once. Its first LIST of each kind is paged so it never holds them all.
    settings.queueing.idle_timeout = 0.1
    settings.watching.chunk_size = 100
    # Only objects we own are streamed to us, not every pod in the cluster.
    for kind in kinds.OWNED:
        settings.watching.label_selectors[kind.plural] = names.LABEL_SERVICE
    settings.peering.standalone = True  # one actor is chosen by our own Lease (leader.py), not kopf peering
    settings.scanning.disabled = True  # serve what exists at startup: no need to read CRDs or namespaces
    runtime = Runtime(ours)
    memo.runtime = runtime
    if ours.leader_election_namespace:
        runtime.elector = elector = LeaderElector(
            runtime.client,
            LeaseSettings(
                namespace=ours.leader_election_namespace,
                name=ours.leader_election_name,
                identity=f"{socket.gethostname()}_{os.getpid()}",
                lease_seconds=ours.lease_seconds,
                renew_seconds=max(0.2, ours.lease_seconds / 4),
            ),
        )
        runtime.client.write_guard = elector.leading  # every write asks first; the Lease's own bypass it
        runtime.client.leadership_left = elector.time_left  # ... and ends before the leadership does
        runtime.background.append(
            asyncio.create_task(elector.run(runtime.start, _stop_acting), name="ftso-leader")
        )
    if ours.metrics_port:
        metrics.serve(
            ours.metrics_port,
            runtime.client,
            runtime.queue_snapshot,
            lambda: probes.readiness(runtime.process_state()),
        )
    if not ours.leader_election_namespace:
        await runtime.start()


@kopf.on.probe(id="operator")
async def operator_alive(memo: Any, **_: Any) -> str:
    """kopf's liveness endpoint (`--liveness`) answers 500 when this fails: a dead task or a stuck queue.
    PermanentError, so that kopf does not retry the probe with backoff while the kubelet waits. Async, so
    that it runs in the event loop with the tasks it looks at (kopf runs plain functions in threads); an
    event loop blocked for good times the probe out."""
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is None:
        return "starting"  # the startup handler has not run yet
    problems = probes.liveness_problems(runtime.process_state(), runtime.settings.stuck_after_seconds)
    if problems:
        logger.error("liveness fails: %s", "; ".join(problems))
        raise kopf.PermanentError("; ".join(problems))
    return probes.readiness(runtime.process_state()).role


@kopf.on.login()
def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """kopf's watches use the same credentials as our client, from the same kubeconfig or service account."""
    credentials = _runtime(memo).client.credentials
    return kopf.ConnectionInfo(
        server=credentials.server,
        ca_path=credentials.ca_path,
        insecure=credentials.insecure,
        certificate_path=credentials.certificate_path,
        private_key_path=credentials.private_key_path,
        token=credentials.authorization().removeprefix("Bearer ") or None,
        scheme="Bearer" if credentials.token or credentials.token_file else None,
    )


@kopf.on.cleanup()
async def shutdown(memo: Any, **_: Any) -> None:
    runtime = _runtime(memo)
    for task in runtime.background:
        task.cancel()
    await runtime.queue.stop()
    await runtime.client.close()


# The event handlers are coroutines: kopf runs plain functions on a thread pool, and the store and the work
# queue belong to the event loop's thread (a wakeup set from another thread can be lost or break the loop).


@kopf.on.event(kinds.FTS.group, kinds.FTS.version, kinds.FTS.plural)
async def resource_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    _runtime(memo).resource_changed(str(event["type"]), dict(event["object"]))


OWNED_EVENT_HANDLERS: dict[str, Callable[..., Awaitable[None]]] = {}


def _follow_owned(kind: kinds.Kind) -> None:
    """One event handler per owned kind, on the objects that carry our label only."""

    async def owned_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        _runtime(memo).owned_changed(kind, str(event["type"]), dict(event["object"]))

    selector = {names.LABEL_SERVICE: kopf.PRESENT}
    kopf.on.event(kind.group, kind.version, kind.plural, id=f"{kind.plural}-event", labels=selector)(
        owned_event
    )
    OWNED_EVENT_HANDLERS[kind.kind] = owned_event


for _kind in kinds.OWNED:
    _follow_owned(_kind)


@kopf.on.event(kinds.NODE.group, kinds.NODE.version, kinds.NODE.plural)
async def node_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    _runtime(memo).node_changed(str(event["type"]), dict(event["object"]))


def _ready(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


def _taints(node: dict[str, Any]) -> list[Any]:
    """An out-of-service taint proves a node's pods stopped: a change is news for its resources."""
    return list((node.get("spec") or {}).get("taints") or [])
