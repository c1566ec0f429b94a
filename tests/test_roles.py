"""Properties of the primary decision that must hold for every cluster state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ftso import names
from ftso.reconcile import decide

from .factories import observed, pod, raw_spec

pod_states = st.fixed_dictionaries(
    {
        "phase": st.sampled_from(["Running", "Pending", "Failed"]),
        "ready": st.booleans(),
        "deleting": st.booleans(),
        "node_name": st.sampled_from(["node-0", "node-1", "node-gone"]),
        "role": st.sampled_from(["primary", "replica", "fenced"]),
    }
)


@settings(deadline=None)
@given(
    states=st.lists(pod_states, min_size=0, max_size=5),
    replicas=st.integers(min_value=0, max_value=5),
    term=st.integers(min_value=0, max_value=50),
    primary_ordinal=st.integers(min_value=-1, max_value=5),
)
def test_one_primary_and_terms_never_go_back(
    states: list[dict[str, object]], replicas: int, term: int, primary_ordinal: int
) -> None:
    pods = [pod(i, **s) for i, s in enumerate(states)]  # type: ignore[arg-type]
    primary = f"demo-{primary_ordinal}" if primary_ordinal >= 0 else ""
    plan = decide(observed(pods, spec=raw_spec(replicas=replicas), status={"primary": primary, "term": term}))
    status = plan.status
    # The term never goes below a pod's (factories label every pod with term 1): a status term of 0 is one
    # wiped by hand, and its election exceeds the pods' terms.
    floor = max([term, *(int(p["metadata"]["annotations"][names.ANNOTATION_TERM]) for p in pods)])
    assert status["term"] >= floor
    assert status["term"] <= floor + 1  # one decision, at most one promotion
    if status["primary"] != primary:
        assert status["term"] == floor + 1 or status["primary"] == ""
    serving_primaries = [p for p in status["pods"] if p["role"] == names.ROLE_PRIMARY and p["serving"]]
    assert len(serving_primaries) <= 1
    labelled_primaries = [p for p in plan.patches if p.labels[names.LABEL_ROLE] == names.ROLE_PRIMARY]
    assert all(p.name == status["primary"] for p in labelled_primaries)
    if status["primary"]:
        chosen = next(p for p in status["pods"] if p["name"] == status["primary"])
        # A primary that failed only its readiness may still hold the data: when nobody can take over it
        # stays primary, out of the Services. Nothing else that failed is ever primary.
        held_back = status["primary"] == primary and chosen["reason"].startswith("pod not Ready for over")
        assert chosen["health"] in ("Healthy", "Starting", "Degraded") or (
            held_back and not chosen["serving"]
        )


@settings(deadline=None)
@given(states=st.lists(pod_states, min_size=1, max_size=5))
def test_decide_is_idempotent_on_its_own_output(states: list[dict[str, object]]) -> None:
    pods = [pod(i, **s) for i, s in enumerate(states)]  # type: ignore[arg-type]
    first = decide(observed(pods, status={"primary": "demo-0", "term": 1}))
    second = decide(observed(pods, status=first.status))
    assert second.status["primary"] == first.status["primary"]
    assert second.status["term"] == first.status["term"]
