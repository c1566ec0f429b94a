"""Promote and demote hooks: which calls a promotion makes, and that they reach a real HTTP server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import pytest

from ftso.hooks import call_hooks
from ftso.plan import HookCall
from ftso.reconcile import decide

from .factories import observed, pod, raw_spec

HOOKS = {"hooks": {"port": 9000, "promotePath": "/promote", "demotePath": "/demote"}, "minIntervalSeconds": 0}


def _pods() -> list[dict[str, Any]]:
    pods = [
        pod(0, role="primary", node_name="node-0"),
        pod(1, node_name="node-1"),
        pod(2, node_name="node-2"),
    ]
    for i, p in enumerate(pods):
        p["status"]["podIP"] = f"10.0.0.{i + 10}"
    return pods


def test_a_failover_promotes_the_new_primary_and_demotes_the_old_one() -> None:
    pods = _pods()
    pods[0]["status"]["phase"] = "Failed"
    plan = decide(observed(pods, spec=raw_spec(failover=HOOKS), status={"primary": "demo-0", "term": 3}))
    calls = {c.pod: c for c in plan.hooks}
    assert calls["demo-1"].url == "http://10.0.0.11:9000/promote" and calls["demo-1"].term == 4
    assert calls["demo-1"].role == "primary"
    assert calls["demo-0"].url == "http://10.0.0.10:9000/demote" and calls["demo-0"].role == "fenced"


def test_no_hooks_without_a_promotion_or_configuration() -> None:
    assert (
        decide(
            observed(_pods(), spec=raw_spec(failover=HOOKS), status={"primary": "demo-0", "term": 3})
        ).hooks
        == []
    )
    pods = _pods()[1:]
    assert decide(observed(pods, status={"primary": "demo-0", "term": 3})).hooks == []


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(
                {"path": self.path, **json.loads(self.rfile.read(int(self.headers["Content-Length"])))}
            )
            self.send_response(200 if self.path != "/broken" else 500)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


def test_hooks_reach_the_workload_and_failures_are_reported(
    receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    base, received = receiver
    calls = [
        HookCall("p1", f"{base}/promote", "primary", 7, 1.0),
        HookCall("p0", f"{base}/broken", "fenced", 7, 1.0),
        HookCall("p2", "http://127.0.0.1:9/unreachable", "fenced", 7, 0.5),
    ]
    failures = asyncio.run(call_hooks(calls))
    assert {"path": "/promote", "role": "primary", "term": 7, "pod": "p1"} in received
    assert sorted(h.pod for h, _ in failures) == ["p0", "p2"]
    assert "500" in dict((h.pod, why) for h, why in failures)["p0"]


def test_hooks_are_called_again_until_the_record_says_they_were() -> None:
    """The reconcile that decided the failover died before calling them: the next one calls them."""
    pods = _pods()
    pods[0]["status"]["phase"] = "Failed"
    spec = raw_spec(failover=HOOKS)
    first = decide(observed(pods, spec=spec, status={"primary": "demo-0", "term": 3}))
    assert first.hooks_term == 4 and first.status["failovers"][-1]["term"] == 4
    again = decide(observed(pods, spec=spec, status=first.status))
    assert {c.pod for c in again.hooks} == {"demo-0", "demo-1"} and again.hooks_term == 4
    done = dict(first.status)
    done["failovers"] = [{**first.status["failovers"][-1], "hooksCalledAt": "2026-11-26T12:00:01Z"}]
    after = decide(observed(pods, spec=spec, status=done))  # type: ignore[arg-type]
    assert after.hooks == [] and after.hooks_term == 0


@pytest.fixture
def silent() -> Iterator[str]:
    """A workload port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_a_hook_that_never_answers_costs_its_timeout_and_no_more(silent: str) -> None:
    calls = [
        HookCall("p1", f"{silent}/promote", "primary", 7, 0.2),
        HookCall("p0", f"{silent}/demote", "fenced", 7, 0.2),
    ]
    started = time.monotonic()
    failures = asyncio.run(call_hooks(calls))
    assert time.monotonic() - started < 1.0, "called at once, each bounded by its timeout"
    assert sorted(h.pod for h, _ in failures) == ["p0", "p1"]


def test_whatever_a_hook_call_raises_is_a_failure_not_an_exception(
    receiver: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed hook is reported in an Event; nothing it does may end the reconcile that calls it."""
    base, _ = receiver

    def closed(*_: Any, **__: Any) -> Any:
        raise RuntimeError("Session is closed")

    monkeypatch.setattr(aiohttp.ClientSession, "post", closed)
    failures = asyncio.run(call_hooks([HookCall("p1", f"{base}/promote", "primary", 7, 1.0)]))
    assert [(h.pod, why) for h, why in failures] == [
        ("p1", f"{base}/promote: RuntimeError('Session is closed')")
    ]
