"""The fault proxy without a cluster: request matching and fault selection, then the proxy itself in
front of a small plain-HTTP stand-in for the API server on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from e2e.fault_proxy import (
    WRITES,
    Fault,
    FaultProxy,
    FaultTable,
    Match,
    Mode,
    RequestInfo,
    RequestLog,
    error_status,
    kubeconfig_document,
)

from ftso.credentials import load_credentials

GET_POD = RequestInfo("GET", "/api/v1/namespaces/a/pods/p", {}, "kubectl/v1.36")
WATCH_PODS = RequestInfo("GET", "/api/v1/namespaces/a/pods", {"watch": "true"}, "kopf/1.45")
RENEW_LEASE = RequestInfo("PUT", "/apis/coordination.k8s.io/v1/namespaces/a/leases/ftso", {}, "ftso-operator")


def test_match_by_method_path_user_agent_and_watch() -> None:
    assert Match()(GET_POD)
    assert Match(method=WRITES)(RENEW_LEASE)
    assert not Match(method=WRITES)(GET_POD)
    assert Match(method="put")(RENEW_LEASE)  # methods are matched whole, in any case
    assert not Match(method="P")(RENEW_LEASE)
    assert Match(path=r"/leases/")(RENEW_LEASE)
    assert not Match(path=r"/leases/")(GET_POD)
    assert Match(user_agent="^kopf")(WATCH_PODS)
    assert not Match(user_agent="^kopf")(GET_POD)
    assert Match(watch=True)(WATCH_PODS)
    assert not Match(watch=True)(GET_POD)
    assert Match(watch=False)(GET_POD)
    assert not Match(method="PUT", path="/pods/")(RENEW_LEASE)  # every pattern must hold


def test_watch_requests_are_recognised() -> None:
    assert RequestInfo("GET", "/api/v1/pods", {"watch": "1"}).watch
    assert RequestInfo("GET", "/api/v1/watch/pods").watch
    assert not RequestInfo("GET", "/api/v1/pods", {"watch": "false"}).watch
    assert not GET_POD.watch


def test_first_matching_fault_wins_and_counts_its_hits() -> None:
    table = FaultTable()
    lease = table.add(Fault.drop(Match(path="/leases/")))
    writes = table.add(Fault.error(429, Match(method=WRITES), retry_after=1))
    assert table.select(RENEW_LEASE) is lease
    assert table.select(RequestInfo("POST", "/api/v1/namespaces/a/pods")) is writes
    assert table.select(GET_POD) is None
    assert (lease.hits, writes.hits) == (1, 1)
    table.remove(lease)
    assert table.select(RENEW_LEASE) is writes
    table.clear()
    assert table.select(RENEW_LEASE) is None


def test_a_fault_with_times_is_spent_then_the_next_one_applies() -> None:
    table = FaultTable()
    once = table.add(Fault.error(500, times=2))
    always = table.add(Fault.latency(0.1))
    assert [table.select(GET_POD) for _ in range(3)] == [once, once, always]


def test_stream_faults_apply_to_watches_only() -> None:
    table = FaultTable()
    stall = table.add(Fault.stall())
    assert table.select(GET_POD) is None
    assert table.select(WATCH_PODS) is stall
    assert table.claim(stall, WATCH_PODS)
    assert not table.claim(stall, GET_POD)
    table.remove(stall)
    assert not table.claim(stall, WATCH_PODS)  # a removed fault claims nothing


def test_error_bodies_look_like_the_api_servers() -> None:
    throttled = error_status(429, 2)
    assert throttled["kind"] == "Status"
    assert (throttled["code"], throttled["reason"]) == (429, "TooManyRequests")
    assert throttled["details"] == {"retryAfterSeconds": 2}
    assert error_status(503, None)["reason"] == "ServiceUnavailable"
    assert "details" not in error_status(500, None)
    assert error_status(404, None)["reason"] == "NotFound"
    assert error_status(502, None)["reason"] == "BadGateway"
    assert error_status(599, None)["reason"] == "Error"


def test_log_filters_by_match_and_time() -> None:
    log = RequestLog()
    log.add(RENEW_LEASE, None)
    moment = time.time()
    entry = log.add(GET_POD, Fault.error(500))
    assert log.entries() == log.entries(Match(), 0.0)
    assert len(log.entries()) == 2
    assert log.entries(since=moment) == [entry]
    assert [e.method for e in log.entries(Match(method=WRITES))] == ["PUT"]
    assert (entry.fault, entry.user_agent, entry.path) == (Mode.ERROR, "kubectl/v1.36", GET_POD.path)


def test_the_proxys_kubeconfig_is_accepted_by_the_operators_loader(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig_document("http://127.0.0.1:1234")))
    credentials = load_credentials(str(path))
    assert credentials.server == "http://127.0.0.1:1234"
    assert credentials.ssl_context is False
    assert credentials.authorization() == ""


class Upstream:
    """A plain-HTTP stand-in for the API server: objects by path, writes recorded, endless watches."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, Any]] = []
        self.watch_events = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.ServerRunner | None = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.query.get("watch") == "true":
            return await self._watch(request)
        if request.method != "GET":
            self.writes.append((request.method, request.path, await request.json()))
            return web.json_response({"kind": "Pod", "written": True}, status=201)
        return web.json_response(
            {"path": request.path, "ua": request.headers.get("User-Agent")}, headers={"X-Up": "1"}
        )

    async def _watch(self, request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for n in range(1000):
            self.watch_events += 1
            await response.write(json.dumps({"type": "ADDED", "object": {"n": n}}).encode() + b"\n")
            await asyncio.sleep(0.02)
        return response

    def start(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]

        async def serve() -> None:
            self._runner = web.ServerRunner(web.Server(self._handle), shutdown_timeout=0.1)
            await self._runner.setup()
            await web.SockSite(self._runner, sock).start()

        self._loop.run_until_complete(serve())
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._runner = None


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[FaultProxy, Upstream]]:
    upstream = Upstream()
    upstream.start()
    kubeconfig = tmp_path / "upstream"
    kubeconfig.write_text(yaml.safe_dump(kubeconfig_document(f"http://127.0.0.1:{upstream.port}")))
    with FaultProxy(str(kubeconfig)) as started:
        yield started, upstream
    upstream.stop()


