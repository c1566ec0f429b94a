"""The probes wired to the running operator: a dead task is seen by the Runtime, and kopf's liveness
endpoint, with our probe handler registered, answers 500 for it and 200 otherwise."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import kopf
import pytest
from kopf._core.engines.indexing import OperatorIndexers
from kopf._core.engines.probing import health_reporter

from ftso import handlers

from .factories import offline_runtime


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _died() -> None:
    raise RuntimeError("the relist loop died")


def test_a_dead_background_task_is_seen_and_fails_liveness(tmp_path: Path) -> None:
    runtime: handlers.Runtime = offline_runtime(tmp_path)

    async def scenario() -> None:
        runtime.background.append(asyncio.create_task(_died(), name="ftso-resync"))
        await asyncio.sleep(0.01)
        assert runtime.process_state().dead_tasks == ("ftso-resync",)
        with pytest.raises(kopf.PermanentError, match="ftso-resync ended"):
            await handlers.operator_alive(memo=kopf.Memo(runtime=runtime))

    asyncio.run(scenario())


def test_a_lone_replica_is_alive_before_and_after_priming(tmp_path: Path) -> None:
    runtime: handlers.Runtime = offline_runtime(tmp_path)

    async def scenario() -> None:
        assert await handlers.operator_alive(memo=kopf.Memo()) == "starting"  # before the startup handler
        assert await handlers.operator_alive(memo=kopf.Memo(runtime=runtime)) == "starting"
        runtime.queue.start()
        runtime.primed = True
        assert await handlers.operator_alive(memo=kopf.Memo(runtime=runtime)) == "leader"
        await runtime.queue.stop()

    asyncio.run(scenario())


async def _get(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status


async def _probe_once(runtime: handlers.Runtime) -> int:
    """One fresh kopf liveness endpoint (kopf keeps an answer 10 seconds), asked once."""
    url = f"http://127.0.0.1:{_free_port()}/healthz"
    ready = asyncio.Event()
    server = asyncio.create_task(
        health_reporter(
            url,
            memo=kopf.Memo(runtime=runtime),
            indices=OperatorIndexers().indices,
            registry=kopf.get_default_registry(),
            settings=kopf.OperatorSettings(),
            ready_flag=ready,
        )
    )
    await ready.wait()
    try:
        return await _get(url)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


def test_kopfs_liveness_endpoint_turns_red_on_a_dead_task(tmp_path: Path) -> None:
    runtime: handlers.Runtime = offline_runtime(tmp_path)

    async def scenario() -> tuple[int, int]:
        healthy = await _probe_once(runtime)
        runtime.background.append(asyncio.create_task(_died(), name="ftso-heartbeats"))
        await asyncio.sleep(0.01)
        return healthy, await _probe_once(runtime)

    assert asyncio.run(scenario()) == (200, 500)
