"""A work queue of resource keys, as in client-go: a key is never processed twice at once, bursts of
triggers coalesce into one run, failures back off per key, and a run may ask to be repeated later."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

BACKOFF_BASE = 0.2
BACKOFF_MAX = 60.0


class WorkQueue(Generic[K]):
    def __init__(self, process: Callable[[K], Awaitable[float | None]], *, workers: int = 8) -> None:
        self._process = process
        self._workers = workers
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._running: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, key: K) -> None:
        if key in self._running:
            self._dirty.add(key)  # run once more when the current run ends, with fresh state
        elif key not in self._queued:
            self._queued.add(key)
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
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"ftso-worker-{i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
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
                logger.exception(
                    "reconcile of %s failed (%d in a row); retrying in %.1fs", key, failures, retry_after
                )
            finally:
                self._running.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif retry_after is not None:
                self.add_after(key, retry_after)