def call(proxy: FaultProxy, method: str, path: str, body: Any = None, timeout: float = 5) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.request(
                method, proxy.url + path, json=body, headers={"User-Agent": "unit-test"}
            ) as response,
        ):
            return response.status, dict(await response.json(), **{"_headers": dict(response.headers)})

    return asyncio.run(go())


def test_requests_are_forwarded_and_logged(proxy: tuple[FaultProxy, Upstream]) -> None:
    fault_proxy, upstream = proxy
    status, body = call(fault_proxy, "GET", "/api/v1/namespaces/a/pods/p?x=%2Fy")
    assert (status, body["path"], body["ua"], body["_headers"]["X-Up"]) == (
        200,
        "/api/v1/namespaces/a/pods/p",
        "unit-test",
        "1",
    )
    status, body = call(fault_proxy, "POST", "/api/v1/namespaces/a/pods", {"metadata": {"name": "p"}})
    assert (status, body["written"]) == (201, True)
    assert upstream.writes == [("POST", "/api/v1/namespaces/a/pods", {"metadata": {"name": "p"}})]
    log = fault_proxy.requests()
    assert [(e.method, e.status, e.user_agent, e.fault) for e in log] == [
        ("GET", 200, "unit-test", None),
        ("POST", 201, "unit-test", None),
    ]


def test_an_error_fault_answers_in_the_servers_place(proxy: tuple[FaultProxy, Upstream]) -> None:
    fault_proxy, upstream = proxy
    with fault_proxy.fault(Fault.error(429, Match(method=WRITES), retry_after=3)) as fault:
        status, body = call(fault_proxy, "POST", "/api/v1/namespaces/a/pods", {})
        assert (status, body["reason"], body["_headers"]["Retry-After"]) == (429, "TooManyRequests", "3")
        assert call(fault_proxy, "GET", "/api/v1/pods")[0] == 200
    assert fault.hits == 1
    assert upstream.writes == []
    assert call(fault_proxy, "POST", "/api/v1/namespaces/a/pods", {})[0] == 201


def test_latency_delays_the_answer(proxy: tuple[FaultProxy, Upstream]) -> None:
    fault_proxy, _ = proxy
    with fault_proxy.fault(Fault.latency(0.5)):
        start = time.monotonic()
        assert call(fault_proxy, "GET", "/api/v1/pods")[0] == 200
    assert time.monotonic() - start >= 0.5


def test_a_lost_response_is_applied_but_never_answered(proxy: tuple[FaultProxy, Upstream]) -> None:
    fault_proxy, upstream = proxy
    fault_proxy.add_fault(Fault.lose_response(Match(method=WRITES)))
    with pytest.raises(TimeoutError):
        call(fault_proxy, "PATCH", "/api/v1/namespaces/a/pods/p", {"x": 1}, timeout=0.5)
    assert upstream.writes == [("PATCH", "/api/v1/namespaces/a/pods/p", {"x": 1})]
    assert fault_proxy.requests(Match(method="PATCH"))[0].status is None


def test_a_late_response_comes_after_its_delay(proxy: tuple[FaultProxy, Upstream]) -> None:
    fault_proxy, upstream = proxy
    fault_proxy.add_fault(Fault.lose_response(Match(method=WRITES), delay=1.0))
    with pytest.raises(TimeoutError):
        call(fault_proxy, "PATCH", "/api/v1/namespaces/a/pods/p", {"x": 1}, timeout=0.3)
    start = time.monotonic()
    assert call(fault_proxy, "PATCH", "/api/v1/namespaces/a/pods/p", {"x": 2})[0] == 201
    assert time.monotonic() - start >= 1.0
    assert len(upstream.writes) == 2


