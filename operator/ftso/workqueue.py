"""A work queue of resource keys, as in client-go: a key is never processed twice at once, bursts of
triggers coalesce into one run, failures back off per key, and a run may ask to be repeated later.

The queue measures itself as client-go's does (adds, waits, work times, retries) through a `QueueObserver`,
so it imports no metrics library; depth and running times are read from `snapshot()` when wanted."""

from __future__ import annotations

import asyncio
import logging
import time
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
        observer: QueueObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._process = process
        self._workers = workers
        self._observer: QueueObserver = observer or _Unobserved()
        self._clock = clock
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: dict[K, float] = {}  # key -> when it was added
        self._running: dict[K, float] = {}  # key -> when its run started
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._last_progress = clock()

    def add(self, key: K) -> None:
        if key in self._running:
            if key not in self._dirty:
                self._observer.added()
            self._dirty.add(key)  # run once more when the current run ends, with fresh state
        elif key not in self._queued:
            self._observer.added()
            self._enqueue(key)

    def _enqueue(self, key: K) -> None:
        self._queued[key] = self._clock()
        self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Run the key after `delay` seconds, unless an earlier run is already scheduled."""
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
            asyncio.create_task(self._worker(), name=f"ftso-worker-{i}") for i in range(self._workers)
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
            workers=self._workers,
            alive_workers=sum(1 for task in list(self._tasks) if not task.done()),
            taken_at=self._clock(),
        )

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
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
