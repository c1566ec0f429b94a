"""Leader election over a coordination.k8s.io Lease, so that of several operator replicas exactly one acts.

Every replica watches and keeps its view warm (a hot standby); only the holder of the Lease runs
reconciles. The holder renews every `renew_seconds`; a standby takes the Lease once it has not been
renewed for `lease_seconds`. A holder that fails to renew before its own deadline stops acting at once
(the process exits and its Deployment restarts it), so two replicas never act on the same term.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ftso.client import ApiError, KubeClient
from ftso.model import parse_time

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str = "ftso-operator"
    identity: str = ""
    lease_seconds: float = 4.0
    renew_seconds: float = 1.0
    retry_seconds: float = 0.5


def _micro(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_expired(spec: dict[str, object], now: datetime, lease_seconds: float) -> bool:
    renewed = parse_time(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds")
    seconds = float(duration) if isinstance(duration, int | float) else lease_seconds
    return renewed is None or (now - renewed).total_seconds() > seconds


class LeaderElector:
    def __init__(self, client: KubeClient, settings: LeaseSettings) -> None:
        self.client = client
        self.settings = settings
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{settings.namespace}/leases/{settings.name}"

    def _body(self, now: datetime, resource_version: str | None, transitions: int) -> dict[str, object]:
        metadata: dict[str, object] = {"name": self.settings.name, "namespace": self.settings.namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.settings.identity,
                "leaseDurationSeconds": max(1, round(self.settings.lease_seconds)),
                "acquireTime": _micro(now),
                "renewTime": _micro(now),
                "leaseTransitions": transitions,
            },
        }

    async def try_acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        try:
            current = await self.client.request("GET", self.path)
        except ApiError as error:
            if not error.not_found:
                raise
            try:
                await self.client.request("POST", self.path.rsplit("/", 1)[0], body=self._body(now, None, 0))
                return True
            except ApiError as create_error:
                if create_error.conflict:
                    return False
                raise
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity")
        if holder != self.settings.identity and not lease_expired(spec, now, self.settings.lease_seconds):
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.settings.identity else 1)
        body = self._body(now, current["metadata"]["resourceVersion"], transitions)
        if holder == self.settings.identity:
            body["spec"]["acquireTime"] = spec.get("acquireTime")  # type: ignore[index]
        try:
            await self.client.request("PUT", self.path, body=body)  # resourceVersion: only one writer wins
        except ApiError as error:
            if error.conflict:
                return False
            raise
        return True

    async def run(self, on_started: Callable[[], Awaitable[None]], on_lost: Callable[[], None]) -> None:
        """Wait to lead, then call `on_started` and keep renewing; call `on_lost` when leadership ends."""
        while True:
            try:
                if await self.try_acquire_or_renew():
                    break
            except (ApiError, OSError) as error:
                logger.warning("leader election: %s", error)
            await asyncio.sleep(self.settings.retry_seconds)
        logger.warning(
            "leader election: %s now leads through Lease %s/%s",
            self.settings.identity,
            self.settings.namespace,
            self.settings.name,
        )
        await on_started()
        last_renewed = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.settings.renew_seconds)
            try:
                renewed = await self.try_acquire_or_renew()
            except (ApiError, OSError) as error:
                logger.warning("leader election: renewal failed: %s", error)
                renewed = False
            now = asyncio.get_running_loop().time()
            if renewed:
                last_renewed = now
            elif now - last_renewed > self.settings.lease_seconds * 0.75:
                # Stop before anyone else may take over: better a short pause than two actors.
                logger.error(
                    "leader election: lost the Lease %s/%s", self.settings.namespace, self.settings.name
                )
                on_lost()
                return
