"""The API server's write semantics, in one place, for every fake client that takes a write.

A fake that stores a patch as the whole object hides exactly the bugs a patch has: a key a JSON merge patch
does not name is kept, not dropped. So the fakes apply the real rules: RFC 7386 for merge patches, the
resourceVersion and uid preconditions (409 Conflict), a new resourceVersion on every write, and server-side
apply as the replacement of what our one field manager sent before (the only manager in these tests)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from ftso.client import ApiError

Ref = tuple[str, str, str]  # (kind, namespace, name)


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: null removes a key, an object patches an object, anything else (a list too) replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def conflict(message: str) -> ApiError:
    return ApiError(409, "Conflict", message)


def check_resource_version(current: Mapping[str, Any], wanted: Any) -> None:
    """A write that names a resourceVersion is refused unless the object still has it (optimistic
    concurrency, as the API server's GuaranteedUpdate does for updates and patches alike)."""
    have = (current.get("metadata") or {}).get("resourceVersion")
    if wanted is not None and str(wanted) != str(have):
        raise conflict(
            f"Operation cannot be fulfilled: the object has been modified (resourceVersion {have}, "
            f"not {wanted}); please apply your changes to the latest version and try again"
        )


class FakeApi:
    """Objects as an API server holds them, with a cluster-wide resourceVersion counter; each method takes
    the arguments KubeClient's does and answers as the server would, a fresh copy each time."""

    def __init__(self) -> None:
        self.objects: dict[Ref, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.events: list[dict[str, Any]] = []
        self.refused: list[tuple[str, str, str]] = []  # writes a precondition refused
        self._versions = itertools.count(100)

    def put(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store `body` as it is (a test's starting state, or a write), with a new resourceVersion."""
        stored = copy.deepcopy(dict(body))
        stored.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
        self.objects[_ref(stored)] = stored
        return copy.deepcopy(stored)

    def body(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.objects[(kind, namespace, name)]

    def _current(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        current = self.objects.get((kind, namespace, name))
        if current is None:
            raise ApiError(404, "NotFound", f'{kind} "{name}" not found')
        return current

    def ensure_leading(self) -> None:
        """A lone operator: it always may write."""

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._current(kind, namespace or "", name))

    async def merge_patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        self.calls.append(("PATCH", kind + (f"/{subresource}" if subresource else ""), name))
        current = self._current(kind, namespace, name)
        self._precondition("PATCH", kind, name, current, (patch.get("metadata") or {}).get("resourceVersion"))
        patched = apply_merge_patch(current, patch)
        if subresource == "status":  # the status subresource changes status only
            patched = {**current, "status": patched.get("status")}
        elif "status" in current:  # ... and the main resource everything but status
            patched["status"] = current["status"]
        return self.put(patched)

    async def delete(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        uid: str = "",
        resource_version: str = "",
        **_: Any,
    ) -> None:
        self.calls.append(("DELETE", kind, name))
        current = self._current(kind, namespace, name)
        if uid and uid != current["metadata"].get("uid"):
            self.refused.append(("DELETE", kind, name))
            raise conflict(f"Precondition failed: UID in precondition: {uid}")
        self._precondition("DELETE", kind, name, current, resource_version or None)
        del self.objects[(kind, namespace, name)]

    async def create(self, body: Mapping[str, Any], *, strict: bool = True) -> dict[str, Any]:
        self.calls.append(("POST", body["kind"], body["metadata"].get("name", "")))
        if body["kind"] == "Event":
            self.events.append(copy.deepcopy(dict(body)))
            return dict(body)
        if _ref(body) in self.objects:
            raise ApiError(
                409, "AlreadyExists", f'{body["kind"]} "{body["metadata"]["name"]}" already exists'
            )
        created = copy.deepcopy(dict(body))
        created["metadata"].setdefault("uid", f"uid-{body['metadata']['name']}-{len(self.calls)}")
        return self.put(created)

    async def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply by our one field manager: what it sent before is replaced by what it sends now;
        metadata the server set (uid, creationTimestamp) stays. A resourceVersion sent is a precondition."""
        self.calls.append(("APPLY", body["kind"], body["metadata"]["name"]))
        current = self.objects.get(_ref(body))
        wanted = body["metadata"].get("resourceVersion")
        if current is None:
            if wanted is not None:
                raise ApiError(404, "NotFound", f'{body["kind"]} "{body["metadata"]["name"]}" not found')
            return await self.create(body)
        self._precondition("APPLY", body["kind"], body["metadata"]["name"], current, wanted)
        kept = {k: current["metadata"][k] for k in ("uid", "creationTimestamp") if k in current["metadata"]}
        applied = copy.deepcopy(dict(body))
        applied["metadata"] = {**applied["metadata"], **kept}
        return self.put(applied)

    def _precondition(self, verb: str, kind: str, name: str, current: Mapping[str, Any], wanted: Any) -> None:
        try:
            check_resource_version(current, wanted)
        except ApiError:
            self.refused.append((verb, kind, name))
            raise


def _ref(body: Mapping[str, Any]) -> Ref:
    metadata = body.get("metadata") or {}
    return (str(body["kind"]), str(metadata.get("namespace") or ""), str(metadata["name"]))