def test_a_dropped_request_never_arrives(proxy: tuple[FaultProxy, Upstream]) -> None:
    fault_proxy, upstream = proxy
    fault_proxy.add_fault(Fault.drop(Match(path="/leases/")))
    with pytest.raises(TimeoutError):
        call(fault_proxy, "PUT", RENEW_LEASE.path, {}, timeout=0.5)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        fault_proxy.clear_faults()
        fault_proxy.add_fault(Fault.drop(delay=0.1))
        call(fault_proxy, "PUT", RENEW_LEASE.path, {})
    assert upstream.writes == []


class Watcher:
    """A watch through the proxy on a thread of its own, counting the events it receives."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.events = 0
        self.ended: str = ""
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()

    async def _run(self) -> None:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(self.proxy.url + "/api/v1/pods?watch=true") as response,
            ):
                async for _ in response.content:
                    self.events += 1
            self.ended = "closed"
        except (aiohttp.ClientError, TimeoutError) as error:
            self.ended = type(error).__name__

    def count_after(self, seconds: float) -> int:
        before = self.events
        time.sleep(seconds)
        return self.events - before


def wait_until(probe: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_stall_freezes_an_open_watch_and_new_ones(proxy: tuple[FaultProxy, Upstream]) -> None:
    fault_proxy, upstream = proxy
    open_watch = Watcher(fault_proxy)
    wait_until(lambda: open_watch.events > 3)
    stall = fault_proxy.add_fault(Fault.stall(Match(watch=True)))
    time.sleep(0.1)
    assert open_watch.count_after(0.3) == 0
    new_watch = Watcher(fault_proxy)
    served = upstream.watch_events
    assert new_watch.count_after(0.3) == 0
    assert upstream.watch_events > served  # the server kept sending; the proxy forwarded nothing
    assert stall.hits == 2
    assert not open_watch.ended
    assert call(fault_proxy, "GET", "/api/v1/pods")[0] == 200  # other requests are untouched
    fault_proxy.clear_faults()
    assert Watcher(fault_proxy).count_after(0.3) > 0


def test_a_cut_closes_open_watches_and_refuses_new_ones(proxy: tuple[FaultProxy, Upstream]) -> None:
    fault_proxy, _ = proxy
    open_watch = Watcher(fault_proxy)
    wait_until(lambda: open_watch.events > 3)
    with fault_proxy.fault(Fault.cut()):
        wait_until(lambda: bool(open_watch.ended))
        assert open_watch.ended == "ClientPayloadError"
        new_watch = Watcher(fault_proxy)
        wait_until(lambda: bool(new_watch.ended))
        assert new_watch.events == 0
    again = Watcher(fault_proxy)
    wait_until(lambda: again.events > 0)
    assert fault_proxy.cut_streams(Match(user_agent="no such client")) == 0
    assert fault_proxy.cut_streams() == 1
    wait_until(lambda: bool(again.ended))


def test_an_unreachable_api_server_is_a_502(proxy: tuple[FaultProxy, Upstream]) -> None:
    fault_proxy, upstream = proxy
    upstream.stop()
    status, body = call(fault_proxy, "GET", "/api/v1/pods")
    assert (status, body["reason"]) == (502, "BadGateway")
    assert fault_proxy.requests()[-1].status == 502


def test_the_proxy_counts_what_it_injected(proxy: tuple[FaultProxy, Upstream]) -> None:
    fault_proxy, _ = proxy
    open_watch = Watcher(fault_proxy)
    wait_until(lambda: open_watch.events > 3)
    fault_proxy.add_fault(Fault.error(429, Match(method="POST"), retry_after=1, times=2))
    fault_proxy.add_fault(Fault.error(503, Match(method="PATCH")))
    fault_proxy.add_fault(Fault.stall(Match(watch=True)))  # reaches the watch already open
    assert [call(fault_proxy, "POST", "/api/v1/namespaces/a/pods", {})[0] for _ in range(3)] == [
        429,
        429,
        201,
    ]
    assert call(fault_proxy, "PATCH", "/api/v1/namespaces/a/pods/p", {})[0] == 503
    assert call(fault_proxy, "GET", "/api/v1/pods")[0] == 200
    assert fault_proxy.injected() == {"error 429": 2, "error 503": 1, "stall": 1}
    assert fault_proxy.injected(Match(method="POST")) == {"error 429": 2}
    assert fault_proxy.injected(Match(user_agent="no such client")) == {}


def test_a_fault_that_never_applied_fails_its_block(proxy: tuple[FaultProxy, Upstream]) -> None:
    fault_proxy, _ = proxy
    with (
        pytest.raises(AssertionError, match="applied 0 time"),
        fault_proxy.fault(Fault.error(500, Match(path="/no/such/path"))),
    ):
        assert call(fault_proxy, "GET", "/api/v1/pods")[0] == 200
    with fault_proxy.fault(Fault.error(500, Match(path="/no/such/path")), expect_hits=0):
        pass  # asked for nothing: nothing to prove
    with pytest.raises(ZeroDivisionError), fault_proxy.fault(Fault.latency(0.1)):
        _ = 1 / 0  # the block's own failure is not hidden by the count
