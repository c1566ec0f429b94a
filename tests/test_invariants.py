"""The e2e invariant recorder without a cluster: recorders that saw nothing of a kind fail the check, since
an invariant checked over nothing holds vacuously."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from e2e import invariants
from e2e.recorder import Seen

POD = Seen(
    1.0,
    "ADDED",
    {
        "metadata": {
            "name": "svc-0",
            "uid": "u0",
            "labels": {invariants.ROLE: "primary", invariants.SERVING: "true"},
            "annotations": {invariants.TERM: "1"},
        }
    },
)
RESOURCE = Seen(1.0, "ADDED", {"metadata": {"name": "svc"}, "status": {"term": 1, "primary": "svc-0"}})
ROUTED = Seen(
    1.0,
    "ADDED",
    {
        "metadata": {"name": "svc-primary-x"},
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}],
    },
)


def _recorders(monkeypatch: pytest.MonkeyPatch, **seen: list[Seen]) -> None:
    """Recorders that replay `seen` by kind: pods, faulttolerantservices, endpointslices."""

    class Recorder:
        def __init__(self, kubeconfig: str, path: str, label_selector: str = "") -> None:
            self.events = next(events for kind, events in seen.items() if path.endswith(kind))

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def snapshot(self) -> list[Seen]:
            return self.events

    monkeypatch.setattr(invariants, "WatchRecorder", Recorder)


def _watch() -> None:
    with invariants.invariant_watch(SimpleNamespace(kubeconfig="unused"), "ns"):  # type: ignore[arg-type]
        pass


def test_everything_recorded_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    _recorders(monkeypatch, pods=[POD], faulttolerantservices=[RESOURCE], endpointslices=[ROUTED])
    _watch()


@pytest.mark.parametrize(
    ("pods", "resources", "slices", "why"),
    [
        ([], [RESOURCE], [ROUTED], "no pod state"),
        ([POD], [], [ROUTED], "no primary"),
        ([POD], [Seen(1.0, "ADDED", {"metadata": {"name": "svc"}})], [ROUTED], "no primary"),
        ([POD], [RESOURCE], [], "no EndpointSlice"),
        ([POD], [RESOURCE], [Seen(1.0, "ADDED", {"metadata": {"name": "s"}, "endpoints": []})], "never had"),
    ],
    ids=["no-pods", "no-resource", "never-a-primary", "no-slices", "never-routed"],
)
def test_a_kind_recorded_empty_fails(
    monkeypatch: pytest.MonkeyPatch, pods: list[Seen], resources: list[Seen], slices: list[Seen], why: str
) -> None:
    _recorders(monkeypatch, pods=pods, faulttolerantservices=resources, endpointslices=slices)
    with pytest.raises(AssertionError, match=why):
        _watch()
