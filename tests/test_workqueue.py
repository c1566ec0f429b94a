"""The work queue: one run per key at a time, bursts coalesced, and urgent keys ahead of routine ones, with
a worker of their own, so that a failover never waits behind a backlog."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ftso.workqueue import WorkQueue


class Runs:
    """A process function that records the order of runs; keys in `held` wait until released."""

    def __init__(self, answers: dict[str, list[float | None]] | None = None) -> None:
        self.order: list[str] = []
        self.running: set[str] = set()
        self.overlaps = 0
        self.held: dict[str, asyncio.Event] = {}
        self.answers = answers or {}

    def hold(self, key: str) -> asyncio.Event:
        self.held[key] = asyncio.Event()
        return self.held[key]

    async def __call__(self, key: str) -> float | None:
        if key in self.running:
            self.overlaps += 1
        self.running.add(key)
        self.order.append(key)
        try:
            if key in self.held:
                await self.held[key].wait()
            await asyncio.sleep(0)
            answers = self.answers.get(key)
            return answers.pop(0) if answers else None
        finally:
            self.running.discard(key)


async def settle(until: Callable[[], bool]) -> None:
    """Waits up to 2 s for `until`."""
    for _ in range(400):
        if until():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the queue did not settle")


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


# One run at a time, bursts coalesced


def test_a_burst_of_adds_runs_the_key_once() -> None:
    async def scenario() -> None:
        runs = Runs()
        queue: WorkQueue[str] = WorkQueue(runs, workers=2)
        for _ in range(5):
            queue.add("a")
        queue.start()
        await settle(lambda: runs.order == ["a"] and not runs.running)
        await asyncio.sleep(0.02)
        await queue.stop()
        assert runs.order == ["a"]

    run(scenario)


def test_a_key_added_while_it_runs_runs_once_more_after_never_alongside() -> None:
    async def scenario() -> None:
        runs = Runs()
        release = runs.hold("a")
        queue: WorkQueue[str] = WorkQueue(runs, workers=3)
        queue.start()
        queue.add("a")
        await settle(lambda: "a" in runs.running)
        queue.add("a")
        queue.add("a", urgent=True)
        await asyncio.sleep(0.02)
        assert runs.order == ["a"]
        del runs.held["a"]
        release.set()
        await settle(lambda: runs.order == ["a", "a"] and not runs.running)
        await queue.stop()
        assert runs.overlaps == 0

    run(scenario)


# Urgent keys first


def test_an_urgent_key_is_taken_before_the_routine_backlog() -> None:
    async def scenario() -> None:
        runs = Runs()
        queue: WorkQueue[str] = WorkQueue(runs, workers=1, urgent_workers=0)
        for key in ("r1", "r2", "r3"):
            queue.add(key)
        queue.add("failover", urgent=True)
        queue.start()
        await settle(lambda: len(runs.order) == 4)
        await queue.stop()
        assert runs.order == ["failover", "r1", "r2", "r3"]

    run(scenario)


def test_a_queued_routine_key_made_urgent_moves_ahead_and_runs_once() -> None:
    async def scenario() -> None:
        runs = Runs()
        queue: WorkQueue[str] = WorkQueue(runs, workers=1, urgent_workers=0)
        for key in ("r1", "r2", "primary-lost"):
            queue.add(key)
        queue.add("primary-lost", urgent=True)
        queue.start()
        await settle(lambda: len(runs.order) == 3)
        await asyncio.sleep(0.02)
        await queue.stop()
        assert runs.order == ["primary-lost", "r1", "r2"]

    run(scenario)


def test_with_every_worker_busy_an_urgent_key_runs_on_its_own_worker() -> None:
    async def scenario() -> None:
        runs = Runs()
        slow = [runs.hold(f"slow{i}") for i in range(2)]
        queue: WorkQueue[str] = WorkQueue(runs, workers=2)
        queue.start()
        queue.add("slow0")
        queue.add("slow1")
        await settle(lambda: runs.running == {"slow0", "slow1"})
        queue.add("routine")
        queue.add("failover", urgent=True)
        await settle(lambda: "failover" in runs.order)
        assert "routine" not in runs.order  # the reserved worker takes urgent keys only
        for release in slow:
            release.set()
        await settle(lambda: "routine" in runs.order)
        await queue.stop()

    run(scenario)


def test_an_urgent_key_stays_urgent_through_its_requeues_until_a_run_ends_with_nothing_to_do() -> None:
    async def scenario() -> None:
        runs = Runs({"failover": [0.01, None]})  # one requeue (the next step), then done
        queue: WorkQueue[str] = WorkQueue(runs, workers=1, urgent_workers=0)
        queue.add("failover", urgent=True)
        queue.start()
        await settle(lambda: runs.order == ["failover"] and not runs.running)
        blocker = runs.hold("blocker")
        queue.add("blocker")
        await settle(lambda: "blocker" in runs.running)
        queue.add("r1")
        await asyncio.sleep(0.05)  # the requeue fires while the worker is busy
        blocker.set()
        await settle(lambda: len(runs.order) == 4)
        assert runs.order == ["failover", "blocker", "failover", "r1"]
        # Done now: a later routine add is routine again.
        runs.hold("blocker2")
        queue.add("blocker2")
        await settle(lambda: "blocker2" in runs.running)
        queue.add("r2")
        queue.add("failover")
        runs.held["blocker2"].set()
        await settle(lambda: len(runs.order) == 7)
        await queue.stop()
        assert runs.order[-2:] == ["r2", "failover"]

    run(scenario)


# Failures


def test_a_failing_key_backs_off_and_does_not_hold_the_others() -> None:
    async def scenario() -> None:
        order: list[str] = []

        async def process(key: str) -> float | None:
            order.append(key)
            if key == "bad":
                raise RuntimeError("refused")
            return None

        queue: WorkQueue[str] = WorkQueue(process, workers=1, urgent_workers=0)
        queue.add("bad")
        queue.start()
        await settle(lambda: order.count("bad") == 2)  # retried after 0.2 s
        for key in ("a", "b"):
            queue.add(key)
        await settle(lambda: {"a", "b"} <= set(order))
        await queue.stop()
        assert order.count("bad") == 2  # its third try is 0.4 s away; the others did not wait for it

    run(scenario)
