"""The heartbeat watch's bookkeeping: a silent watch is suspected, restarted, and every resource looked at
when the doubt begins and ends."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from ftso import handlers
from ftso.settings import OperatorSettings

from .factories import NOW


def _runtime(tmp_path: Path) -> handlers.Runtime:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    runtime = handlers.Runtime(OperatorSettings(namespaces=("ns",), kubeconfig=str(config)))
    runtime.store.put_resource({"metadata": {"name": "demo", "namespace": "ns", "resourceVersion": "1"}})
    return runtime


def test_a_silent_heartbeat_watch_is_restarted_and_everyone_looked_at(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    started: list[int] = []

    async def follow() -> None:
        started.append(len(started))
        await asyncio.sleep(3600)  # a stream that never says anything again

    runtime.follow_node_leases = follow  # type: ignore[method-assign]
    queued: list[tuple[str, str]] = []
    runtime.queue.add = queued.append  # type: ignore[method-assign]

    async def scenario() -> None:
        runtime.store.put_lease({"metadata": {"name": "node-0"}, "spec": {"renewTime": "t0"}}, NOW)
        runtime._check_heartbeat_silence(NOW + timedelta(seconds=1))  # no watch yet: start one
        await asyncio.sleep(0)
        assert started == [0] and queued == []
        first = runtime._lease_watch
        runtime._lease_watch_started -= 60  # it has been quiet long enough since it started
        runtime._check_heartbeat_silence(NOW + timedelta(seconds=16))
        await asyncio.sleep(0)
        assert started == [0, 1], "the silent watch was replaced"
        assert first is not None and first.cancelled()
        assert queued == [("ns", "demo")], "the doubt begins: every resource looked at"
        # Restarted just now: no second restart before it had its own chance to speak.
        runtime._check_heartbeat_silence(NOW + timedelta(seconds=17))
        await asyncio.sleep(0)
        assert started == [0, 1] and queued == [("ns", "demo")]
        runtime.store.put_lease(
            {"metadata": {"name": "node-0"}, "spec": {"renewTime": "t1"}}, NOW + timedelta(seconds=18)
        )
        runtime._check_heartbeat_silence(NOW + timedelta(seconds=18))
        assert queued == [("ns", "demo"), ("ns", "demo")], "the doubt ends: everyone looked at again"
        assert runtime._lease_watch is not None
        runtime._lease_watch.cancel()

    asyncio.run(scenario())


def test_a_dead_heartbeat_watch_task_is_restarted(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    started: list[int] = []

    async def crash() -> None:
        started.append(1)
        raise RuntimeError("the watch task died")

    runtime.follow_node_leases = crash  # type: ignore[method-assign]

    async def scenario() -> None:
        runtime._check_heartbeat_silence(NOW)
        await asyncio.sleep(0.01)
        runtime._check_heartbeat_silence(NOW)
        await asyncio.sleep(0.01)
        assert len(started) == 2

    asyncio.run(scenario())
