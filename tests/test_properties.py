"""decide() over random observed states (pods, nodes, workload annotations, previous status, clocks): it never
raises, and the safety properties hold whatever it sees."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftso import names
from ftso.health import node_loss_confirmed_after
from ftso.model import NodeView, format_time
from ftso.plan import Plan
from ftso.reconcile import Observed, decide, view_behind

from .factories import NOW, node, observed, pod, raw_spec

LOST_AFTER = timedelta(seconds=node_loss_confirmed_after(20))
ANNOTATION_VALUES = st.sampled_from(["0", "1", "-3", "2.5", "nan", "inf", "-inf", "ten", "", "1e400"])


@st.composite
def pod_bodies(draw: st.DrawFn, ordinal: int, max_term: int) -> dict[str, Any]:
    body = pod(
        ordinal,
        node_name=f"node-{draw(st.integers(0, 3))}",  # node-3: never seen, or seen deleted
        phase=draw(st.sampled_from(["Running", "Pending", "Failed", "Succeeded"])),
        ready=draw(st.booleans()),
        role=draw(st.sampled_from([names.ROLE_PRIMARY, names.ROLE_REPLICA, names.ROLE_FENCED])),
        serving=draw(st.booleans()),
        term=draw(st.integers(0, max_term)),
        deleting=draw(st.booleans()),
        terminated=draw(st.booleans()),
        ready_changed=NOW - timedelta(seconds=draw(st.integers(0, 10**6))),
        template_hash=draw(st.sampled_from([None, "old"])),
    )
    for annotation in (names.ANNOTATION_FAILOVER_PRIORITY, names.ANNOTATION_REPLICATION_LAG):
        if draw(st.booleans()):
            body["metadata"]["annotations"][annotation] = draw(ANNOTATION_VALUES)
    return body


@st.composite
def states(draw: st.DrawFn) -> tuple[Observed, int]:
    term = draw(st.integers(0, 6))
    # Mostly a view whose pods carry no newer term than its status; sometimes one that is behind.
    max_pod_term = term + draw(st.sampled_from([0, 0, 0, 1]))
    ordinals = draw(st.sets(st.integers(0, 6), max_size=6))
    pods = [draw(pod_bodies(o, max_pod_term)) for o in sorted(ordinals)]
    nodes = [node(f"node-{i}", ready=draw(st.booleans()), zone=f"zone-{i}") for i in range(3)]
    status = {
        "primary": draw(st.sampled_from(["", "demo-0", "demo-1", "demo-2", "demo-9"])),
        "term": term,
        "failovers": [
            {
                "term": term,
                "kind": "Failover",
                "reason": "Failover",
                "from": "demo-3",
                "to": "demo-0",
                "detectedAt": format_time(NOW - timedelta(seconds=draw(st.integers(0, 10**5)))),
                "decidedAt": format_time(NOW - timedelta(seconds=draw(st.integers(0, 10**5)))),
            }
        ]
        if draw(st.booleans())
        else [],
    }
    spec = raw_spec(
        replicas=draw(st.integers(0, 5)),
        mode=draw(st.sampled_from([names.MODE_PRIMARY_REPLICA, names.MODE_ACTIVE_ACTIVE])),
        paused=draw(st.booleans()),
        failover={"delaySeconds": draw(st.integers(0, 3600)), "maxPerHour": draw(st.integers(1, 5))},
    )
    if draw(st.integers(0, 9)) == 0:  # the status wiped by hand: the pods keep their terms
        status, term = {}, 0
    annotations = {names.ANNOTATION_SWITCHOVER: draw(st.sampled_from(["", "demo-1@a", "@b", "nobody@c"]))}
    now = NOW + timedelta(seconds=draw(st.integers(0, 10**7)))
    base = observed(pods, spec=spec, status=status, nodes=nodes, annotations=annotations, now=now)
    deleted_ago = draw(st.one_of(st.none(), st.integers(0, 60)))
    if deleted_ago is not None:
        gone = NodeView("node-3", ready=False, deleted_at=now - timedelta(seconds=deleted_ago))
        base = dataclasses.replace(base, nodes={**base.nodes, "node-3": gone})
    # A newer pod term waited on long enough: a term a workload wrote, to be repaired.
    base = dataclasses.replace(base, behind_too_long=draw(st.booleans()))
    return base, term


def _final_roles(state: Observed, plan: Plan) -> dict[str, str]:
    roles = {p.name: p.role for p in state.pods}
    for patch in plan.patches:
        roles[patch.name] = patch.labels[names.LABEL_ROLE]
    return roles


@settings(suppress_health_check=[HealthCheck.too_slow])  # examples: the profile (tests/conftest.py)
@given(states())
def test_decide_keeps_the_safety_properties(drawn: tuple[Observed, int]) -> None:
    state, term = drawn
    plan = decide(state)
    if view_behind(state) and not state.behind_too_long:
        assert not plan.acts and not plan.write_status and not plan.hooks, "a view behind acts on nothing"
        return
    assert plan.status["term"] >= term, "the term never decreases"
    pod_terms = {p.name: int(p.annotations.get(names.ANNOTATION_TERM) or 0) for p in state.pods}
    for patch in plan.patches:  # even after a status wiped by hand (term 0)
        assert int(patch.annotations[names.ANNOTATION_TERM]) >= pod_terms[patch.name], (
            "a pod's term never goes back"
        )
    if state.fts.spec.get("paused") or plan.status["phase"] == names.Phase.INVALID:
        assert not plan.acts and not plan.hooks, "paused or invalid: nothing changes"
        return
    gone = state.nodes.get("node-3")
    confirmed = gone is not None and gone.deleted_at is not None and state.now - gone.deleted_at > LOST_AFTER
    on_node_3 = {p.name for p in state.pods if p.node_name == "node-3"}
    assert confirmed or not [d for d in plan.deletes if d.force and d.name in on_node_3], (
        "no pod lost for a node never seen or not confirmed deleted"
    )
    primaries = [name for name, role in _final_roles(state, plan).items() if role == names.ROLE_PRIMARY]
    assert len(primaries) <= 1, f"at most one primary label: {primaries}"
    if primaries:
        assert primaries == [plan.status["primary"]], "the label follows the status"
    promoted = [i for i, p in enumerate(plan.patches) if p.labels[names.LABEL_ROLE] == names.ROLE_PRIMARY]
    current = {p.name: p.role for p in state.pods}
    demoted = [
        i
        for i, p in enumerate(plan.patches)
        if current.get(p.name) == names.ROLE_PRIMARY and p.labels[names.LABEL_ROLE] != names.ROLE_PRIMARY
    ]
    assert all(d < min(promoted, default=len(plan.patches)) for d in demoted), "fences before promotions"
    if plan.acts:
        assert plan.status["term"] >= max(pod_terms.values(), default=0), "no live pod's term above status"
    if plan.status["term"] > max([term, *pod_terms.values()]):
        assert plan.status["primary"], "a new term has a primary"
