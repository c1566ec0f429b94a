"""The safety invariant of failover, checked over every change the API server reported:
never two pods of one resource labelled primary and serving at once, and terms never going back."""

from __future__ import annotations

from typing import Any

from e2e.recorder import Seen

ROLE = "ftso.dev/role"
SERVING = "ftso.dev/serving"
TERM = "ftso.dev/term"


def check_pods(events: list[Seen]) -> int:
    """Replays pod events; returns how many states were checked."""
    state: dict[str, dict[str, Any]] = {}
    term_by_uid: dict[str, int] = {}
    checked = 0
    for seen in events:
        meta = seen.object["metadata"]
        if seen.type == "DELETED":
            state.pop(meta["name"], None)
        else:
            state[meta["name"]] = seen.object
        term = int((meta.get("annotations") or {}).get(TERM, "0"))
        uid = meta["uid"]
        assert term >= term_by_uid.get(uid, 0), f"pod {meta['name']} term went back to {term}"
        term_by_uid[uid] = term
        serving_primaries = sorted(
            name
            for name, pod in state.items()
            if (pod["metadata"].get("labels") or {}).get(ROLE) == "primary"
            and (pod["metadata"].get("labels") or {}).get(SERVING) == "true"
        )
        assert len(serving_primaries) <= 1, f"two serving primaries at once: {serving_primaries}"
        checked += 1
    return checked


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
