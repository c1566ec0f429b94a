"""Promote and demote hooks: HTTP calls to the workload's pods (not to the Kubernetes API), so the workload can
act on a new role within the second instead of waiting for the downward API files to follow the labels."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp

from ftso.plan import HookCall

logger = logging.getLogger(__name__)


async def call_hook(session: aiohttp.ClientSession, hook: HookCall) -> str:
    """POST the new role and term; returns "" on success, else what went wrong (never raises)."""
    body = json.dumps({"role": hook.role, "term": hook.term, "pod": hook.pod})
    try:
        async with session.post(
            hook.url,
            data=body,
            headers={"Content-Type": "application/json"},
            allow_redirects=False,  # a redirect could send the term anywhere: it counts as a failure
            timeout=aiohttp.ClientTimeout(total=hook.timeout_seconds),
        ) as response:
            if response.status >= 300:
                return f"{hook.url} answered {response.status}"
            return ""
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return f"{hook.url}: {error or type(error).__name__}"


async def call_hooks(hooks: list[HookCall]) -> list[tuple[HookCall, str]]:
    """Call every hook at once; returns the failures."""
    if not hooks:
        return []
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(call_hook(session, h) for h in hooks))
    return [(h, r) for h, r in zip(hooks, results, strict=True) if r]
