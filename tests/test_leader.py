"""Leader election: only a leader acts, ever. Against an in-memory Lease API, with injected clocks."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ftso import handlers
from ftso.client import ApiError
from ftso.leader import LEASE_SAFETY, LeaderElector, LeaseSettings

from .factories import node, offline_runtime

LEASE = 4.0
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeLeases:
    """One Lease, kept as the API server keeps it: resourceVersions, 404 when missing, 409 on a stale PUT."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0

    def handle(self, method: str, path: str, body: Any) -> dict[str, Any]:
        if method == "GET":
            if self.lease is None:
                raise ApiError(404, "NotFound", path)
            return copy.deepcopy(self.lease)
        current = (self.lease or {}).get("metadata", {}).get("resourceVersion")
        if method == "POST" and current is not None:
            raise ApiError(409, "AlreadyExists", path)
        if method == "PUT" and (current is None or body["metadata"].get("resourceVersion") != current):
            raise ApiError(409, "Conflict", path)
        return self.store(body)

    def store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)


class FakeClient:
    """One replica's connection to the shared FakeLeases; `mode` makes its requests hang or fail."""

    def __init__(self, leases: FakeLeases) -> None:
        self.leases = leases
        self.mode = "ok"
        self.calls: list[tuple[str, bool, int | None]] = []

    async def request(
        self, method: str, path: str, *, body: Any = None, guarded: bool = True, attempts: int | None = None
    ) -> dict[str, Any]:
        self.calls.append((method, guarded, attempts))
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "fail":
            raise ApiError(503, "ServiceUnavailable", "etcd is away")
        await asyncio.sleep(0)
        return self.leases.handle(method, path, body)


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _wall(clock: Callable[[], float], offset: float) -> Callable[[], datetime]:
    return lambda: EPOCH + timedelta(seconds=clock() + offset)


def _elector(
    leases: FakeLeases,
    identity: str,
    clock: Callable[[], float],
    *,
    offset: float = 0.0,
    lease: float = LEASE,
    renew: float = 1.0,
    retry: float = 0.5,
) -> LeaderElector:
    settings = LeaseSettings(
        "ns", identity=identity, lease_seconds=lease, renew_seconds=renew, retry_seconds=retry
    )
    return LeaderElector(FakeClient(leases), settings, clock=clock, wall=_wall(clock, offset))


def _client(elector: LeaderElector) -> FakeClient:
    assert isinstance(elector.client, FakeClient)
    return elector.client


def test_the_holder_stops_leading_before_its_lease_can_expire_while_a_renewal_hangs() -> None:
    async def scenario() -> None:
        leases, clock = FakeLeases(), Clock()
        a, b = _elector(leases, "a", clock), _elector(leases, "b", clock)
        assert await a.try_acquire_or_renew() and a.leading()
        assert not await b.try_acquire_or_renew()  # b first sees a's record now
        _client(a).mode = "hang"
        renewal = asyncio.create_task(a.try_acquire_or_renew())
        await asyncio.sleep(0.01)
        clock.advance(LEASE * LEASE_SAFETY - 0.01)
        assert a.leading()
        clock.advance(0.02)
        assert not a.leading() and not renewal.done()  # ended by the clock, not by the hung request
        clock.advance(LEASE * (1 - LEASE_SAFETY) - 0.02)
        assert not await b.try_acquire_or_renew(), "b may not take the Lease before its duration passed"
        clock.advance(0.01)
        assert await b.try_acquire_or_renew() and b.leading()
        assert not a.leading()
        renewal.cancel()

    asyncio.run(scenario())


@pytest.mark.parametrize(("leader_offset", "standby_offset"), [(0, 5), (0, -5), (-5, 0), (5, 0)])
def test_clock_skew_does_not_let_a_standby_take_a_lease_that_keeps_being_renewed(
    leader_offset: float, standby_offset: float
) -> None:
    async def scenario() -> None:
        leases, clock = FakeLeases(), Clock()
        a = _elector(leases, "a", clock, offset=leader_offset)
        b = _elector(leases, "b", clock, offset=standby_offset)
        assert await a.try_acquire_or_renew()
        for step in range(60):  # 30 s: a renews every second, b looks every half second
            clock.advance(0.5)
            if step % 2:
                assert await a.try_acquire_or_renew()
            assert not await b.try_acquire_or_renew()
            assert a.leading() and not b.leading()

    asyncio.run(scenario())


def test_a_standby_takes_over_only_after_seeing_no_change_for_the_lease_duration() -> None:
    async def scenario() -> None:
        leases, clock = FakeLeases(), Clock()
        a, b = _elector(leases, "a", clock), _elector(leases, "b", clock)
        assert await a.try_acquire_or_renew()
        clock.advance(1)
        assert await a.try_acquire_or_renew()  # a's last renewal
        assert not await b.try_acquire_or_renew()
        clock.advance(LEASE - 0.01)
        assert not await b.try_acquire_or_renew()
        clock.advance(0.01)
        assert await b.try_acquire_or_renew() and b.leading()
        assert leases.lease is not None
        assert leases.lease["spec"]["holderIdentity"] == "b"
        assert leases.lease["spec"]["leaseTransitions"] == 1

    asyncio.run(scenario())


def test_a_new_standby_waits_a_full_duration_even_for_a_lease_whose_renew_time_is_long_past() -> None:
    async def scenario() -> None:
        leases, clock = FakeLeases(), Clock()
        a = _elector(leases, "a", clock, offset=-7200)  # renewTime two hours in the past
        assert await a.try_acquire_or_renew()
        b = _elector(leases, "b", clock)
        for _ in range(7):
            assert not await b.try_acquire_or_renew()
            clock.advance(0.5)
        clock.advance(0.5)
        assert await b.try_acquire_or_renew()

    asyncio.run(scenario())


