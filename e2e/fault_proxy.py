"""A fault-injecting proxy on loopback in front of the real API server, for tests.

Clients (the operator, kubectl, a test's `Kube`) speak plain HTTP to 127.0.0.1:<port> through a kubeconfig
the proxy writes; the proxy forwards every request to the API server over TLS with the credentials of the
kubeconfig it was given, relaying responses (watch streams too) chunk by chunk. Faults, switched at run time
from any thread, answer in its place (429, 500, 503), add latency, apply a write but lose its answer, drop a
request, or stall or cut watch streams, for the requests a `Match` selects (method, path, User-Agent). Every
request is logged (time, method, path, status, User-Agent, the fault it met) for assertions afterwards, and
`injected()` counts what the proxy did in the server's place: a fault that never applied proved nothing, so
`fault()` fails its block when the fault was never hit.

    with FaultProxy(kubeconfig) as proxy:
        proxied = proxy.write_kubeconfig(tmp_path / "kubeconfig")
        with proxy.fault(Fault.error(429, Match(method=WRITES), retry_after=1)):
            ...
        assert proxy.injected(Match(user_agent="ftso"))["error 429"] > 0
        assert not proxy.requests(Match(method=WRITES, user_agent="ftso"), since=moment)
"""

from __future__ import annotations

import asyncio
import collections
import enum
import http
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ftso.credentials import load_credentials

T = TypeVar("T")
WRITES = "POST|PUT|PATCH|DELETE"
# Headers that describe one hop, not the message; aiohttp sets its own on each side.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


class Mode(enum.Enum):
    ERROR = "error"  # answer `status` in the API server's place; nothing is forwarded
    LATENCY = "latency"  # wait `delay` seconds, then forward
    LOSE_RESPONSE = "lose-response"  # forward (a write is applied); answer after `delay`, or never
    DROP = "drop"  # forward nothing, answer nothing; close after `delay`, or never
    STALL = "stall"  # a watch stream stays open, and nothing more reaches the client
    CUT = "cut"  # a watch stream's connection is closed


# Modes that only apply to watch streams, including streams already open when the fault is set.
STREAM_MODES = frozenset({Mode.STALL, Mode.CUT})


@dataclass(frozen=True)
class RequestInfo:
    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    user_agent: str = ""

    @property
    def watch(self) -> bool:
        return self.query.get("watch", "").lower() in ("1", "true") or "/watch/" in self.path


@dataclass(frozen=True)
class Match:
    """Which requests something applies to: every pattern given must match (method: full match; path and
    user_agent: search); `watch` limits it to watches (True) or to other requests (False)."""

    method: str = ""
    path: str = ""
    user_agent: str = ""
    watch: bool | None = None

    def __call__(self, request: RequestInfo) -> bool:
        return (
            (not self.method or re.fullmatch(self.method, request.method, re.IGNORECASE) is not None)
            and (not self.path or re.search(self.path, request.path) is not None)
            and (not self.user_agent or re.search(self.user_agent, request.user_agent) is not None)
            and (self.watch is None or self.watch == request.watch)
        )


ANY = Match()


@dataclass(eq=False)
class Fault:
    mode: Mode
    match: Match = ANY
    status: int = 503
    retry_after: int | None = None
    delay: float | None = None
    times: int | None = None  # None: every matching request; else only the first `times`
    hits: int = 0

    @classmethod
    def error(
        cls, status: int, match: Match = ANY, *, retry_after: int | None = None, times: int | None = None
    ) -> Fault:
        return cls(Mode.ERROR, match, status=status, retry_after=retry_after, times=times)

    @classmethod
    def latency(cls, seconds: float, match: Match = ANY, *, times: int | None = None) -> Fault:
        return cls(Mode.LATENCY, match, delay=seconds, times=times)

    @classmethod
    def lose_response(
        cls, match: Match = ANY, *, delay: float | None = None, times: int | None = None
    ) -> Fault:
        return cls(Mode.LOSE_RESPONSE, match, delay=delay, times=times)

    @classmethod
    def drop(cls, match: Match = ANY, *, delay: float | None = None, times: int | None = None) -> Fault:
        return cls(Mode.DROP, match, delay=delay, times=times)

    @classmethod
    def stall(cls, match: Match = ANY, *, times: int | None = None) -> Fault:
        return cls(Mode.STALL, match, times=times)

    @classmethod
    def cut(cls, match: Match = ANY, *, times: int | None = None) -> Fault:
        return cls(Mode.CUT, match, times=times)

    def applies(self, request: RequestInfo) -> bool:
        spent = self.times is not None and self.hits >= self.times
        return not spent and self.match(request) and (self.mode not in STREAM_MODES or request.watch)


