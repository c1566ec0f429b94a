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
    """Call every hook at once; returns the failures. Never raises: a hook is optional, and what it does
    (or what the HTTP client does with it) must not end the reconcile that has already moved the roles."""
    if not hooks:
        return []
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(call_hook(session, h) for h in hooks), return_exceptions=True)
    return [(h, _failure(h, r)) for h, r in zip(hooks, results, strict=True) if r]


def _failure(hook: HookCall, result: str | BaseException) -> str:
    if isinstance(result, Exception):
        return f"{hook.url}: {result!r}"
    if isinstance(result, BaseException):
        raise result  # a cancellation (shutdown) or an interrupt: not the hook's failure
    return result
