"""The client's write guard, against a real HTTP server on 127.0.0.1: a replica that does not lead sends
no write at all, reads still go out, and the leader election's own Lease requests bypass the guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from ftso.client import Credentials, KubeClient, NotLeader
from ftso.controller import Controller
from ftso.leader import LEASE_SAFETY, LeaderElector, LeaseSettings
from ftso.store import Store

from .test_leader import Clock, FakeLeases

Handler = Callable[[web.Request], Awaitable[web.Response]]
POD = "/api/v1/namespaces/ns/pods/p"


class Server:
    """Records every request that reached it; answers with `answer(request)`."""

    def __init__(self, answer: Callable[[str, str, Any], tuple[int, Any]] | None = None) -> None:
        self.seen: list[tuple[str, str]] = []
        self.answer = answer or (lambda method, path, body: (200, {"kind": "Status"}))

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path))
        body = await request.json() if request.can_read_body else None
        status, payload = self.answer(request.method, request.path, body)
        return web.json_response(payload, status=status)


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[KubeClient]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = KubeClient(Credentials(server=f"http://127.0.0.1:{port}", ssl_context=False))
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()


WRITES = [
    ("POST", "/api/v1/namespaces/ns/pods"),
    ("PUT", POD),
    ("PATCH", POD),
    ("DELETE", POD),
]


def test_a_replica_that_does_not_lead_sends_no_write_but_still_reads() -> None:
    async def scenario() -> list[tuple[str, str]]:
        server = Server()
        async with serving(server) as client:
            client.write_guard = lambda: False
            await client.request("GET", POD)
            for method, path in WRITES:
                with pytest.raises(NotLeader):
                    await client.request(method, path, body={})
            with pytest.raises(NotLeader):
                client.ensure_leading()
        return server.seen

    assert asyncio.run(scenario()) == [("GET", POD)]


@pytest.mark.parametrize("guard", [None, lambda: True])
def test_a_leader_or_a_lone_operator_writes(guard: Callable[[], bool] | None) -> None:
    async def scenario() -> list[tuple[str, str]]:
        server = Server()
        async with serving(server) as client:
            client.write_guard = guard
            client.ensure_leading()
            for method, path in WRITES:
                await client.request(method, path, body={})
        return server.seen

    assert asyncio.run(scenario()) == WRITES


def test_unguarded_requests_go_out_even_when_not_leading() -> None:
    async def scenario() -> list[tuple[str, str]]:
        server = Server()
        async with serving(server) as client:
            client.write_guard = lambda: False
            await client.request("PUT", POD, body={}, guarded=False)
        return server.seen

    assert asyncio.run(scenario()) == [("PUT", POD)]


def test_leadership_lost_while_a_write_waits_to_retry_stops_the_retry() -> None:
    leading = [True]

    def unavailable_once(method: str, path: str, body: Any) -> tuple[int, Any]:
        leading[0] = False  # leadership ends while the client backs off
        return 503, {"reason": "ServiceUnavailable", "message": "busy"}

    async def scenario() -> list[tuple[str, str]]:
        server = Server(unavailable_once)
        async with serving(server) as client:
            client.write_guard = lambda: leading[0]
            with pytest.raises(NotLeader):
                await client.request("PATCH", POD, body={})
        return server.seen

    assert asyncio.run(scenario()) == [("PATCH", POD)]


def test_a_refused_write_aborts_the_reconcile_rather_than_passing_for_missing_or_conflicting() -> None:
    async def scenario() -> list[tuple[str, str]]:
        server = Server()
        async with serving(server) as client:
            client.write_guard = lambda: False
            with pytest.raises(NotLeader):
                await Controller._ignore_missing(client.delete("Pod", "ns", "p"))
            with pytest.raises(NotLeader):
                await Controller(client, Store())._create(
                    {"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}, {}
                )
        return server.seen

    assert asyncio.run(scenario()) == []


def test_the_elector_leads_through_a_guarded_client_and_its_deadline_closes_the_guard() -> None:
    leases = FakeLeases()

    def lease_api(method: str, path: str, body: Any) -> tuple[int, Any]:
        if path.startswith("/apis/coordination.k8s.io/"):
            try:
                return 200, leases.handle(method, path, body)
            except Exception as error:
                return getattr(error, "status", 500), {"message": str(error)}
        return 200, {}

    async def scenario() -> list[tuple[str, str]]:
        server = Server(lease_api)
        clock = Clock()
        async with serving(server) as client:
            elector = LeaderElector(client, LeaseSettings("ns", identity="a"), clock=clock)
            client.write_guard = elector.leading
            with pytest.raises(NotLeader):
                await client.request("PATCH", POD, body={})
            assert await elector.try_acquire_or_renew()  # POST through the closed guard
            await client.request("PATCH", POD, body={})
            clock.advance(4.0 * LEASE_SAFETY)
            with pytest.raises(NotLeader):
                await client.request("PATCH", POD, body={})
            assert await elector.try_acquire_or_renew()  # PUT through the closed guard: leads again
            await client.request("PATCH", POD, body={})
        return [(m, p) for m, p in server.seen if p == POD]

    assert asyncio.run(scenario()) == [("PATCH", POD), ("PATCH", POD)]