class FaultTable:
    """The faults in force, first match wins; shared between the test's thread and the proxy's loop."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if f is not fault]

    def clear(self) -> None:
        with self._lock:
            self._faults = []

    def select(self, request: RequestInfo) -> Fault | None:
        """The fault this request meets, counted as a hit; None: forward it untouched."""
        with self._lock:
            for fault in self._faults:
                if fault.applies(request):
                    fault.hits += 1
                    return fault
        return None

    def claim(self, fault: Fault, request: RequestInfo) -> bool:
        """Whether `fault`, if still in force, applies to a request already under way (counted as a hit)."""
        with self._lock:
            if any(f is fault for f in self._faults) and fault.applies(request):
                fault.hits += 1
                return True
        return False


@dataclass(eq=False)
class LoggedRequest:
    time: float  # time.time() when the request arrived
    request: RequestInfo
    fault: Mode | None
    status: int | None = None  # what the client got; None: no answer (dropped, lost, stalled, cut)

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def path(self) -> str:
        return self.request.path

    @property
    def user_agent(self) -> str:
        return self.request.user_agent

    @property
    def injected(self) -> str:
        """What the proxy did to this request: "error 429", "latency", "stall", ...; "" for nothing."""
        if self.fault is None:
            return ""
        return f"{self.fault.value} {self.status}" if self.fault is Mode.ERROR else self.fault.value


class RequestLog:
    def __init__(self) -> None:
        self._entries: list[LoggedRequest] = []
        self._lock = threading.Lock()

    def add(self, request: RequestInfo, fault: Fault | None) -> LoggedRequest:
        entry = LoggedRequest(time.time(), request, fault.mode if fault else None)
        with self._lock:
            self._entries.append(entry)
        return entry

    def entries(self, match: Match = ANY, since: float = 0.0) -> list[LoggedRequest]:
        with self._lock:
            return [e for e in self._entries if e.time >= since and match(e.request)]

    def injected(self, match: Match = ANY, since: float = 0.0) -> collections.Counter[str]:
        """How many of the matching requests met each fault (LoggedRequest.injected)."""
        return collections.Counter(e.injected for e in self.entries(match, since) if e.injected)


def error_status(status: int, retry_after: int | None, message: str = "") -> dict[str, Any]:
    """A Kubernetes Status body, as the API server sends with its own errors."""
    reasons = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message or f"fault proxy: injected {status}",
        "reason": reasons.get(status, "".join(word[:1].upper() + word[1:] for word in phrase.split())),
        "code": status,
    }
    if retry_after is not None:
        body["details"] = {"retryAfterSeconds": retry_after}
    return body


def error_response(fault: Fault) -> web.Response:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
    return web.json_response(
        error_status(fault.status, fault.retry_after), status=fault.status, headers=headers
    )


def end_to_end(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP)


def kubeconfig_document(url: str, name: str = "fault-proxy") -> dict[str, Any]:
    """A kubeconfig for a plain-HTTP server that needs no credentials: the proxy brings its own."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


async def _wait(delay: float | None) -> None:
    """`delay` seconds, or (None) until the handler is cancelled: by the client's disconnect or the stop."""
    if delay is None:
        await asyncio.Event().wait()
    else:
        await asyncio.sleep(delay)


