"""The safety invariants of failover, checked over every change the API server reported: never two pods
of one resource labelled primary and serving at once, never a serving primary with a stale term, never two
ready endpoints behind `<name>-primary`, and terms never going back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from e2e.kube import Kube
from e2e.recorder import Seen, WatchRecorder

ROLE = "ftso.dev/role"
SERVING = "ftso.dev/serving"
TERM = "ftso.dev/term"


def check_pods(events: list[Seen]) -> int:
    """Replays pod events; returns how many states were checked."""
    state: dict[str, dict[str, Any]] = {}
    term_by_uid: dict[str, int] = {}
    checked = 0
    trail: list[str] = []  # the changes so far, for the message of a broken invariant
    for seen in events:
        meta = seen.object["metadata"]
        trail.append(_describe(seen))
        if seen.type == "DELETED":
            state.pop(meta["name"], None)
        else:
            state[meta["name"]] = seen.object
        term = int((meta.get("annotations") or {}).get(TERM, "0"))
        uid = meta["uid"]
        assert term >= term_by_uid.get(uid, 0), f"pod {meta['name']} term went back to {term}; {_last(trail)}"
        term_by_uid[uid] = term
        serving_primaries = sorted(
            name
            for name, pod in state.items()
            if (pod["metadata"].get("labels") or {}).get(ROLE) == "primary"
            and (pod["metadata"].get("labels") or {}).get(SERVING) == "true"
        )
        assert len(serving_primaries) <= 1, (
            f"two serving primaries at once: {serving_primaries}; {_last(trail)}"
        )
        newest = max((_term(p) for p in state.values()), default=0)
        stale = [n for n in serving_primaries if _term(state[n]) < newest]
        assert not stale, f"serving primary {stale} has a term older than {newest}; {_last(trail)}"
        checked += 1
    return checked


def _describe(seen: Seen) -> str:
    meta = seen.object["metadata"]
    labels = meta.get("labels") or {}
    return (
        f"{seen.at:.3f} {seen.type} {meta['name']} uid={meta['uid'][:8]} role={labels.get(ROLE)} "
        f"serving={labels.get(SERVING)} term={_term(seen.object)} "
        f"deleting={'deletionTimestamp' in meta}"
    )


def _last(trail: list[str], count: int = 16) -> str:
    return "changes, oldest first:\n  " + "\n  ".join(trail[-count:])


def _term(pod: dict[str, Any]) -> int:
    return int((pod["metadata"].get("annotations") or {}).get(TERM, "0"))


def check_primary_endpoints(events: list[Seen]) -> int:
    """Replays the EndpointSlices of one `<name>-primary` Service: at most one ready address at any time.
    Returns how many states were checked."""
    ready_by_slice: dict[str, set[str]] = {}
    for seen in events:
        name = seen.object["metadata"]["name"]
        if seen.type == "DELETED":
            ready_by_slice.pop(name, None)
        else:
            ready_by_slice[name] = _ready_addresses(seen.object)
        ready = set().union(*ready_by_slice.values())
        assert len(ready) <= 1, f"{len(ready)} ready endpoints behind the primary Service: {sorted(ready)}"
    return len(events)


def _ready_addresses(endpoint_slice: dict[str, Any]) -> set[str]:
    return {
        address
        for endpoint in endpoint_slice.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready")
        for address in endpoint.get("addresses") or []
    }


def check_terms(events: list[Seen]) -> list[tuple[int, str]]:
    """Status terms in order; asserts they never decrease and that a primary's name changes only with a
    new term. Returns the (term, primary) sequence."""
    sequence: list[tuple[int, str]] = []
    for seen in events:
        if seen.type == "DELETED":
            continue
        status = seen.object.get("status") or {}
        term, primary = int(status.get("term") or 0), str(status.get("primary") or "")
        if sequence:
            last_term, last_primary = sequence[-1]
            assert term >= last_term, f"term went back from {last_term} to {term}"
            if primary and last_primary and primary != last_primary:
                assert term > last_term, f"primary changed {last_primary} -> {primary} without a new term"
        if not sequence or sequence[-1] != (term, primary):
            sequence.append((term, primary))
    return sequence


@contextlib.contextmanager
def invariant_watch(
    kube: Kube, namespace: str, name: str = "svc"
) -> Iterator[tuple[WatchRecorder, WatchRecorder]]:
    """Records pods, resources and the primary Service's EndpointSlices while the block runs, then checks
    every invariant over everything that happened."""
    pods = WatchRecorder(kube.kubeconfig, f"/api/v1/namespaces/{namespace}/pods", "ftso.dev/service")
    resources = WatchRecorder(
        kube.kubeconfig, f"/apis/ftso.dev/v1alpha1/namespaces/{namespace}/faulttolerantservices"
    )
    slices = WatchRecorder(
        kube.kubeconfig,
        f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
        f"kubernetes.io/service-name={name}-primary",
    )
    with pods, resources, slices:
        yield pods, resources
    # An invariant checked over nothing holds vacuously: every recorder must have seen something, and the
    # resource a primary (each test makes one, and routes it).
    assert check_pods(pods.snapshot()) > 0, "no pod state was recorded"
    terms = check_terms(resources.snapshot())
    assert any(term > 0 and primary for term, primary in terms), f"no primary was ever recorded: {terms}"
    slices_seen = slices.snapshot()
    assert check_primary_endpoints(slices_seen) > 0, f"no EndpointSlice of {name}-primary was recorded"
    assert any(_ready_addresses(s.object) for s in slices_seen), f"{name}-primary never had a ready endpoint"
