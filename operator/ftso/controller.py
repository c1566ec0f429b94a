"""Observe -> decide -> act for one FaultTolerantService: the glue between the store, the pure
`reconcile.decide` and the API client. It holds no decisions of its own."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ftso import kinds, names
from ftso.checkpoints import job_view
from ftso.client import ApiError, KubeClient
from ftso.hooks import call_hooks
from ftso.model import format_time, node_view, parse_time, pod_view
from ftso.names import EventReason
from ftso.plan import EventSpec, Plan
from ftso.reconcile import FtsView, Observed, decide
from ftso.settings import OperatorSettings
from ftso.status import FtsStatus
from ftso.store import Key, Store

logger = logging.getLogger(__name__)


class StaleStatus(Exception):
    """Someone wrote the resource since we read it; the reconcile runs again on fresh state."""


@dataclass(frozen=True)
class ViewSettings:
    """How far the operator trusts its own view of the nodes."""

    max_lost_node_share: float = OperatorSettings.max_lost_node_share
    heartbeat_silence_seconds: float = OperatorSettings.heartbeat_silence_seconds


def observe(store: Store, key: Key, now: datetime, view: ViewSettings = ViewSettings()) -> Observed | None:
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
        pods=tuple(pod_view(p, key[1]) for p in owned),
        nodes=nodes,
        services=dict(store.services.get(key)),
        pdb=store.pdbs.get(key).get(key[1]),
        now=now,
        primary_endpoints=store.ready_addresses(key, f"{key[1]}-primary"),
        jobs=tuple(
            job_view(j)
            for j in store.jobs.get(key).values()
            if any(ref.get("uid") == uid for ref in (j.get("metadata") or {}).get("ownerReferences") or [])
        ),
        node_view_in_doubt=store.heartbeat_doubt(now, view.heartbeat_silence_seconds),
        max_lost_node_share=view.max_lost_node_share,
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


class Controller:
    def __init__(
        self,
        client: KubeClient,
        store: Store,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        view: ViewSettings = ViewSettings(),
        node_loss_budget: NodeLossBudget | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.clock = clock
        self.view = view
        self.node_loss_budget = node_loss_budget or NodeLossBudget()
        self.instance = socket.gethostname()
        self.on_plan: Callable[[Key, Plan], Awaitable[None]] | None = None

    async def reconcile(self, key: Key) -> float | None:
        observed = observe(self.store, key, self.clock(), self.view)
        if observed is None:
            return None
        plan = decide(observed)
        self._limit_node_loss(key, plan)
        await self.execute(key, observed, plan)
        if self.on_plan is not None:
            await self.on_plan(key, plan)
        return plan.requeue_after

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
        namespace = key[0]
        if plan.write_status:
            await self._write_status(key, plan.status)
        for patch in plan.patches:  # in order: demotions before promotions
            await self._forget_if_missing(
                key, patch.name, self._patch_pod(namespace, patch.name, patch.labels, patch.annotations)
            )
        if plan.hooks:
            self.client.ensure_leading()  # hooks do not go through the client: ask the same guard first
        for hook, problem in await call_hooks(plan.hooks):
            await self._post_event(
                observed,
                EventSpec("Warning", EventReason.HOOK_FAILED, f"{hook.role} hook of {hook.pod}: {problem}"),
            )
        await asyncio.gather(
            *(
                self._forget_if_missing(
                    key,
                    d.name,
                    self.client.delete(
                        kinds.POD.kind, namespace, d.name, uid=d.uid, grace_seconds=0 if d.force else None
                    ),
                )
                for d in plan.deletes
            )
        )
        await asyncio.gather(
            *(self._create(pod) for pod in plan.creates), *(self._create(obj) for obj in plan.owned_creates)
        )
        for obj in plan.applies:
            self._remember(await self.client.apply(obj))
        for job_name in plan.job_deletes:
            await self._ignore_missing(
                self.client.delete(kinds.JOB.kind, namespace, job_name, propagation="Background")
            )
        for job in plan.job_creates:
            await self._create(job)
        for event in plan.events:
            await self._post_event(observed, event)

    async def _write_status(self, key: Key, status: FtsStatus) -> None:
        body = self.store.resources[key]
        patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]}, "status": status}
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
        self, namespace: str, name: str, labels: dict[str, str], annotations: dict[str, str]
    ) -> None:
        updated = await self.client.merge_patch(
            kinds.POD.kind, namespace, name, {"metadata": {"labels": labels, "annotations": annotations}}
        )
        self.store.put_pod(updated)

    async def _create(self, body: dict[str, Any]) -> None:
        try:
            created = await self.client.create(body)
        except ApiError as error:
            if error.conflict:  # already exists: our view was behind; the watch will catch up
                return
            raise
        self._remember(created)

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
            if not (error.not_found or error.conflict):
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
            await self.client.create(body)
        except ApiError as error:
            logger.warning(
                "could not post event %s for %s/%s: %s", event.reason, fts.namespace, fts.name, error
            )