def _abort(request: web.BaseRequest) -> web.Response:
    """Close the client's connection with no answer; the returned response is never written."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response()


class _Stream:
    """A forwarded response in flight, so a fault set later can stall or cut it (and its log entry says so)."""

    def __init__(self, request: web.BaseRequest, info: RequestInfo, entry: LoggedRequest) -> None:
        self.request = request
        self.info = info
        self.entry = entry
        self.stalled = False

    def hit(self, mode: Mode) -> None:
        self.entry.fault = mode
        if mode is Mode.STALL:
            self.stalled = True
        else:
            _abort(self.request)


class _Forwarder:
    """The proxy's request handler, on the proxy's event loop."""

    def __init__(self, kubeconfig: str, faults: FaultTable, log: RequestLog) -> None:
        credentials = load_credentials(kubeconfig)
        self.upstream = credentials.server
        self.authorization = credentials.authorization()
        self.faults = faults
        self.log = log
        self.streams: set[_Stream] = set()
        connector = aiohttp.TCPConnector(ssl=credentials.ssl_context, limit=0)
        timeout = aiohttp.ClientTimeout(total=None)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        info = RequestInfo(
            request.method, request.path, dict(request.query), request.headers.get("User-Agent", "")
        )
        fault = self.faults.select(info)
        entry = self.log.add(info, fault)
        if fault is not None and fault.mode is Mode.ERROR:
            entry.status = fault.status
            return error_response(fault)
        if fault is not None and fault.mode is Mode.DROP:
            return await self._hold(request, fault.delay)
        if fault is not None and fault.mode is Mode.CUT:
            return _abort(request)
        if fault is not None and fault.mode is Mode.LATENCY:
            await asyncio.sleep(fault.delay or 0.0)
        try:
            return await self._forward(request, info, entry, fault)
        except (aiohttp.ClientError, OSError) as error:
            return self._upstream_failed(request, entry, error)

    def _upstream_failed(
        self, request: web.BaseRequest, entry: LoggedRequest, error: Exception
    ) -> web.StreamResponse:
        """As a load balancer would: 502 if nothing was answered yet, else the connection breaks."""
        if entry.status is not None:
            return _abort(request)
        entry.status = 502
        body = error_status(502, None, f"fault proxy: the API server failed: {error!r}")
        return web.json_response(body, status=502)

    async def _hold(self, request: web.BaseRequest, delay: float | None) -> web.StreamResponse:
        await _wait(delay)
        return _abort(request)

    async def _forward(
        self, request: web.BaseRequest, info: RequestInfo, entry: LoggedRequest, fault: Fault | None
    ) -> web.StreamResponse:
        headers = end_to_end(request.headers)
        if self.authorization:
            headers["Authorization"] = self.authorization
        body = await request.read()
        url = URL(self.upstream + request.raw_path, encoded=True)
        async with self.session.request(
            request.method, url, headers=headers, data=body or None, allow_redirects=False
        ) as upstream:
            if fault is not None and fault.mode is Mode.LOSE_RESPONSE:
                content = await upstream.read()  # applied upstream; the client waits in vain
                await _wait(fault.delay)
                entry.status = upstream.status
                return web.Response(
                    body=content, status=upstream.status, headers=end_to_end(upstream.headers)
                )
            stream = _Stream(request, info, entry)
            if fault is not None and fault.mode is Mode.STALL:
                stream.stalled = True
            self.streams.add(stream)
            try:
                return await self._relay(request, upstream, stream, entry)
            finally:
                self.streams.discard(stream)

    async def _relay(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        stream: _Stream,
        entry: LoggedRequest,
    ) -> web.StreamResponse:
        if stream.stalled:
            await _wait(None)
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=end_to_end(upstream.headers)
        )
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        entry.status = upstream.status
        async for chunk in upstream.content.iter_any():
            if stream.stalled:
                await _wait(None)
            await response.write(chunk)
        await response.write_eof()
        return response

    def hit_streams(self, fault: Fault) -> None:
        """A stream fault also applies to the watches already open."""
        for stream in list(self.streams):
            if self.faults.claim(fault, stream.info):
                stream.hit(fault.mode)

    def cut_streams(self, match: Match) -> int:
        hit = [s for s in self.streams if s.info.watch and match(s.info)]
        for stream in hit:
            stream.hit(Mode.CUT)
        return len(hit)


class FaultProxy:
    """The proxy on its own thread and event loop; every method is safe to call from the test's thread."""

    def __init__(self, kubeconfig: str, host: str = "127.0.0.1") -> None:
        self.kubeconfig = kubeconfig
        self.host = host
        self.port = 0
        self.faults = FaultTable()
        self.log = RequestLog()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._forwarder: _Forwarder | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.name = "fault-proxy"
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the fault proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            with suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(30)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            self._forwarder = _Forwarder(self.kubeconfig, self.faults, self.log)
            server = web.Server(self._forwarder.handle, handler_cancellation=True)
            runner = web.ServerRunner(server, shutdown_timeout=0.1)  # nothing in flight matters at the end
            await runner.setup()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((self.host, 0))
            self.port = sock.getsockname()[1]
            await web.SockSite(runner, sock).start()
        except BaseException as error:
            self._error = error
            self._ready.set()
            raise
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()
            await self._forwarder.session.close()

    def _call(self, function: Callable[[], T]) -> T:
        """Run `function` on the proxy's loop, where the open streams live, and return its result."""
        if self._loop is None:
            raise RuntimeError("the fault proxy is not running")

        async def call() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def add_fault(self, fault: Fault) -> Fault:
        self.faults.add(fault)
        if fault.mode in STREAM_MODES and self._forwarder is not None:
            forwarder = self._forwarder
            self._call(lambda: forwarder.hit_streams(fault))
        return fault

    def remove_fault(self, fault: Fault) -> None:
        self.faults.remove(fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    @contextmanager
    def fault(self, fault: Fault, *, expect_hits: int = 1) -> Iterator[Fault]:
        """The fault is in force inside the block only (streams it stalled stay stalled). A block that ends
        with the fault hit fewer than `expect_hits` times fails: the fault it meant to inject never was."""
        self.add_fault(fault)
        try:
            yield fault
        finally:
            self.remove_fault(fault)
        assert fault.hits >= expect_hits, (
            f"the {fault.mode.value} fault for {fault.match} applied {fault.hits} time(s), "
            f"expected at least {expect_hits}"
        )

    def cut_streams(self, match: Match = ANY) -> int:
        """Close the watch streams open now, as a connection reset would; new ones go through."""
        if self._forwarder is None:
            return 0
        forwarder = self._forwarder
        return self._call(lambda: forwarder.cut_streams(match))

    def requests(self, match: Match = ANY, since: float = 0.0) -> list[LoggedRequest]:
        return self.log.entries(match, since)

    def injected(self, match: Match = ANY, since: float = 0.0) -> collections.Counter[str]:
        """What the proxy did in the server's place to the matching requests, by kind: "error 503": 4."""
        return self.log.injected(match, since)

    def write_kubeconfig(self, path: str | Path) -> str:
        Path(path).write_text(yaml.safe_dump(kubeconfig_document(self.url)), encoding="utf-8")
        return str(path)
