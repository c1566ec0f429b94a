"""The periodic resync: every resource is looked at each period; the relist from the API comes less often
as the view grows, so that its cost does not grow with the number of objects times the time."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from ftso import handlers, names
from ftso.client import ApiError
from ftso.settings import RELIST_MAX_PERIODS, RELIST_OBJECTS_PER_PERIOD, OperatorSettings
from ftso.store import Store

from .factories import node, offline_runtime, pod


def test_a_small_view_is_relisted_every_period_and_a_big_one_less_often_up_to_a_bound() -> None:
    settings = OperatorSettings(resync_seconds=20.0)
    assert settings.relist_seconds(0) == 20.0
    assert settings.relist_seconds(RELIST_OBJECTS_PER_PERIOD) == 20.0
    assert settings.relist_seconds(RELIST_OBJECTS_PER_PERIOD + 1) == 40.0
    assert settings.relist_seconds(11_000) == 20.0 * 6
    assert settings.relist_seconds(10**7) == 20.0 * RELIST_MAX_PERIODS


def test_the_view_size_counts_every_kind_it_relists() -> None:
    store = Store()
    labels = {names.LABEL_SERVICE: "demo"}
    store.put_resource({"metadata": {"name": "demo", "namespace": "ns", "resourceVersion": "1"}})
    store.put_pod(pod(0))
    store.put_pod(pod(1))
    store.services.put(
        {"metadata": {"name": "demo", "namespace": "ns", "resourceVersion": "2", "labels": labels}}
    )
    store.pdbs.put(
        {"metadata": {"name": "demo", "namespace": "ns", "resourceVersion": "3", "labels": labels}}
    )
    store.put_node(node("node-1"))
    assert store.size() == 6
    store.drop_pod(pod(1))
    assert store.size() == 5


class _Stop(Exception):
    pass


def _run_periods(
    runtime: handlers.Runtime,
    periods: int,
    view_size: int,
    monkeypatch: pytest.MonkeyPatch,
    outcome: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[float], list[float]]:
    """Runs the resync loop for `periods` periods on a clock of our own; returns when it relisted and when
    it queued the resources."""
    now = [1000.0]
    relists: list[float] = []
    looks: list[float] = []
    ticks = [0]

    async def sleep(seconds: float) -> None:
        ticks[0] += 1
        if ticks[0] > periods + 1:  # the first sleep is the short one before the first relist
            raise _Stop
        now[0] += seconds - 0.001  # a sleep may end a hair early

    async def relist() -> None:
        relists.append(now[0])
        now[0] += 0.5  # a relist takes time
        if outcome is not None:
            await outcome()

    monkeypatch.setattr(handlers.asyncio, "sleep", sleep)
    monkeypatch.setattr(handlers.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(runtime, "relist", relist)
    monkeypatch.setattr(runtime.store, "size", lambda: view_size)
    monkeypatch.setattr(runtime.queue, "add", lambda key, **_: looks.append(now[0]))
    runtime.store.put_resource({"metadata": {"name": "demo", "namespace": "ns", "resourceVersion": "1"}})

    async def scenario() -> None:
        with pytest.raises(_Stop):
            await runtime.resync_forever()

    asyncio.run(scenario())
    return relists, looks


def test_the_resync_looks_at_every_resource_each_period_and_relists_by_the_view_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small, looks = _run_periods(offline_runtime(tmp_path, resync_seconds=20.0), 12, 10, monkeypatch)
    assert len(looks) == 13 and len(small) == 13, "a small view: a relist every period"
    big_view = 3 * RELIST_OBJECTS_PER_PERIOD
    big, looks = _run_periods(offline_runtime(tmp_path, resync_seconds=20.0), 12, big_view, monkeypatch)
    assert len(looks) == 13, "every resource is still looked at each period"
    assert len(big) == 5, "the first relist soon after start, then one every third period"
    assert all(59.0 < later - earlier < 62.0 for earlier, later in itertools.pairwise(big))


def test_a_failed_relist_is_tried_again_the_next_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = offline_runtime(tmp_path, resync_seconds=20.0)
    failures = [2]

    async def flaky() -> None:
        if failures[0]:
            failures[0] -= 1
            raise ApiError(503, "ServiceUnavailable", "etcd leader changed")

    relists, _ = _run_periods(runtime, 6, 3 * RELIST_OBJECTS_PER_PERIOD, monkeypatch, flaky)
    # Tried at start (failed), the next period (failed), the one after (taken), then three periods on.
    assert [round((t - relists[0]) / 20) for t in relists] == [0, 1, 2, 5]