def test_only_one_of_two_standbys_takes_an_expired_lease() -> None:
    async def scenario() -> None:
        leases, clock = FakeLeases(), Clock()
        a, b, c = (_elector(leases, name, clock) for name in "abc")
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew() and not await c.try_acquire_or_renew()
        clock.advance(LEASE)
        won = await asyncio.gather(b.try_acquire_or_renew(), c.try_acquire_or_renew())
        assert sorted(won) == [False, True]

    asyncio.run(scenario())


def test_the_lease_is_created_when_missing_and_written_unguarded_without_retries() -> None:
    async def scenario() -> None:
        leases, clock = FakeLeases(), Clock()
        a = _elector(leases, "a", clock)
        assert await a.try_acquire_or_renew() and a.leading()
        assert await a.try_acquire_or_renew()
        assert [c[0] for c in _client(a).calls] == ["GET", "POST", "GET", "PUT"]
        assert all(guarded is False and attempts == 1 for _, guarded, attempts in _client(a).calls)

    asyncio.run(scenario())


async def _until(condition: Callable[[], bool]) -> None:
    while True:
        if condition():
            return
        await asyncio.sleep(0.005)


async def _watch_pair(
    a: LeaderElector, b: LeaderElector, break_a: Callable[[], None], on_started: Callable[[], Any]
) -> dict[str, float]:
    """Run both electors, break a once it leads; returns when b leads. Never may both lead at once."""
    events: dict[str, float] = {}

    def lost() -> None:
        events["a lost"] = time.monotonic()

    tasks = [
        asyncio.create_task(a.run(on_started, lost)),
        asyncio.create_task(b.run(on_started, lambda: None)),
    ]
    try:
        async with asyncio.timeout(10):
            await _until(a.leading)
            await asyncio.sleep(0.3)
            break_a()
            while not b.leading():
                assert not (a.leading() and b.leading())
                await asyncio.sleep(0.002)
        events["b leads"] = time.monotonic()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return events


async def _idle() -> None:
    return None


@pytest.mark.parametrize("mode", ["hang", "fail"])
def test_a_holder_whose_renewals_hang_or_fail_gives_up_before_a_standby_takes_over(mode: str) -> None:
    leases = FakeLeases()
    a = _elector(leases, "a", time.monotonic, lease=1.0, renew=0.2, retry=0.05)
    b = _elector(leases, "b", time.monotonic, lease=1.0, renew=0.2, retry=0.05)

    def break_a() -> None:
        _client(a).mode = mode

    events = asyncio.run(_watch_pair(a, b, break_a, _idle))
    assert "a lost" in events, "the holder never noticed that its renewals stopped"
    assert events["a lost"] < events["b leads"]


def test_a_holder_that_sees_another_holder_stops_at_once() -> None:
    async def scenario() -> None:
        leases = FakeLeases()
        a = _elector(leases, "a", time.monotonic, lease=30.0, renew=0.05)
        lost = asyncio.Event()
        task = asyncio.create_task(a.run(_idle, lost.set))
        async with asyncio.timeout(5):
            await _until(a.leading)
            assert leases.lease is not None
            usurped = copy.deepcopy(leases.lease)
            usurped["spec"]["holderIdentity"] = "b"
            leases.store(usurped)
            await lost.wait()
        assert not a.leading()
        await task

    asyncio.run(scenario())


def test_a_slow_start_does_not_hold_up_the_renewals() -> None:
    async def scenario() -> None:
        leases = FakeLeases()
        a = _elector(leases, "a", time.monotonic, lease=0.6, renew=0.1, retry=0.05)
        lost = asyncio.Event()
        started = asyncio.Event()

        async def slow_start() -> None:
            started.set()
            await asyncio.Event().wait()  # a first LIST that takes forever

        task = asyncio.create_task(a.run(slow_start, lost.set))
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.sleep(1.5)
        assert a.leading() and not lost.is_set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_a_failed_start_ends_leadership() -> None:
    async def scenario() -> None:
        leases = FakeLeases()
        a = _elector(leases, "a", time.monotonic, lease=30.0, renew=0.05)
        lost = asyncio.Event()

        async def broken_start() -> None:
            raise RuntimeError("cannot start")

        task = asyncio.create_task(a.run(broken_start, lost.set))
        await asyncio.wait_for(lost.wait(), 5)
        assert not a.leading()
        await task

    asyncio.run(scenario())


class FlakyLister:
    """Answers LISTs, but fails the first `failures` of them as an API server coming up would."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.kinds: list[str] = []

    async def list_pages(
        self, kind: str, namespace: str | None, label_selector: str = ""
    ) -> AsyncIterator[tuple[list[dict[str, Any]], int]]:
        if self.failures:
            self.failures -= 1
            raise ApiError(503, "ServiceUnavailable", "starting")
        self.kinds.append(kind)
        yield ([node("node-0")] if kind == "Node" else []), 1


def test_priming_retries_transient_failures_until_it_has_read_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "PRIME_BACKOFF_BASE", 0.001)
    runtime = offline_runtime(tmp_path)
    lister = FlakyLister(failures=3)
    runtime.client = lister  # type: ignore[assignment]
    asyncio.run(runtime.prime())
    assert "node-0" in runtime.store.nodes
    assert lister.kinds[0] == "Node" and lister.kinds[-1] == "FaultTolerantService"
