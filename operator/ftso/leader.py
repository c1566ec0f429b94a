"""Leader election over a coordination.k8s.io Lease, so that of several operator replicas exactly one acts.

Every replica watches and keeps its view warm (a hot standby); only the holder of the Lease runs
reconciles. Two rules keep two replicas from ever acting at once, and neither trusts a wall clock:

- The holder may act only until `LEASE_SAFETY` x `lease_seconds` after the start of its last successful
  renewal, timed by its own monotonic clock. `leading()` says so, cheaply, before every write; renewals
  are single requests bounded by the time left, so a hung renewal cannot outlive the lease. When the
  deadline passes, or another holder shows up, leadership ends (`on_lost`).
- A standby takes the Lease only after it has seen the same record (holder, renewTime, resourceVersion)
  for the whole lease duration by its own monotonic clock, as client-go does: the holder's `renewTime`
  is never compared with the local clock, so clock skew between machines cannot steal a live Lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ftso.client import ApiError

logger = logging.getLogger(__name__)

# The holder stops acting at 2/3 of the lease; the last third absorbs writes still in flight.
LEASE_SAFETY = 2 / 3

Record = tuple[str, str, str]


class LeaseApi(Protocol):
    """The part of KubeClient the elector uses (a fake in tests)."""

    async def request(
        self, method: str, path: str, *, body: Any = None, guarded: bool = True, attempts: int | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str = "ftso-operator"
    identity: str = ""
    lease_seconds: float = 4.0
    renew_seconds: float = 1.0
    retry_seconds: float = 0.5


def _micro(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _record(lease: dict[str, Any]) -> Record:
    spec = lease.get("spec") or {}
    version = (lease.get("metadata") or {}).get("resourceVersion")
    return str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""), str(version or "")


def _duration(spec: dict[str, Any], default: float) -> float:
    # The holder's promise, as written in the Lease; ours when it is missing.
    value = spec.get("leaseDurationSeconds")
    return float(value) if isinstance(value, int | float) and value > 0 else default


def _failed(task: asyncio.Task[None]) -> bool:
    if not task.done() or task.cancelled() or task.exception() is None:
        return False
    logger.error("leader election: starting to act failed: %r", task.exception())
    return True


class LeaderElector:
    def __init__(
        self,
        client: LeaseApi,
        settings: LeaseSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock  # monotonic: every decision is timed by it
        self.wall = wall  # only for the timestamps written into the Lease, for people to read
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{settings.namespace}/leases/{settings.name}"
        self.holder = ""  # the Lease's holder as last read or written
        self._deadline: float | None = None  # by `clock`: this replica may act until then
        self._observed: tuple[Record, float] | None = None  # a record and when we first saw it

    def leading(self) -> bool:
        """True while this replica may act; cheap enough to ask before every write."""
        return self._deadline is not None and self.clock() < self._deadline

    def time_left(self) -> float:
        """Seconds this replica may still act: every write attempt ends by then."""
        return 0.0 if self._deadline is None else self._deadline - self.clock()

    def _unchanged_for(self, lease: dict[str, Any]) -> float:
        """How long, by our own clock, the Lease has looked exactly like this."""
        record, now = _record(lease), self.clock()
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, now)
        return now - self._observed[1]

    def _body(
        self, resource_version: str | None, transitions: int, acquired: str | None
    ) -> dict[str, object]:
        metadata: dict[str, object] = {"name": self.settings.name, "namespace": self.settings.namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        now = _micro(self.wall())
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.settings.identity,
                "leaseDurationSeconds": max(1, round(self.settings.lease_seconds)),
                "acquireTime": acquired or now,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }

    async def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        # The Lease itself is written unguarded (it is how one comes to lead) and never retried.
        return await self.client.request(method, path, body=body, guarded=False, attempts=1)

    async def try_acquire_or_renew(self) -> bool:
        """One round: create the Lease if missing, renew it if ours, take it if its record has not
        changed for its whole duration; True when we hold it afterwards."""
        started = self.clock()
        try:
            current = await self._request("GET", self.path)
        except ApiError as error:
            if not error.not_found:
                raise
            return await self._write("POST", self.path.rsplit("/", 1)[0], self._body(None, 0, None), started)
        spec = current.get("spec") or {}
        self.holder = str(spec.get("holderIdentity") or "")
        unchanged = self._unchanged_for(current)
        ours = self.holder == self.settings.identity
        if self.holder and not ours and unchanged < _duration(spec, self.settings.lease_seconds):
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        acquired = str(spec.get("acquireTime")) if ours and spec.get("acquireTime") else None
        body = self._body(current["metadata"]["resourceVersion"], transitions, acquired)
        return await self._write("PUT", self.path, body, started)

    async def _write(self, method: str, path: str, body: dict[str, object], started: float) -> bool:
        try:
            written = await self._request(method, path, body)  # resourceVersion: only one writer wins
        except ApiError as error:
            if error.conflict:
                return False
            raise
        self.holder = self.settings.identity
        self._unchanged_for(written)
        # From the start of the round: the Lease was renewed no earlier than that.
        self._deadline = started + self.settings.lease_seconds * LEASE_SAFETY
        return True

    async def _attempt(self, seconds: float) -> bool:
        """One round, bounded: a renewal that hangs must not outlive the lease."""
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                return await self.try_acquire_or_renew()
        except (ApiError, OSError, TimeoutError, ValueError, KeyError) as error:
            logger.warning("leader election: %s", str(error) or type(error).__name__)
            return False

    async def run(
        self, on_started: Callable[[], Coroutine[Any, Any, None]], on_lost: Callable[[], None]
    ) -> None:
        """Wait to lead, then start `on_started` beside the renewals; call `on_lost` when leadership ends."""
        await self._acquire()
        logger.warning(
            "leader election: %s now leads through Lease %s/%s",
            self.settings.identity,
            self.settings.namespace,
            self.settings.name,
        )
        # Not awaited here: a long start (a slow first LIST) must not hold up the renewals.
        starting = asyncio.create_task(on_started(), name="ftso-leader-start")
        try:
            await self._renew_until_lost(starting)
        except Exception:  # whatever broke, the safe way out is to stop acting
            logger.exception("leader election: renewing failed")
        finally:
            self._deadline = None
            starting.cancel()
        logger.error("leader election: lost the Lease %s/%s", self.settings.namespace, self.settings.name)
        on_lost()

    async def _acquire(self) -> None:
        while True:
            if await self._attempt(self.settings.renew_seconds):
                return
            await asyncio.sleep(self.settings.retry_seconds)

    async def _renew_until_lost(self, starting: asyncio.Task[None]) -> None:
        next_round = self.clock() + self.settings.renew_seconds
        while True:
            # Wake at the deadline at the latest, so that leadership ends on time.
            await asyncio.sleep(max(0.0, min(next_round - self.clock(), self.time_left())))
            if not self.leading() or _failed(starting):
                return
            started = self.clock()
            renewed = await self._attempt(min(self.settings.renew_seconds, self.time_left()))
            if self.holder != self.settings.identity:
                return  # someone else holds the Lease: stop at once
            pause = self.settings.renew_seconds if renewed else self.settings.retry_seconds
            next_round = started + pause
