"""Watches a collection in a background thread and keeps every event, so tests can assert on states that
last only milliseconds (a pod reported Lost just before it is replaced, two primaries for an instant)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from ftso.credentials import load_credentials


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic()
    type: str
    object: dict[str, Any]


class WatchRecorder:
    def __init__(self, kubeconfig: str, path: str, label_selector: str = "") -> None:
        self.credentials = load_credentials(kubeconfig)
        self.path = path
        self.label_selector = label_selector
        self.events: list[Seen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WatchRecorder:
        self._thread.start()
        if not self._started.wait(timeout=30):
            raise AssertionError(f"the watch on {self.path} did not start")
        return self

    def __exit__(self, *_: object) -> None:
        alive = self._thread.is_alive()
        self._stop.set()
        self._thread.join(timeout=10)
        # A recorder that died early would let invariants pass on half a history: fail loudly instead.
        assert alive, f"the watch recorder of {self.path} stopped before the end of the test"

    def snapshot(self) -> list[Seen]:
        with self._lock:
            return list(self.events)

    async def _list(self, session: aiohttp.ClientSession) -> str:
        params = {"labelSelector": self.label_selector} if self.label_selector else {}
        while True:
            async with session.get(self.credentials.server + self.path, params=params) as response:
                listing = await response.json()
            if response.status == 200:
                break
            await asyncio.sleep(0.2)  # e.g. 429 while the API server warms a new resource's cache
        with self._lock:
            for item in listing.get("items") or []:
                self.events.append(Seen(time.monotonic(), "ADDED", item))
        return str(listing["metadata"]["resourceVersion"])

    def _run(self) -> None:
        asyncio.run(self._watch_forever())

    async def _watch_forever(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.credentials.ssl_context)
        headers = (
            {"Authorization": self.credentials.authorization()} if self.credentials.authorization() else {}
        )
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            resource_version = ""
            while not self._stop.is_set():
                params = {"watch": "1", "allowWatchBookmarks": "false", "timeoutSeconds": "30"}
                if self.label_selector:
                    params["labelSelector"] = self.label_selector
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    if not resource_version:
                        resource_version = await self._list(session)
                    params["resourceVersion"] = resource_version
                    async with session.get(self.credentials.server + self.path, params=params) as response:
                        if response.status != 200:  # e.g. 410 Gone or 5xx while the API server restarts
                            resource_version = ""
                            await asyncio.sleep(0.2)
                            continue
                        self._started.set()
                        async for line in response.content:
                            if self._stop.is_set():
                                return
                            if not line.strip():
                                continue
                            event = json.loads(line)
                            obj = event.get("object") or {}
                            if event.get("type") in ("ERROR", None):
                                resource_version = ""
                                break
                            resource_version = (obj.get("metadata") or {}).get(
                                "resourceVersion", resource_version
                            )
                            with self._lock:
                                self.events.append(Seen(time.monotonic(), event["type"], obj))
                await asyncio.sleep(0.1)
