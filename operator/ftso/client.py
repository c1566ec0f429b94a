"""The only module that talks to the Kubernetes API (watches aside, which kopf owns).

A small async REST client over aiohttp that sends and receives plain dicts; credentials come from
the kubeconfig or the in-cluster service account (credentials.py). Transient
failures (connection errors, 429, 5xx) are retried with exponential backoff and jitter. With leader
election, every write first asks the write guard whether this replica still leads (`NotLeader` if not).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp

from ftso import kinds, names
from ftso.credentials import Credentials, load_credentials

logger = logging.getLogger(__name__)

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
NO_RESPONSE = "<error>"  # the code of a request that got no answer, as client-go labels it


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, causes: tuple[str, ...] = ()) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = causes  # details.causes[].reason, such as NamespaceTerminating

    @property
    def namespace_terminating(self) -> bool:
        return "NamespaceTerminating" in self.causes

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def transient(self) -> bool:
        return self.status == 429 or self.status >= 500


class NotLeader(Exception):
    """A write refused before it was sent: this replica no longer leads. Deliberately not an ApiError,
    so that no handler of "not found" or "conflict" swallows it; it aborts the reconcile."""


def _path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    return kinds.BY_KIND[kind].path(namespace, name)


class KubeClient:
    """Plain-dict requests with retries; counts requests per verb for the benchmarks and metrics."""

    def __init__(self, credentials: Credentials, *, attempts: int = 5, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self.attempts = attempts
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.requests: Counter[str] = Counter()
        # Answers by (HTTP method, status code), "<error>" when none came: rest_client_requests_total.
        self.responses: Counter[tuple[str, str]] = Counter()
        self._session: aiohttp.ClientSession | None = None
        # Whether this replica may write now; None: it acts alone (no leader election), always.
        self.write_guard: Callable[[], bool] | None = None
        # Seconds this replica may still write (with write_guard): no write attempt outlives them.
        self.leadership_left: Callable[[], float] | None = None

    def ensure_leading(self) -> None:
        """Raise NotLeader unless this replica may act: for side effects outside this client (hooks)."""
        if self.write_guard is not None and not self.write_guard():
            raise NotLeader("this replica no longer leads; nothing was sent")

    def _time_to_write(self) -> float | None:
        if self.write_guard is None or self.leadership_left is None:
            return None
        return max(0.0, self.leadership_left())

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, context: str | None = None) -> KubeClient:
        return cls(load_credentials(kubeconfig, context))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.credentials.ssl_context, limit=64)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = JSON,
        guarded: bool = True,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        """`guarded=False` only for the leader election's own Lease, which must be written to lead at all."""
        text = await self.request_text(
            method,
            path,
            body=body,
            params=params,
            content_type=content_type,
            guarded=guarded,
            attempts=attempts,
        )
        return json.loads(text) if text else {}

    async def request_text(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = JSON,
        guarded: bool = True,
        attempts: int | None = None,
        accept: str = JSON,
    ) -> str:
        """The answer as the server sent it: JSON for every API object, plain text for a pod's log."""
        headers = {"Accept": accept, "User-Agent": "ftso-operator"}
        authorization = self.credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        delay = 0.05
        attempts = attempts or self.attempts
        write = guarded and method != "GET"
        for attempt in range(1, attempts + 1):
            if write:
                self.ensure_leading()  # before each attempt: leadership may end during a retry's wait
            self.requests[method] += 1
            try:
                # ... and the attempt ends with it: a wait for a connection must not carry the write past it.
                async with asyncio.timeout(self._time_to_write() if write else None):
                    async with self._session_now().request(
                        method, self.credentials.server + path, data=data, params=params, headers=headers
                    ) as response:
                        self.responses[(method, str(response.status))] += 1
                        text = await response.text()
                if method != "GET":
                    logger.debug("%s %s -> %d", method, path, response.status)
                if response.status < 400:
                    return text
                error = _error(response.status, text)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.responses[(method, NO_RESPONSE)] += 1
                error = ApiError(0, "ConnectionError", str(exc) or type(exc).__name__)
            if write and error.status == 0:
                self.ensure_leading()  # cut short by the end of the leadership: say so
            if not (error.transient or error.status == 0) or attempt == attempts:
                raise error
            logger.debug("retrying %s %s after %s", method, path, error)
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def watch(
        self,
        kind: str,
        namespace: str | None,
        on_event: Callable[[str, dict[str, Any]], None],
        *,
        label_selector: str = "",
        timeout_seconds: int = 300,
    ) -> None:
        """List, then watch, forever: `on_event(type, object)` for every object and change. Relists after
        an expired resourceVersion, reconnects after errors with backoff. For the few streams kopf does not
        own (node heartbeats, which live outside the namespaces a namespaced operator serves)."""
        path = _path(kind, namespace)
        delay = 0.1
        resource_version = ""
        while True:
            try:
                if not resource_version:
                    params = {"labelSelector": label_selector} if label_selector else None
                    listing = await self.request("GET", path, params=params)
                    for item in listing.get("items") or []:
                        on_event("ADDED", item)
                    resource_version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
                params = {
                    "watch": "1",
                    "resourceVersion": resource_version,
                    "timeoutSeconds": str(timeout_seconds),
                    "allowWatchBookmarks": "true",
                }
                if label_selector:
                    params["labelSelector"] = label_selector
                headers = {"Accept": JSON, "User-Agent": "ftso-operator"}
                if authorization := self.credentials.authorization():
                    headers["Authorization"] = authorization
                self.requests["WATCH"] += 1
                timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
                async with self._session_now().get(
                    self.credentials.server + path, params=params, headers=headers, timeout=timeout
                ) as response:
                    self.responses[("GET", str(response.status))] += 1
                    if response.status >= 400:
                        raise _error(response.status, await response.text())
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            resource_version = ""  # 410 Gone: relist
                            break
                        resource_version = str(
                            (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                        )
                        if event.get("type") != "BOOKMARK":
                            on_event(str(event.get("type")), obj)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as error:
                logger.warning("watch of %s failed, retrying in %.1fs: %s", path, delay, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                resource_version = (
                    "" if isinstance(error, ApiError) and error.status == 410 else resource_version
                )

    # Typed helpers over `request`, one per operation the operator performs.

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        return await self.request("GET", _path(kind, namespace, name))

    async def list(self, kind: str, namespace: str | None, label_selector: str = "") -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", _path(kind, namespace), params=params)
        return list(result.get("items") or [])

    async def list_pages(
        self, kind: str, namespace: str | None, label_selector: str = "", page: int = 100
    ) -> AsyncIterator[tuple[builtins.list[dict[str, Any]], int]]:
        """Every object, one page at a time from one consistent snapshot, with that snapshot's
        resourceVersion: a caller that takes each page as it comes never holds the whole list."""
        params = {"limit": str(page)}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            result = await self.request("GET", _path(kind, namespace), params=params)
            metadata = result.get("metadata") or {}
            yield list(result.get("items") or []), int(metadata.get("resourceVersion") or 0)
            if not metadata.get("continue"):
                return
            params = {**params, "continue": str(metadata["continue"])}

    async def pod_log(self, namespace: str, name: str, container: str, *, tail_lines: int) -> str:
        params = {"container": container, "tailLines": str(tail_lines)}
        path = _path(kinds.POD.kind, namespace, name) + "/log"
        return await self.request_text("GET", path, params=params, accept="text/plain, */*")

    async def create(self, body: Mapping[str, Any], *, strict: bool = True) -> dict[str, Any]:
        """Strict: a field the server does not know (a typo in the user's template) is refused, not
        silently dropped."""
        namespace = body["metadata"].get("namespace")
        params = {"fieldManager": names.FIELD_MANAGER}
        if strict:
            params["fieldValidation"] = "Strict"
        return await self.request("POST", _path(body["kind"], namespace), body=body, params=params)

    async def delete(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        uid: str = "",
        resource_version: str = "",
        grace_seconds: int | None = None,
        propagation: str = "",
    ) -> None:
        """`uid` and `resource_version` are preconditions: the object the view holds, or 409 Conflict."""
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if preconditions:
            options["preconditions"] = preconditions
        if grace_seconds is not None:
            options["gracePeriodSeconds"] = grace_seconds
        if propagation:
            options["propagationPolicy"] = propagation
        await self.request("DELETE", _path(kind, namespace, name), body=options)

    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        path = _path(kind, namespace, name) + (f"/{subresource}" if subresource else "")
        return await self.request(
            "PATCH", path, body=patch, content_type=MERGE_PATCH, params={"fieldManager": names.FIELD_MANAGER}
        )

    async def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply: we own exactly the fields we send, and take them back if someone moved them."""
        metadata = body["metadata"]
        path = _path(body["kind"], metadata.get("namespace"), metadata["name"])
        return await self.request(
            "PATCH",
            path,
            body=body,
            content_type=APPLY_PATCH,
            params={"fieldManager": names.FIELD_MANAGER, "force": "true"},
        )


def _error(status: int, text: str) -> ApiError:
    try:
        payload = json.loads(text)
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    details = payload.get("details")
    raw_causes = details.get("causes") if isinstance(details, dict) else None
    causes = tuple(str(c.get("reason")) for c in raw_causes or [] if isinstance(c, dict) and c.get("reason"))
    return ApiError(
        status, str(payload.get("reason") or status), str(payload.get("message") or text[:300]), causes
    )
