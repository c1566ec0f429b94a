"""e2e/faults.py without a cluster: each fault checks that it took effect, against a fake API."""

from __future__ import annotations

from typing import Any

import pytest
from e2e import faults

POD = "/api/v1/namespaces/ns/pods/svc-0"


class FakeKube:
    """Objects by path; a delete removes the object unless `deletes` is off (a finalizer, a lost request)."""

    def __init__(self, objects: dict[str, dict[str, Any]], *, deletes: bool = True) -> None:
        self.objects = objects
        self.deletes = deletes

    def get(self, path: str) -> dict[str, Any] | None:
        return self.objects.get(path)

    def delete(self, path: str, *, grace: int | None = None) -> None:
        if self.deletes:
            self.objects.pop(path, None)

    def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        body = self.objects[path.removesuffix("/status")]
        body["status"] = {**body.get("status", {}), **kw["body"]["status"]}
        return body


def _pod(conditions: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "metadata": {"name": "svc-0", "uid": "u0"},
        "status": {"phase": "Running", "conditions": conditions},
    }


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "TAKES_EFFECT_SECONDS", 0.3, raising=False)


def test_a_force_deletion_must_remove_the_pod() -> None:
    kube = FakeKube({POD: _pod([])})
    faults.force_delete_pod(kube, "ns", "svc-0")  # type: ignore[arg-type]
    assert POD not in kube.objects
    with pytest.raises(AssertionError, match="no pod"):
        faults.force_delete_pod(kube, "ns", "svc-0")  # type: ignore[arg-type]
    stuck = FakeKube({POD: _pod([])}, deletes=False)
    with pytest.raises(AssertionError, match="gone after its force deletion"):
        faults.force_delete_pod(stuck, "ns", "svc-0")  # type: ignore[arg-type]


def test_making_a_pod_unready_must_change_its_ready_condition() -> None:
    kube = FakeKube({POD: _pod([{"type": "Ready", "status": "True"}])})
    faults.make_pod_unready(kube, "ns", "svc-0")  # type: ignore[arg-type]
    assert kube.objects[POD]["status"]["conditions"][0]["status"] == "False"
    without = FakeKube({POD: _pod([])})  # nothing to turn False: the fault would not happen
    with pytest.raises(AssertionError):
        faults.make_pod_unready(without, "ns", "svc-0")  # type: ignore[arg-type]
