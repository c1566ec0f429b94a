"""A work queue of resource keys, as in client-go: a key is never processed twice at once, bursts of
triggers coalesce into one run, failures back off per key, and a run may ask to be repeated later.

Two lanes: a key added as urgent (its service may need restoring: a primary lost, a switchover) is taken
before every routine key, and one worker takes urgent keys only, so a failover never waits behind a
backlog of creations and resyncs. A key stays urgent through the retries and requeues of its runs until a
run ends with nothing more to do.

The queue measures itself as client-go's does (adds, waits, work times, retries) through a `QueueObserver`,
so it imports no metrics library; depth and running times are read from `snapshot()` when wanted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

from ftso.probes import QueueSnapshot

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

BACKOFF_BASE = 0.2
BACKOFF_MAX = 60.0


class QueueObserver(Protocol):
    """What the queue reports as it goes: client-go's workqueue metrics provider, in short."""

    def added(self) -> None: ...
    def started(self, waited_seconds: float) -> None: ...
    def finished(self, worked_seconds: float) -> None: ...
    def retried(self) -> None: ...


class _Unobserved:
    def added(self) -> None:
        pass

    def started(self, waited_seconds: float) -> None:
        pass

    def finished(self, worked_seconds: float) -> None:
        pass

    def retried(self) -> None:
        pass


class WorkQueue(Generic[K]):
    def __init__(
        self,
        process: Callable[[K], Awaitable[float | None]],
        *,
        workers: int = 8,
        urgent_workers: int = 1,
        observer: QueueObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._process = process
        self._workers = workers
        self._urgent_workers = urgent_workers
        self._observer: QueueObserver = observer or _Unobserved()
        self._clock = clock
        self._lanes: dict[bool, deque[K]] = {True: deque(), False: deque()}  # urgent?: keys in order
        self._queued: dict[K, float] = {}  # key -> when it was added
        self._queued_urgent: dict[K, bool] = {}  # key -> the lane that holds its valid entry
        self._urgent: set[K] = set()  # keys whose next or current run is urgent
        self._wakeup = asyncio.Event()
        self._running: dict[K, float] = {}  # key -> when its run started
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._last_progress = clock()

    def add(self, key: K, *, urgent: bool = False) -> None:
        if urgent:
            self._urgent.add(key)
        if key in self._running:
            if key not in self._dirty:
                self._observer.added()
            self._dirty.add(key)  # run once more when the current run ends, with fresh state
        elif key not in self._queued:
            self._observer.added()
            self._enqueue(key)
        elif urgent and not self._queued_urgent[key]:
            self._put_in_lane(key, urgent=True)  # its routine entry goes stale and is skipped

    def _enqueue(self, key: K) -> None:
        self._queued[key] = self._clock()
        self._put_in_lane(key, urgent=key in self._urgent)

    def _put_in_lane(self, key: K, *, urgent: bool) -> None:
        self._queued_urgent[key] = urgent
        self._lanes[urgent].append(key)
        self._wakeup.set()

    def _take(self, lanes: tuple[bool, ...]) -> K | None:
        """The first valid key of the first lane that has one; entries left by a promotion are dropped."""
        for urgent in lanes:
            lane = self._lanes[urgent]
            while lane:
                key = lane.popleft()
                if self._queued_urgent.get(key) is urgent:
                    del self._queued_urgent[key]
                    return key
        return None

    async def _next(self, lanes: tuple[bool, ...]) -> K:
        while True:
            key = self._take(lanes)
            if key is not None:
                return key
            self._wakeup.clear()  # no await since the look: no add can fall between
            await self._wakeup.wait()

    def add_after(self, key: K, delay: float) -> None:
        """Run the key after `delay` seconds, unless an earlier run is already scheduled; an urgent key
        stays urgent."""
        loop = asyncio.get_running_loop()
        timer = self._timers.get(key)
        when = loop.time() + delay
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def start(self) -> None:
        self._last_progress = self._clock()
        self._tasks = [
            asyncio.create_task(self._worker((True, False)), name=f"ftso-worker-{i}")
            for i in range(self._workers)
        ] + [
            asyncio.create_task(self._worker((True,)), name=f"ftso-urgent-worker-{i}")
            for i in range(self._urgent_workers)
        ]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def snapshot(self) -> QueueSnapshot:
        # list() of a dict's values runs without releasing the GIL: safe from the metrics server's thread.
        return QueueSnapshot(
            depth=len(self._queued),
            waiting_since=tuple(sorted(list(self._queued.values()))),
            running_since=tuple(list(self._running.values())),
            last_progress=self._last_progress,
            workers=self._workers + self._urgent_workers,
            alive_workers=sum(1 for task in list(self._tasks) if not task.done()),
            taken_at=self._clock(),
        )

    async def _worker(self, lanes: tuple[bool, ...]) -> None:
        while True:
            key = await self._next(lanes)
            started = self._clock()
            self._observer.started(started - self._queued.pop(key, started))
            self._running[key] = started
            retry_after: float | None = None
            try:
                retry_after = await self._process(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                retry_after = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (failures - 1))
                self._observer.retried()
                logger.exception(
                    "reconcile of %s failed (%d in a row); retrying in %.1fs", key, failures, retry_after
                )
            finally:
                self._running.pop(key, None)
                self._last_progress = self._clock()
                self._observer.finished(self._last_progress - started)
            if key in self._dirty:
                self._dirty.discard(key)
                self._enqueue(key)  # counted as an add when it was marked dirty
            elif retry_after is not None:
                self.add_after(key, retry_after)
            else:
                self._urgent.discard(key)
